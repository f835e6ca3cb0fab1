"""Development-only stand-ins: the provider simulators, the sandbox gateway and the SMS simulator;
and what the tests and the bench (bench/) share to run the stack as processes (``processes``,
``ports``).

Nothing in the product path imports this package. ``refundflow dev``, ``refundflow demo`` and the
tests use it; the worker loads the sandbox gateway only when ``REFUNDFLOW_SANDBOX=true`` says so
explicitly (see ``refundflow.gateways.registry``)."""
