"""Delivery of the outbox (docs/architecture.md, "Notifications"): email over SMTP, SMS over
Twilio's REST API and signed webhooks to the merchant, driven by
:class:`refundflow.notify.dispatcher.NotificationDispatcher`."""
