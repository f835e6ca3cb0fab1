"""The effects layer: one refund run's state and everything a stage does to the world through it.

A stage never calls an activity for the database or for notices directly; it records
(:meth:`Run.record`), changes status (:meth:`Run.transition`), escalates or finishes here, so the
timeline, the audit rows, the outbox, the search attributes and the run's details in the Temporal
UI always move together.

Runs since the :data:`BATCHED` patch keep their writes (entries, payouts, releases, approvals)
and search attributes until the run is about to wait on the world (:meth:`Run.flush`): then one
local activity writes them in one transaction and delivers the notices among them (what fails
is left to the outbox sweep), and one upsert sets what changed. Nothing outside the run can
tell: the run waits on nothing before the flush, and an Update answers only once the run
waits. Runs recorded before keep a local activity per write, an upsert per change and a
delivery activity of their own.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey, SearchAttributeUpdate
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from refundflow.activities.contracts import (
        ArrivalAhead,
        DbStep,
        DeliverInput,
        DeliverResult,
        Notification,
        RecheckResult,
        RecordStepsInput,
        RefundContext,
        RefundWorkflowInput,
        ReleaseInput,
        TransitionInput,
    )
    from refundflow.activities.notify import NotifyActivities
    from refundflow.activities.refund import RefundActivities
    from refundflow.domain.money import format_minor
    from refundflow.domain.quote import Quote
    from refundflow.domain.stages import next_stage
    from refundflow.domain.states import (
        STAGE_STATUS,
        Inbox,
        RefundState,
        RefundStatus,
        Stage,
        TimelineEntry,
    )
    from refundflow.workflows import search_attributes as sa

from refundflow.workflows.refund import telemetry
from refundflow.workflows.refund.details import current_details

BATCHED = "batched-writes-upserts-and-local-delivery"
"""Patch: the writes of a workflow task in one local activity, its search attributes in one
upsert, its notices delivered by a local activity (the outbox sweep retries what fails)."""
# A database step retries until the database answers: an outage delays a refund, loses nothing.
DB_STEP = timedelta(seconds=30)
DELIVERY_ATTEMPTS = 8
_DELIVERY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=10),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=30),
    maximum_attempts=DELIVERY_ATTEMPTS,
)


class Run:
    """One refund run: its input, its state (carried across continue-as-new) and its effects."""

    def __init__(self, inp: RefundWorkflowInput) -> None:
        self.inp = inp
        self.state = inp.state or RefundState(
            refund_id=inp.refund_id, requested_by=inp.request.requested_by
        )
        self.loaded: RefundContext | None = inp.context
        self._delivery: workflow.ActivityHandle[DeliverResult] | None = None
        self._deliver_again = False
        self.waiting = False
        """The run waits on the world (a message, a deadline, a provider): see :meth:`park`."""
        self.waiting_for = ""
        self.closing = False
        """The run ends or continues as new: messages still in the inbox go with the state."""
        self._batched: bool | None = None
        self._steps: list[DbStep] = []
        self.second_check: RecheckResult | None = None
        """The payout's second check made with the review, for a payout stage that follows in
        the same workflow task; dropped once the run waits on anything (:meth:`flush`)."""
        self.first_arrival: ArrivalAhead | None = None
        """The first payout's expected arrival worked out with the review, for the first
        question the run asks if it is the same one (``money.plan_arrival``)."""

    @property
    def batched(self) -> bool:
        """Whether this run batches its effects (:data:`BATCHED`); asked once per run."""
        if self._batched is None:
            self._batched = workflow.patched(BATCHED)
        return self._batched

    def write(self, step: DbStep) -> None:
        """A database write for the next :meth:`flush` (batched runs only)."""
        self._steps.append(step)

    def take_steps(self) -> list[DbStep]:
        """The writes not flushed yet, for a local activity that makes them first."""
        steps, self._steps = self._steps, []
        return steps

    async def flush(self) -> None:
        """Before the run waits on the world (a message, a timer, a provider, its end): the
        writes since the last flush (and the notices among them delivered, in the same local
        activity), then the search attributes."""
        self.second_check = None
        if not self.batched:
            return
        steps = self.take_steps()
        if any(s.transition.notifications for s in steps if s.transition):
            await workflow.execute_local_activity_method(
                NotifyActivities.record_and_deliver,
                RecordStepsInput(refund_id=self.state.refund_id, steps=steps),
                start_to_close_timeout=DB_STEP,
                summary=f"{_kinds(steps)}; deliver notices",
            )
        elif steps:
            await workflow.execute_local_activity_method(
                RefundActivities.record_steps,
                RecordStepsInput(refund_id=self.state.refund_id, steps=steps),
                start_to_close_timeout=DB_STEP,
                summary=_kinds(steps),
            )
        self._upsert_search_attributes()

    @property
    def context(self) -> RefundContext:
        assert self.loaded is not None, "review loads the context before any stage runs"
        return self.loaded

    @property
    def quote(self) -> Quote:
        assert self.state.quote is not None, "a quote exists once review accepted the refund"
        return self.state.quote

    @property
    def inbox(self) -> Inbox:
        return self.state.inbox

    # ------------------------------------------------------------- stage plumbing
    def advance(self) -> None:
        """The current stage is done: on to the next one the refund needs."""
        if self.state.stage not in self.state.completed_stages:
            self.state.completed_stages.append(self.state.stage)
        self.state.stage = next_stage(self.state)

    async def enter(
        self, kind: str, message: str, notify: list[Notification] | None = None
    ) -> None:
        """Entering the current stage: its status, once (a continued run enters again)."""
        status = STAGE_STATUS[self.state.stage]
        if self.state.status is not status:
            await self.transition(status, kind, message, notify=notify)

    async def wait(self, done: Callable[[], bool], timeout: timedelta, summary: str) -> bool:
        """Wait for ``done`` or a cancel (stages before payout); False when time ran out."""
        return await self.park(lambda: done() or self.inbox.cancel is not None, timeout, summary)

    async def wait_for_news(self, until: datetime, summary: str, *, receipts: bool = False) -> None:
        """Sleep until ``until`` unless a provider event or an ops mark arrives first (and the
        customer's word on receipt, in follow-up)."""
        inbox = self.inbox
        await self.park(
            lambda: inbox.has_payout_news() or (receipts and bool(inbox.receipts)),
            until - workflow.now(),
            summary,
        )

    async def park(
        self, ready: Callable[[], bool], timeout: timedelta | None, summary: str
    ) -> bool:
        """Wait for the world: until ``ready`` (True) or ``timeout`` (False).

        While parked the run has done all it can with what it was told, so an Update may answer
        the refund's status now (:attr:`waiting`). The condition reads the state itself, never a
        flag set by a handler: a message that came while the run was busy elsewhere is seen
        here."""
        if ready():
            return True
        await self.flush()
        self.waiting, self.waiting_for = True, summary
        if timeout is not None:
            timeout = max(timeout, timedelta(seconds=1))
            self.waiting_for += f" at {(workflow.now() + timeout).isoformat(timespec='minutes')}"
        workflow.set_current_details(current_details(self.state, self.amount, self.waiting_for))
        try:
            await workflow.wait_condition(
                lambda: self._unpark(ready()), timeout=timeout, timeout_summary=summary
            )
        except TimeoutError:
            return False
        finally:
            self.waiting, self.waiting_for = False, ""
        return True

    def _unpark(self, ready: bool) -> bool:
        # Cleared in the same pass that wakes the run, before any Update's condition is read:
        # an Update never answers the status the run is about to leave.
        if ready:
            self.waiting = False
        return ready

    @contextlib.asynccontextmanager
    async def calling_out(self) -> AsyncIterator[None]:
        """Around a provider call: the run waits on the world, as when parked."""
        await self.flush()
        self.waiting = True
        try:
            yield
        finally:
            self.waiting = False

    # ------------------------------------------------------------------ records
    async def record(
        self,
        kind: str,
        message: str,
        *,
        actor: str = "system",
        data: dict[str, Any] | None = None,
        notify: list[Notification] | None = None,
    ) -> None:
        """One timeline entry: the audit row and its notices in one transaction."""
        now = workflow.now()
        state = self.state
        state.timeline.append(
            TimelineEntry(
                at=now,
                kind=kind,
                status=state.status,
                message=message,
                actor=actor,
                data=data or {},
            )
        )
        workflow.set_current_details(current_details(self.state, self.amount, self.waiting_for))
        entry = TransitionInput(
            refund_id=state.refund_id,
            status=state.status,
            stage=state.stage,
            kind=kind,
            message=message,
            actor=actor,
            at=now,
            seq=len(state.timeline) - 1,
            data=data or {},
            notifications=notify or [],
        )
        if self.batched:
            self.write(DbStep(transition=entry))
            return
        await workflow.execute_local_activity_method(
            RefundActivities.record_transition,
            entry,
            start_to_close_timeout=DB_STEP,
            summary=f"{kind}: {state.status.value}",
        )
        if notify:
            self._deliver()

    async def transition(
        self,
        status: RefundStatus,
        kind: str,
        message: str,
        *,
        actor: str = "system",
        data: dict[str, Any] | None = None,
        notify: list[Notification] | None = None,
    ) -> None:
        self.state.status = status
        if not self.batched:  # batched: upserted once, at the flush
            self._upsert_search_attributes()
        telemetry.status_changed(status.value, self.inp.merchant_id)
        await self.record(kind, message, actor=actor, data=data, notify=notify)

    def _upsert_search_attributes(self) -> None:
        wanted: list[tuple[SearchAttributeKey[Any], Any]] = [
            (sa.REFUND_STATUS, self.state.status.value),
            (sa.REFUND_TAGS, self.state.tags),
        ]
        if self.state.quote is not None:
            wanted.append((sa.REFUND_AMOUNT, self.quote.total))
        current = workflow.info().typed_search_attributes
        updates: list[SearchAttributeUpdate[Any]] = [
            key.value_set(value) for key, value in wanted if current.get(key) != value
        ]
        if updates:  # an upsert that changes nothing is still a history event
            workflow.upsert_search_attributes(updates)

    async def escalate(self, reason: str) -> None:
        self.state.escalation_reason = reason
        if "escalated" not in self.state.tags:
            self.state.tags = sorted([*self.state.tags, "escalated"])
        await self.transition(
            RefundStatus.NEEDS_ATTENTION,
            "escalated",
            reason,
            notify=[Notification(channel="ops", template="escalation", params={"reason": reason})],
        )

    async def finish(
        self,
        status: RefundStatus,
        kind: str,
        message: str,
        *,
        actor: str = "system",
        data: dict[str, Any] | None = None,
        notify: list[Notification] | None = None,
        release: bool = True,
    ) -> None:
        """End the refund. ``release`` gives back what it still holds (never what it paid)."""
        if release and self.state.quote is not None:
            release_input = ReleaseInput(refund_id=self.state.refund_id, at=workflow.now())
            if self.batched:
                self.write(DbStep(release=release_input))
            else:
                await workflow.execute_local_activity_method(
                    RefundActivities.release_reservation,
                    release_input,
                    start_to_close_timeout=DB_STEP,
                    summary="release the reservation",
                )
        self.state.stage = Stage.DONE
        await self.transition(status, kind, message, actor=actor, data=data, notify=notify)

    async def complete(self) -> None:
        if self.state.timeline and self.state.payouts:
            telemetry.money_arrived(self.state.timeline[0].at, self.state.payouts[0].route.value)
        await self.finish(
            RefundStatus.COMPLETED,
            "completed",
            f"completed: {self.amount(self.quote.total)} refunded",
            notify=[
                self.customer("refund_completed", amount=self.quote.total),
                self.customer("feedback_request"),
            ],
            release=False,
        )

    async def cancelled(self) -> None:
        request = self.inbox.cancel
        who = request.requested_by if request else "system"
        await self.finish(
            RefundStatus.CANCELLED,
            "cancelled",
            f"cancelled by {who}: {request.reason if request else ''}".rstrip(": "),
            actor=who,
            notify=[self.customer("refund_cancelled")],
        )

    # ------------------------------------------------------------------ notices
    def customer(self, template: str, **params: Any) -> Notification:
        contact = self.inp.request.contact
        base: dict[str, Any] = {"refund_id": self.state.refund_id, "order_id": self.inp.order_id}
        if self.state.quote is not None:
            base["currency"] = self.quote.currency
        return Notification(
            channel="customer", template=template, locale=contact.locale, params=base | params
        )

    def amount(self, minor: int) -> str:
        currency = self.state.quote.currency if self.state.quote else self.context.order.currency
        return format_minor(minor, currency)

    def _deliver(self) -> None:
        """Send this refund's pending notices. One delivery at a time: it sends every pending
        row of the refund, so rows written meanwhile need only one more run after it."""
        if self._delivery is not None and not self._delivery.done():
            self._deliver_again = True
            return
        self._deliver_again = False
        self._delivery = workflow.start_activity_method(
            NotifyActivities.deliver_notifications,
            DeliverInput(refund_id=self.state.refund_id, max_attempts=DELIVERY_ATTEMPTS),
            start_to_close_timeout=timedelta(minutes=2),
            retry_policy=_DELIVERY_RETRY,
            summary="deliver notices",
        )

    async def delivered(self) -> None:
        """Wait for notice delivery before the run ends or continues as new. Delivery gives up
        on its own after its last attempt (recording the failure), so this always ends."""
        await self.flush()
        while self._delivery is not None:
            # The activity records its own failures; a lost notice is not a lost refund.
            with contextlib.suppress(ActivityError):
                await self._delivery
            self._delivery = None
            if self._deliver_again:
                self._deliver()


def _kinds(steps: list[DbStep]) -> str:
    """A batch's summary: its timeline entries, or what else it writes."""
    return ", ".join(s.transition.kind for s in steps if s.transition) or "payout records"
