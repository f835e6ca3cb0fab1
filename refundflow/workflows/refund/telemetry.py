"""The runs' business metrics, through the SDK's metric meter: exported with the worker's SDK
metrics (``REFUNDFLOW_METRICS_PORT``) and never counted twice, since the SDK records nothing
while a run replays."""

from __future__ import annotations

from datetime import datetime

from temporalio import workflow


def status_changed(status: str, merchant: str) -> None:
    workflow.metric_meter().create_counter(
        "refundflow_refund_status_changes", "Refunds entering each status"
    ).add(1, {"status": status, "merchant": merchant})


def payout_answered(route: str, status: str) -> None:
    workflow.metric_meter().create_counter(
        "refundflow_payout_outcomes", "Providers' answers to payouts sent, by route and outcome"
    ).add(1, {"route": route, "status": status})


def money_arrived(requested_at: datetime, route: str) -> None:
    """Time from the request to the refund's completion, by the route of its first tranche."""
    elapsed = workflow.now() - requested_at
    workflow.metric_meter().create_histogram_timedelta(
        "refundflow_time_to_money", "From the refund request to the money confirmed", unit="ms"
    ).record(elapsed, {"route": route})
