"""The cluster's housekeeping Schedules (outbox sweep, personal-data retention): created once
for the cluster by ``refundflow setup``, the worker or the dev stack, and then left to ops."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
)


async def ensure_interval_schedule(
    client: Client,
    *,
    schedule_id: str,
    run: Callable[[Any, Any], Awaitable[Any]],
    arg: Any,
    task_queue: str,
    every: timedelta,
) -> bool:
    """Create the schedule starting ``run(arg)`` every ``every`` unless it exists; ``True`` when
    created. An existing one is left as ops may have set it (paused, another interval)."""
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            run, arg, id=f"{schedule_id}-run", task_queue=task_queue
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        # A run still going when the next is due makes the next one pointless.
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )
    try:
        await client.create_schedule(schedule_id, schedule)
    except ScheduleAlreadyRunningError:
        return False
    return True
