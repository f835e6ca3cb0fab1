"""A payout call cut off by a worker's crash is taken over by another worker once the dead one
misses its heartbeat, not when the call's two-minute timeout runs out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType, TimeoutType
from temporalio.api.history.v1 import HistoryEvent

from refundflow.workflows.client import workflow_id
from tests.chaos.refunds import Planned, payouts, place
from tests.chaos.stack import chaos_stack


async def test_a_payout_cut_off_by_a_dead_worker_is_taken_over_after_a_missed_heartbeat(
    tmp_path: Path,
) -> None:
    async with chaos_stack(tmp_path, f"sqlite:///{tmp_path / 'refundflow.db'}") as stack:
        plan = Planned(f"hb-{int(time.time())}", "wechat", crash="after_send")
        gates = stack.ledgers[plan.provider].gates
        number = stack.refund_no(plan.provider, plan.key)
        await place(stack, plan)
        await _until(lambda: gates.arrived(number), "the provider never got the payout")
        # The provider has stored the refund; its answer waits. The worker dies waiting.
        stack.kill_worker()
        gates.release(number)
        stack.start_worker()
        await _until(
            lambda: any(row.status != "pending" for row in payouts(stack, plan.refund_id)),
            "the payout was never recorded",
        )
        client = await stack.client()
        history = await client.get_workflow_handle(workflow_id(plan.refund_id)).fetch_history()
        [started] = _send_payout_started(history.events)
        # The second attempt finished it. The first one's failure is the missed heartbeat: the
        # dead worker's call did not hold the payout for its whole start-to-close timeout.
        assert started.attempt == 2
        timeout = started.last_failure.timeout_failure_info.timeout_type
        assert TimeoutType.Name(timeout) == "TIMEOUT_TYPE_HEARTBEAT"
        # It asked the provider first, found the refund, and sent nothing twice.
        assert len(stack.ledgers[plan.provider].refunds(number)) == 1


def _send_payout_started(events: Iterable[HistoryEvent]) -> list[Any]:
    """The started event of each ``send_payout`` activity: written once, by the attempt that
    finished it, with the failure of the attempt before."""
    sends = {
        e.event_id
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == "send_payout"
    }
    return [
        e.activity_task_started_event_attributes
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
        and e.activity_task_started_event_attributes.scheduled_event_id in sends
    ]


async def _until(check: Callable[[], bool], failure: str, seconds: float = 240) -> None:
    """Wait for a state (not a time): ``seconds`` only bounds a hang."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, failure
        await asyncio.sleep(0.1)
