"""RefundWorkflow's stage logic with every activity mocked: no database, no provider, a
few milliseconds of work per test on the time-skipping server. The real activities are tested
by the path tests beside this file; here only the orchestration is.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from refundflow.activities.contracts import (
    ApprovalInput,
    ArrivalAhead,
    ArrivalInput,
    DeliverInput,
    DeliverResult,
    PayoutCall,
    RecheckInput,
    RecheckResult,
    RecordPayoutInput,
    RecordStepsInput,
    RefundContext,
    RefundWorkflowInput,
    ReleaseInput,
    RequoteInput,
    RequoteResult,
    ReserveInput,
    ReserveResult,
    ReviewAndReserveInput,
    ReviewAndReserveResult,
    ReviewInput,
    ReviewResult,
    TransitionInput,
)
from refundflow.domain.calculation import compute_quote
from refundflow.domain.calendar import ArrivalPlan
from refundflow.domain.policy import DEFAULT_POLICY
from refundflow.domain.review import ReviewDecision, ReviewOutcome, pays_at_once
from refundflow.domain.states import (
    ApprovalDecision,
    CancelRequest,
    PayoutEvent,
    PayoutStatus,
    RefundState,
    RefundStatus,
    ReturnInspection,
)
from refundflow.gateways.base import PayoutResult
from refundflow.worker_sandbox import workflow_runner
from refundflow.workflows.refund import RefundWorkflow
from tests.conftest import time_skipping_server
from tests.domain import factories

Handle = WorkflowHandle[RefundWorkflow, RefundState]


@dataclass
class Mocks:
    """Stand-ins for every activity, answering what a test sets and noting what it was told."""

    client: Client
    decision: dict[str, Any] = field(default_factory=dict)
    send_status: PayoutStatus = PayoutStatus.ACCEPTED
    pays_at_once: bool = False
    """Arrival plans with no window: a settled refund completes at once."""
    on_record: dict[str, PayoutEvent] = field(default_factory=dict)
    """Kind of timeline entry -> a provider event signalled while that entry is recorded."""
    recorded: list[str] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)
    queried: list[str] = field(default_factory=list)
    reserved: list[int | None] = field(default_factory=list)
    second_check_detail: str | None = None
    """The second check made with the review: None when it matches, else why it does not."""
    rechecked: int = 0
    """Second checks made in a local activity of their own."""
    arrival_ahead_days: int | None = None
    """The review works out the first payout's arrival for this many days before the day it
    reviews (0: that day); None: it works out none."""
    planned_arrivals: int = 0
    """Arrivals planned in a local activity of their own."""

    def activities(self) -> list[Any]:
        order = factories.order(merchant_id="m-1")
        request = factories.request()
        context = RefundContext(
            order=order, policy=DEFAULT_POLICY, prior_refunds=[], recent_customer_refunds=0
        )
        quote = compute_quote(order=order, request=request, policy=DEFAULT_POLICY)

        @activity.defn(name="review_refund")
        async def review_refund(inp: ReviewInput) -> ReviewResult:
            decision = ReviewDecision.model_validate(
                {
                    "outcome": ReviewOutcome.AUTO_APPROVE,
                    "approvers_required": 0,
                    "reasons": [],
                    "messages": {},
                    "quote": quote,
                    **self.decision,
                }
            )
            return ReviewResult(context=context, decision=decision)

        @activity.defn(name="review_and_reserve")
        async def review_and_reserve(inp: ReviewAndReserveInput) -> ReviewAndReserveResult:
            await record_steps(RecordStepsInput(refund_id=inp.review.refund_id, steps=inp.steps))
            reviewed = await review_refund(inp.review)
            decision = reviewed.decision
            accepted = decision.outcome is not ReviewOutcome.REJECT and decision.quote is not None
            self.reserved.append(decision.quote.total if accepted and decision.quote else None)
            check = None
            if decision.quote is not None and pays_at_once(decision):
                fingerprint = decision.quote.fingerprint()
                failed = self.second_check_detail
                check = RecheckResult(
                    matches=failed is None,
                    fingerprint="0" * len(fingerprint) if failed else fingerprint,
                    total=decision.quote.total,
                    detail=failed or "",
                )
            ahead = None
            if check is not None and decision.quote and self.arrival_ahead_days is not None:
                start = inp.review.as_of.date() - timedelta(days=self.arrival_ahead_days)
                routes = [p.route for p in decision.quote.payouts]
                far = ArrivalPlan(
                    earliest=start, latest=start + timedelta(days=9), window_ends_at=None
                )
                ahead = ArrivalAhead(start=start, routes=routes[:1], open_routes=routes, plan=far)
            return ReviewAndReserveResult(
                review=reviewed,
                reserved=ReserveResult(ok=True),
                second_check=check,
                first_arrival=ahead,
            )

        @activity.defn(name="record_steps")
        async def record_steps(inp: RecordStepsInput) -> None:
            for step in inp.steps:
                if step.transition is not None:
                    await record_transition(step.transition)
                elif step.release is not None:
                    await release_reservation(step.release)

        @activity.defn(name="record_and_deliver")
        async def record_and_deliver(inp: RecordStepsInput) -> DeliverResult:
            await record_steps(inp)
            return DeliverResult(sent=0, failed=0, pending=0)

        @activity.defn(name="record_transition")
        async def record_transition(inp: TransitionInput) -> None:
            self.recorded.append(inp.kind)
            event = self.on_record.pop(inp.kind, None)
            if event is not None:
                # The provider's word arrives while the run is busy with this step.
                handle = self.client.get_workflow_handle(f"refund-{inp.refund_id}")
                await handle.signal(RefundWorkflow.payout_event, event)

        @activity.defn(name="reserve_refund")
        async def reserve_refund(inp: ReserveInput) -> ReserveResult:
            self.reserved.append(inp.quote.total if inp.quote else None)
            return ReserveResult(ok=True)

        @activity.defn(name="release_reservation")
        async def release_reservation(inp: ReleaseInput) -> None:
            self.recorded.append("(released)")

        @activity.defn(name="record_approval")
        async def record_approval(inp: ApprovalInput) -> None:
            pass

        @activity.defn(name="recheck_quote")
        async def recheck_quote(inp: RecheckInput) -> RecheckResult:
            self.rechecked += 1
            return RecheckResult(matches=True, fingerprint=inp.expected_fingerprint, total=0)

        @activity.defn(name="register_payout")
        async def register_payout(inp: RecordPayoutInput) -> None:
            pass

        @activity.defn(name="record_payout")
        async def record_payout(inp: RecordPayoutInput) -> None:
            pass

        @activity.defn(name="send_payout")
        async def send_payout(call: PayoutCall) -> PayoutResult:
            self.sent.append(call.record.key)
            return PayoutResult(status=self.send_status, provider_ref="ref-1")

        @activity.defn(name="query_payout")
        async def query_payout(call: PayoutCall) -> PayoutResult:
            self.queried.append(call.record.key)
            return PayoutResult(status=PayoutStatus.ACCEPTED)

        @activity.defn(name="deliver_notifications")
        async def deliver_notifications(inp: DeliverInput) -> DeliverResult:
            return DeliverResult(sent=0, failed=0, pending=0)

        @activity.defn(name="requote")
        async def requote(inp: RequoteInput) -> RequoteResult:
            fresh = compute_quote(
                order=order, request=request, policy=DEFAULT_POLICY, deductions=inp.deductions
            )
            return RequoteResult(quote=fresh)

        @activity.defn(name="plan_arrival")
        async def plan_arrival(inp: ArrivalInput) -> ArrivalPlan:
            self.planned_arrivals += 1
            latest = inp.start + timedelta(days=3)
            ends = datetime.combine(latest + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
            return ArrivalPlan(
                earliest=inp.start,
                latest=latest,
                window_ends_at=None if self.pays_at_once else ends,
            )

        return [
            review_refund,
            review_and_reserve,
            record_steps,
            record_and_deliver,
            record_transition,
            reserve_refund,
            release_reservation,
            record_approval,
            recheck_quote,
            register_payout,
            record_payout,
            send_payout,
            query_payout,
            deliver_notifications,
            requote,
            plan_arrival,
        ]


@dataclass
class Harness:
    env: WorkflowEnvironment
    mocks: Mocks
    task_queue: str

    started: list[Handle] = field(default_factory=list)

    async def start(self) -> Handle:
        refund_id = f"mock-{uuid.uuid4().hex[:8]}"
        inp = RefundWorkflowInput(
            refund_id=refund_id, merchant_id="m-1", order_id="o-1", request=factories.request()
        )
        handle = await self.env.client.start_workflow(
            RefundWorkflow.run, inp, id=f"refund-{refund_id}", task_queue=self.task_queue
        )
        self.started.append(handle)
        return handle

    async def until(self, handle: Handle, status: RefundStatus) -> RefundState:
        return await self.until_state(handle, lambda state: state.status is status)

    async def until_state(
        self, handle: Handle, check: Callable[[RefundState], bool], limit: int = 200
    ) -> RefundState:
        for _ in range(limit):
            state = await handle.query(RefundWorkflow.view)
            if check(state):
                return state
            await self.env.sleep(timedelta(minutes=1))
        raise AssertionError(f"condition not reached; status {state.status}")


@pytest.fixture(scope="module")
async def mocked_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server of this module's own. Runs these tests leave waiting (then
    terminated) have been seen to hold the shared server's clock for the tests after them."""
    async with time_skipping_server() as environment:
        yield environment


@pytest.fixture
async def harness(mocked_env: WorkflowEnvironment) -> AsyncIterator[Harness]:
    env = mocked_env
    mocks = Mocks(client=env.client)
    queue = f"mocked-{uuid.uuid4().hex[:8]}"
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[RefundWorkflow],
        activities=mocks.activities(),
        workflow_runner=workflow_runner(),
    ):
        harness = Harness(env=env, mocks=mocks, task_queue=queue)
        yield harness
        # A run left open would hold the shared server's clock once its worker is gone.
        for handle in harness.started:
            if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
                await handle.terminate("test finished")


async def test_a_rejection_at_review_records_the_refund_and_nothing_else(harness: Harness) -> None:
    harness.mocks.decision = {"outcome": ReviewOutcome.REJECT, "reasons": ["OUTSIDE_WINDOW"]}
    handle = await harness.start()
    result = await handle.result()
    assert result.status is RefundStatus.REJECTED
    assert harness.mocks.reserved == [None]  # the row, no reservation
    assert harness.mocks.recorded == ["review_started", "rejected"]
    assert harness.mocks.sent == []


async def test_the_review_makes_the_second_check_when_the_payout_follows_at_once(
    harness: Harness,
) -> None:
    """Auto-approved with no stage before the payout: the review's local activity made the
    second check, so the payout stage pays without one of its own."""
    handle = await harness.start()
    await harness.until(handle, RefundStatus.AWAITING_FUNDS)
    assert harness.mocks.rechecked == 0 and len(harness.mocks.sent) == 1


@pytest.mark.parametrize(
    ("days_before", "asked_again", "expected_after"),
    [(0, 0, 9), (1, 1, 3)],
    ids=["the-same-day", "another-day"],
)
async def test_an_arrival_worked_out_with_the_review_answers_only_the_same_question(
    harness: Harness, days_before: int, asked_again: int, expected_after: int
) -> None:
    """The review's plan says 9 days, plan_arrival's (the mock's) 3: the run takes the
    review's only for the day it was worked out for."""
    harness.mocks.arrival_ahead_days = days_before
    handle = await harness.start()
    state = await harness.until(handle, RefundStatus.AWAITING_FUNDS)
    assert harness.mocks.planned_arrivals == asked_again
    sent = next(t for t in state.timeline if t.kind == "payout_sent")
    assert state.expected_by == (sent.at.date() + timedelta(days=expected_after)).isoformat()


async def test_a_second_check_with_the_review_that_fails_pays_nothing(harness: Harness) -> None:
    harness.mocks.second_check_detail = "the order changed"
    handle = await harness.start()
    state = await harness.until(handle, RefundStatus.NEEDS_ATTENTION)
    assert harness.mocks.sent == [] and harness.mocks.rechecked == 0
    assert state.timeline[-1].message.endswith("second check failed: the order changed")


async def test_a_payout_after_a_wait_makes_its_own_second_check(harness: Harness) -> None:
    """Approval comes later: a check made with the review would be stale by then."""
    harness.mocks.decision = {"outcome": ReviewOutcome.NEEDS_APPROVAL, "approvers_required": 1}
    handle = await harness.start()
    state = await harness.until(handle, RefundStatus.AWAITING_APPROVAL)
    assert state.quote is not None
    await handle.execute_update(
        RefundWorkflow.decide,
        ApprovalDecision(
            approver_id="a-1", decision="APPROVE", quote_fingerprint=state.quote.fingerprint()
        ),
    )
    await harness.until(handle, RefundStatus.AWAITING_FUNDS)
    assert harness.mocks.rechecked == 1 and len(harness.mocks.sent) == 1


async def test_a_deduction_sends_the_refund_back_to_approval(harness: Harness) -> None:
    harness.mocks.decision = {"return_required": True}
    handle = await harness.start()
    before = await harness.until(handle, RefundStatus.AWAITING_RETURN)
    answer = await handle.execute_update(
        RefundWorkflow.return_inspection,
        ReturnInspection(inspector_id="wh", condition="DAMAGED", deduction=1000),
    )
    assert answer.status is RefundStatus.AWAITING_APPROVAL
    state = await handle.query(RefundWorkflow.view)
    assert state.approvers_required == 1 and state.quote is not None and before.quote is not None
    assert state.quote.total == before.quote.total - 1000
    assert harness.mocks.reserved[-1] == state.quote.total
    assert harness.mocks.recorded[-3:] == ["return_inspected", "requoted", "approval_requested"]
    answer = await handle.execute_update(
        RefundWorkflow.cancel_refund, CancelRequest(requested_by="desk-1")
    )
    assert answer.status is RefundStatus.CANCELLED
    assert "(released)" in harness.mocks.recorded and harness.mocks.sent == []


async def test_a_provider_event_that_arrives_during_another_step_is_not_lost(
    harness: Harness,
) -> None:
    """The settlement arrives while the run records that it waits for funds. It must be applied
    right away, not when the next poll (30 minutes on) or timer happens to wake the run."""
    mocks = harness.mocks
    mocks.pays_at_once = True
    handle = await harness.start()
    # The key is derived from the refund id, known once the run has started.
    key = f"{handle.id.removeprefix('refund-')}:1:1"
    mocks.on_record["awaiting_funds"] = PayoutEvent(payout_key=key, status=PayoutStatus.SETTLED)
    # No queries while the event is in flight: the result says when what happened. And no
    # time skipping: the event alone must wake the run (the next timer is 30 minutes away).
    with harness.env.auto_time_skipping_disabled():
        state = await asyncio.wait_for(handle.result(), timeout=30)
    assert state.status is RefundStatus.COMPLETED
    settled = next(t for t in state.timeline if t.kind == "payout_settled")
    waiting = next(t for t in state.timeline if t.kind == "awaiting_funds")
    assert settled.at - waiting.at < timedelta(minutes=1)
    assert mocks.queried == []  # never needed to ask the provider
