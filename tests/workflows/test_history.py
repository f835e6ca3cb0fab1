"""Histories: replay of recorded runs (determinism), continue-as-new, history size, and the
search attributes on a real dev server."""

from __future__ import annotations

import asyncio
import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from refundflow.activities import refund as activities_refund
from refundflow.domain import calendar
from refundflow.domain.quote import Deduction
from refundflow.domain.review import ReviewDecision, ReviewOutcome
from refundflow.domain.states import ReceiptReport, RefundStatus
from refundflow.worker_sandbox import workflow_runner
from refundflow.workflows import search_attributes as sa
from refundflow.workflows.refund import RefundWorkflow
from tests.conftest import dev_server
from tests.payload_keys import CONVERTER
from tests.workflows.conftest import MERCHANT, Stack, local_activities, open_stack, payment
from tests.workflows.test_refund_paths import decide, wait_status

HISTORIES = Path(__file__).parent / "histories"


async def test_recorded_histories_replay_deterministically() -> None:
    """Histories recorded from the path tests (``REFUNDFLOW_RECORD_HISTORIES=1 make test``)
    must replay against today's workflow code: a non-deterministic change fails here."""
    # Also the runs recorded before notices were delivered from the workflow (a patch).
    files = sorted(HISTORIES.glob("**/*.json"))
    assert len(files) >= 5, "record histories with REFUNDFLOW_RECORD_HISTORIES=1"
    replayer = Replayer(
        workflows=[RefundWorkflow],
        data_converter=CONVERTER,
        workflow_runner=workflow_runner(),
    )
    for path in files:
        history = WorkflowHistory.from_json(path.stem, json.loads(path.read_text()))
        await replayer.replay_workflow(history)


async def test_a_changed_rule_changes_new_runs_and_replays_old_ones(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review, requotes and the holiday calendar are decided in activities and recorded: after a
    deploy that changes them, a run recorded before still replays, and a new run follows the new
    rules."""
    order = await stack.order("o-rules")
    before = await stack.finish(await stack.start("r-rules-1", order))
    assert before.status is RefundStatus.COMPLETED and before.quote is not None
    history = await stack.client.get_workflow_handle("refund-r-rules-1").fetch_history()

    # The deploy: review now takes 1.00 off and wants an approver; and the next ten days are
    # declared public holidays (a new year of holiday data).
    original_review = activities_refund.review

    def stricter(**kwargs: Any) -> ReviewDecision:
        decision = original_review(**kwargs, deductions=[Deduction(kind="manual", amount=100)])
        return decision.model_copy(
            update={"outcome": ReviewOutcome.NEEDS_APPROVAL, "approvers_required": 1}
        )

    first_day = (await stack.now()).date()
    original_business_day = calendar.is_business_day

    def with_new_holidays(day: date, country: str) -> bool:
        new_holiday = first_day < day <= first_day + timedelta(days=10)
        return not new_holiday and original_business_day(day, country)

    monkeypatch.setattr(activities_refund, "review", stricter)
    monkeypatch.setattr(calendar, "is_business_day", with_new_holidays)

    replayer = Replayer(
        workflows=[RefundWorkflow],
        data_converter=CONVERTER,
        workflow_runner=workflow_runner(),
    )
    await replayer.replay_workflow(history)  # raises on any non-determinism

    handle = await stack.start("r-rules-2", order, items=[{"line_id": "l2", "quantity": 1}])
    state = await wait_status(stack, handle, RefundStatus.AWAITING_APPROVAL)
    assert state.quote is not None and state.quote.total == 2000 - 100
    await decide(handle, "carol")
    state = await wait_status(stack, handle, RefundStatus.AWAITING_FUNDS)
    assert state.expected_by is not None and before.expected_by is not None
    assert date.fromisoformat(state.expected_by) > first_day + timedelta(days=10)


def _workflow_tasks(history: WorkflowHistory) -> int:
    return sum(e.HasField("workflow_task_completed_event_attributes") for e in history.events)


async def test_happy_path_history_is_small(stack: Stack) -> None:
    order = await stack.order()
    handle = await stack.start("r-count", order)
    await stack.finish(handle)
    history = await handle.fetch_history()
    count, tasks = len(history.events), _workflow_tasks(history)
    print(f"happy path: {count} history events, {tasks} workflow tasks")
    # 64 events and 8 workflow tasks before the writes were batched (effects.BATCHED), 39 and 5
    # with it: per task one local activity writes (and delivers the notices among the writes),
    # one upsert sets the search attributes. This payout settles at the first poll: 5 tasks,
    # two timers and two activities are 27 events of their own. The bound catches an
    # accidental per-step regression.
    assert count <= 40, count
    assert tasks <= 5, tasks
    kinds = [e.activity_task_scheduled_event_attributes.activity_type.name for e in history.events]
    assert kinds.count("deliver_notifications") == 0  # delivered by the writes' local activity


async def test_a_refund_paid_at_once_has_the_shortest_history(stack: Stack) -> None:
    """Auto-approved, paid from the store balance (settled as it is sent): 18 events."""
    order = await stack.order(payments=[payment("p1", "balance", 10000, await stack.now())])
    handle = await stack.start("r-count-once", order)
    assert (await stack.finish(handle)).status is RefundStatus.COMPLETED
    history = await handle.fetch_history()
    count, tasks = len(history.events), _workflow_tasks(history)
    print(f"paid at once: {count} history events, {tasks} workflow tasks")
    assert count <= 25, count
    assert tasks <= 3, tasks
    # The payout's second check and its expected arrival were worked out by the review's
    # local activity: what is left are the review and the two batches of writes.
    local = local_activities(history)
    assert local == ["review_and_reserve", "record_and_deliver", "record_and_deliver"], local


async def test_continue_as_new_keeps_the_refund_going(stack: Stack) -> None:
    stack.sandbox.default_settlement("never")
    order = await stack.order()
    handle = await stack.start("r-can", order, history_limit=40)
    await wait_status(stack, handle, RefundStatus.AWAITING_FUNDS)
    # Days of follow-up polls push the history past the limit: the run continues as new.
    await stack.env.sleep(timedelta(days=3))
    latest = stack.client.get_workflow_handle_for(RefundWorkflow.run, handle.id)
    assert (await latest.describe()).run_id != handle.result_run_id
    stack.sandbox.settle("r-can:1:1")
    await latest.execute_update(RefundWorkflow.receipt, ReceiptReport(received=True))
    result = await stack.finish(latest)
    assert result.status is RefundStatus.COMPLETED
    assert [t.kind for t in result.timeline][:2] == ["review_started", "accepted"]
    assert stack.refund("r-can").status == "COMPLETED"
    assert [p.payout_key for p in stack.payouts("r-can")] == ["r-can:1:1"]
    history = await latest.fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    assert started.continued_execution_run_id


async def test_dev_server_lists_refunds_by_status(tmp_path: Path) -> None:
    async with dev_server() as env, open_stack(env, tmp_path) as stack:
        order = await stack.order("o-dev")
        handle = await stack.start("r-dev", order)
        for _ in range(100):
            if (await handle.query(RefundWorkflow.view)).status is RefundStatus.AWAITING_FUNDS:
                break
            await asyncio.sleep(0.2)
        # The customer confirms at once; a real-time follow-up would take days.
        await handle.execute_update(RefundWorkflow.receipt, ReceiptReport(received=True))
        result = await asyncio.wait_for(handle.result(), timeout=60)
        assert result.status is RefundStatus.COMPLETED
        query = f"RefundStatus = 'COMPLETED' AND RefundMerchant = '{MERCHANT}'"
        for _ in range(50):
            found = [wf.id async for wf in env.client.list_workflows(query)]
            if found:
                break
            await asyncio.sleep(0.2)
        assert found == ["refund-r-dev"]
        described = await handle.describe()
        assert described.typed_search_attributes.get(sa.REFUND_ORDER_ID) == "o-dev"
        summary = await described.static_summary()
        assert summary is not None and "o-dev" in summary
