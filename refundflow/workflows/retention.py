"""The retention rule for customer data, run by a Temporal Schedule once a day.

Like the outbox sweep (:mod:`refundflow.workflows.outbox`), a Schedule runs it once per cluster
however many workers there are, and ops can see, pause and trigger it in the Temporal UI
(Schedules: ``refundflow-pii-retention``). The period is the workers' setting
``REFUNDFLOW_PII_RETENTION_DAYS``; docs/privacy.md says what is erased and what stays.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.client import Client

from refundflow.workflows.schedules import ensure_interval_schedule

with workflow.unsafe.imports_passed_through():
    from refundflow.activities.retention import (
        RetentionActivities,
        RetentionInput,
        RetentionResult,
    )

SCHEDULE_ID = "refundflow-pii-retention"
RETENTION_EVERY = timedelta(days=1)


@workflow.defn(name="PersonalDataRetentionWorkflow")
class PersonalDataRetentionWorkflow:
    @workflow.run
    async def run(self, inp: RetentionInput) -> RetentionResult:
        return await workflow.execute_activity_method(
            RetentionActivities.erase_expired_personal_data,
            inp,
            start_to_close_timeout=timedelta(minutes=30),
            heartbeat_timeout=timedelta(minutes=2),
            summary="erase the customer data of refunds past retention",
        )


async def ensure_retention_schedule(
    client: Client, *, task_queue: str, every: timedelta = RETENTION_EVERY
) -> bool:
    """Create the retention schedule unless it exists; ``True`` when created."""
    return await ensure_interval_schedule(
        client,
        schedule_id=SCHEDULE_ID,
        run=PersonalDataRetentionWorkflow.run,
        arg=RetentionInput(),
        task_queue=task_queue,
        every=every,
    )
