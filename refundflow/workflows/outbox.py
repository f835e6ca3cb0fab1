"""The outbox sweep: one run every few minutes, started by a Temporal Schedule.

Each refund run delivers its own notices; the sweep delivers what a finished run left behind.
As a Schedule it runs once per cluster however many workers there are, and ops can see,
pause and trigger it in the Temporal UI (Schedules: ``refundflow-outbox-sweep``).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.client import Client

from refundflow.workflows.schedules import ensure_interval_schedule

with workflow.unsafe.imports_passed_through():
    from refundflow.activities.contracts import SweepInput, SweepResult
    from refundflow.activities.notify import NotifyActivities

SCHEDULE_ID = "refundflow-outbox-sweep"
SWEEP_EVERY = timedelta(minutes=5)


@workflow.defn(name="OutboxSweepWorkflow")
class OutboxSweepWorkflow:
    @workflow.run
    async def run(self, inp: SweepInput) -> SweepResult:
        return await workflow.execute_activity_method(
            NotifyActivities.sweep_outbox_batch,
            inp,
            start_to_close_timeout=timedelta(minutes=4),
            summary="deliver notices finished runs left behind",
        )


async def ensure_outbox_schedule(
    client: Client, *, task_queue: str, every: timedelta = SWEEP_EVERY
) -> bool:
    """Create the sweep schedule unless it exists; ``True`` when created."""
    return await ensure_interval_schedule(
        client,
        schedule_id=SCHEDULE_ID,
        run=OutboxSweepWorkflow.run,
        arg=SweepInput(),
        task_queue=task_queue,
        every=every,
    )
