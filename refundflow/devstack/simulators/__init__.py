"""Local stand-ins for the payment providers, speaking each provider's own protocol."""
