"""Deterministic orchestration: the RefundWorkflow and what it needs to be started and found."""
