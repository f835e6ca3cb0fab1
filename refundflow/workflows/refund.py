"""RefundWorkflow: one durable run per refund, from the request until the customer has the money.

The run is a small state machine over :class:`Stage`. Each stage either advances, escalates to
``NEEDS_ATTENTION`` (ops resolve it with an action) or ends the refund. All state lives in a
``RefundState`` so a continued-as-new run picks up exactly where the last one stopped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, ClassVar, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from refundflow.activities import contracts as c
    from refundflow.domain.calculation import compute_quote
    from refundflow.domain.calendar import add_business_days, expected_arrival
    from refundflow.domain.errors import DomainError
    from refundflow.domain.money import format_minor
    from refundflow.domain.orders import BankAccount, DestinationKind, PaymentMethod
    from refundflow.domain.policy import FallbackAction
    from refundflow.domain.quote import Deduction, Quote
    from refundflow.domain.review import ReviewOutcome, review
    from refundflow.domain.states import (
        STAGE_STATUS,
        ApprovalDecision,
        ApprovalRecord,
        CancelRequest,
        CustomerConfirmation,
        FollowUpState,
        OpsAction,
        PayoutEvent,
        PayoutRecord,
        PayoutStatus,
        ReceiptReport,
        RefundState,
        RefundStatus,
        Refusal,
        ReturnInspection,
        Stage,
        SupplierResponse,
        TimelineEntry,
        payout_key,
        refusal_for_cancel,
        refusal_for_decision,
        refusal_for_ops,
        refusal_for_receipt,
        refusal_for_stage,
    )
    from refundflow.workflows import search_attributes as sa

# Gateways may be slow or down for a while; retries back off, and an unknown outcome is
# queried inside the activity before anything is sent again.
_GATEWAY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=10),
    non_retryable_error_types=["DomainError"],
)
_T = TypeVar("_T")
_DELIVERY_ATTEMPTS = 8
_DELIVERY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=10),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=30),
    maximum_attempts=_DELIVERY_ATTEMPTS,
)
_MAX_EARLY_EVENTS = 20  # events for payouts this run never made must not pile up for ever
_STAGE_ORDER = [
    Stage.SUPPLIER,
    Stage.APPROVAL,
    Stage.RETURN,
    Stage.CUSTOMER,
    Stage.PAYOUT,
    Stage.FOLLOW_UP,
]


def _calendar(fn: Callable[..., _T], *args: Any) -> _T:
    # The holidays package reads its translation files when a calendar is first built. That
    # is deterministic (files of the installed package), so it may leave the sandbox; the
    # calendars are cached in the passed-through domain module afterwards.
    with workflow.unsafe.sandbox_unrestricted():
        return fn(*args)


class MessageResult(c.BaseModel):
    """What an Update answers: the state the refund is in after the message."""

    accepted: bool
    status: RefundStatus
    detail: str = ""


@workflow.defn(name="RefundWorkflow")
class RefundWorkflow:
    @workflow.init
    def __init__(self, inp: c.RefundWorkflowInput) -> None:
        self.inp = inp
        self.s = (
            RefundState.model_validate(inp.state)
            if inp.state is not None
            else RefundState(refund_id=inp.refund_id, requested_by=inp.request.requested_by)
        )
        self.ctx: c.RefundContext | None = inp.context
        self.box = self.s.inbox
        self.wake = False
        self._delivery: workflow.ActivityHandle[c.DeliverResult] | None = None
        self._deliver_again = False

    # ------------------------------------------------------------------ run
    @workflow.run
    async def run(self, inp: c.RefundWorkflowInput) -> RefundState:
        if self.ctx is None:
            await self._review()
        while self.s.stage is not Stage.DONE:
            if self.s.status is RefundStatus.NEEDS_ATTENTION:
                await self._needs_attention()
            else:
                await self._stages[self.s.stage](self)
            if self.s.stage is not Stage.DONE and self._should_continue_as_new():
                await self._delivered()
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    self.inp.model_copy(update={"state": self.s, "context": self.ctx})
                )
        await self._delivered()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.s

    def _should_continue_as_new(self) -> bool:
        info = workflow.info()
        limit = self.inp.history_limit
        return info.is_continue_as_new_suggested() or (
            limit is not None and info.get_current_history_length() > limit
        )

    @property
    def context(self) -> c.RefundContext:
        assert self.ctx is not None, "context is loaded before any stage runs"
        return self.ctx

    @property
    def quote(self) -> Quote:
        assert self.s.quote is not None, "a quote exists once review accepted the refund"
        return self.s.quote

    # --------------------------------------------------------------- stages
    async def _review(self) -> None:
        req = self.inp.request
        self.ctx = await self._local(
            c.LOAD_CONTEXT,
            c.LoadContextInput(
                refund_id=self.s.refund_id,
                merchant_id=self.inp.merchant_id,
                order_id=self.inp.order_id,
                request=req,
                as_of=workflow.now(),
            ),
            result_type=c.RefundContext,
            summary="load order, policy and prior refunds",
        )
        ctx = self.ctx
        await self._transition(RefundStatus.UNDER_REVIEW, "review_started", "review started")
        decision = review(
            order=ctx.order,
            request=req,
            policy=ctx.policy,
            as_of=workflow.now(),
            prior_refunds=ctx.prior_refunds,
            recent_customer_refunds=ctx.recent_customer_refunds,
            fx_rate=self.inp.fx_rate,
        )
        if decision.outcome is ReviewOutcome.REJECT or decision.quote is None:
            reasons = [r.value for r in decision.reasons]
            await self._local(
                c.RESERVE,
                c.ReserveInput(
                    refund_id=self.s.refund_id,
                    request=req,
                    order=ctx.order,
                    quote=None,
                    policy_version=ctx.policy.version,
                    status=RefundStatus.REJECTED,
                    at=workflow.now(),
                ),
                result_type=c.ReserveResult,
                summary="record the rejected refund",
            )
            await self._finish(
                RefundStatus.REJECTED,
                "rejected",
                f"rejected by review: {', '.join(reasons)}",
                data={"reasons": reasons},
                notify=[self._customer("refund_rejected", reasons=reasons, text=decision.details)],
                reserved=False,
            )
            return
        self.s.quote = decision.quote
        self.s.approvers_required = (
            decision.approvers_required if decision.outcome is ReviewOutcome.NEEDS_APPROVAL else 0
        )
        self.s.return_required = decision.return_required
        self.s.supplier_check = decision.supplier_check
        self.s.customer_confirmation = decision.customer_confirmation
        self.s.tags = sorted(set(decision.tags))
        self.s.approvers = ctx.approvers
        if not await self._reserve():
            return
        await self._transition(
            RefundStatus.UNDER_REVIEW,
            "accepted",
            f"accepted: {decision.outcome.value}, {self._amount(self.quote.total)}",
            data={"outcome": decision.outcome.value, "quote": self.s.fingerprint},
            notify=[self._customer("refund_accepted", amount=self.quote.total)],
        )
        self._advance()

    async def _supplier(self) -> None:
        presale = self.context.order.presale
        hours = self.context.policy.presale.supplier_response_hours
        await self._enter(
            "supplier_asked",
            f"asked supplier {presale.supplier_ref if presale else ''} to cancel production",
            notify=[c.Notification(channel="supplier", template="presale_cancel_request")],
        )
        self.box.supplier = None
        if not await self._wait(
            lambda: self.box.supplier is not None, timedelta(hours=hours), "supplier deadline"
        ):
            await self._escalate(f"supplier did not answer within {hours} hours")
            return
        if self.box.cancel is not None:
            await self._cancelled()
            return
        resp = self.box.supplier
        assert resp is not None
        if not resp.can_cancel:
            await self._escalate(f"supplier refused the cancellation: {resp.note}".rstrip(": "))
            return
        if resp.cancellation_fee:
            fee = Deduction(
                kind="presale_cancellation_fee", amount=resp.cancellation_fee, note=resp.note
            )
            if not await self._requote(fee):
                return
        self._advance()

    async def _approval(self) -> None:
        sla = self.context.policy.approval_sla
        await self._enter(
            "approval_requested",
            f"waiting for {self.s.approvers_required} approval(s)",
            notify=[
                c.Notification(
                    channel="approver",
                    template="approval_requested",
                    params={"refund_id": self.s.refund_id, "amount": self.quote.total},
                )
            ],
        )
        enough = self._approved_or_rejected
        remind = timedelta(hours=sla.remind_after_hours)
        if not await self._wait(enough, remind, "approval reminder"):
            await self._record(
                "approval_reminder",
                "approval reminder sent",
                notify=[c.Notification(channel="approver", template="approval_reminder")],
            )
            rest = timedelta(hours=sla.escalate_after_hours) - remind
            if not await self._wait(enough, rest, "approval escalation"):
                await self._escalate(f"no decision within {sla.escalate_after_hours} hours")
                return
        if self.box.cancel is not None:
            await self._cancelled()
            return
        rej = self.s.current_rejection()
        if rej is not None:
            await self._finish(
                RefundStatus.REJECTED,
                "rejected",
                f"rejected by {rej.approver_id}: {rej.comment}".rstrip(": "),
                actor=rej.approver_id,
                notify=[
                    self._customer(
                        "refund_rejected", reasons=["APPROVER_REJECTED"], text=rej.comment
                    )
                ],
            )
            return
        await self._record(
            "approved",
            "approved by " + ", ".join(a.approver_id for a in self.s.current_approvals()),
            notify=[self._customer("refund_approved", amount=self.quote.total)],
        )
        self._advance()

    def _approved_or_rejected(self) -> bool:
        return (
            len(self.s.current_approvals()) >= self.s.approvers_required
            or self.s.current_rejection() is not None
            or self.box.cancel is not None
        )

    async def _return(self) -> None:
        days = self.context.policy.returns.deadline_days
        deadline = workflow.now() + timedelta(days=days)
        await self._enter(
            "return_requested",
            f"waiting for the goods to come back by {deadline.date().isoformat()}",
            notify=[self._customer("return_instructions", deadline=deadline.date().isoformat())],
        )
        self.box.inspection = None
        if not await self._wait(
            lambda: self.box.inspection is not None, timedelta(days=days), "return deadline"
        ):
            await self._finish(
                RefundStatus.CANCELLED,
                "return_deadline_passed",
                f"goods not returned by {deadline.date().isoformat()}",
                notify=[
                    self._customer(
                        "refund_cancelled_no_return", deadline=deadline.date().isoformat()
                    )
                ],
            )
            return
        if self.box.cancel is not None:
            await self._cancelled()
            return
        report = self.box.inspection
        assert report is not None
        self._completed_add(Stage.RETURN)
        if report.deduction:
            damage = Deduction(kind="inspection_damage", amount=report.deduction, note=report.note)
            if not await self._requote(damage):
                return
            # A changed amount needs a person's approval again, whatever the review said.
            self.s.approvers_required = max(1, self.s.approvers_required)
            self.s.completed_stages = [
                st for st in self.s.completed_stages if st is not Stage.APPROVAL
            ]
            await self._record(
                "deduction_applied",
                f"inspection deducted {self._amount(report.deduction)}; new total "
                f"{self._amount(self.quote.total)}, back to approval",
                actor=report.inspector_id,
            )
            self._goto(Stage.APPROVAL)
            return
        self._advance()

    async def _customer_confirmation(self) -> None:
        days = self.context.policy.customer_confirmation.deadline_days
        await self._enter(
            "customer_confirmation_requested",
            f"asked the customer to confirm {self._amount(self.quote.total)}",
            notify=[self._customer("confirm_amount", amount=self.quote.total)],
        )
        self.box.confirmation = None
        if not await self._wait(
            lambda: self.box.confirmation is not None,
            timedelta(days=days),
            "customer confirmation deadline",
        ):
            await self._escalate(f"customer did not confirm within {days} days")
            return
        if self.box.cancel is not None:
            await self._cancelled()
            return
        assert self.box.confirmation is not None
        if not self.box.confirmation.confirmed:
            await self._escalate(
                f"customer declined the amount: {self.box.confirmation.note}".rstrip(": ")
            )
            return
        self._advance()

    async def _payout(self) -> None:
        if not self.s.payouts:
            await self._enter("payout_started", "second check before the first payout")
            check = await self._local(
                c.RECHECK_QUOTE,
                c.RecheckInput(
                    refund_id=self.s.refund_id,
                    expected_fingerprint=self.s.fingerprint,
                    fx_rate=self.inp.fx_rate,
                ),
                result_type=c.RecheckResult,
                summary="recompute the quote independently",
            )
            if not check.matches:
                await self._escalate(f"second check failed: {check.detail}")
                return
            now = workflow.now()
            self.s.payouts = [
                PayoutRecord(
                    seq=p.seq,
                    installment=p.installment,
                    generation=1,
                    key=payout_key(self.s.refund_id, p.seq, 1),
                    route=p.route,
                    amount=p.amount,
                    payout_currency=p.payout_currency,
                    payout_amount=p.payout_amount,
                    due_at=now + timedelta(days=p.due_after_days),
                    bank_account=self.inp.request.destination.bank_account,
                )
                for p in self.quote.payouts
            ]
        elif self.s.status is not RefundStatus.PAYING:
            await self._enter("payout_resumed", "paying")
        for record in self.s.latest_payouts():
            if record.status is not PayoutStatus.PENDING:
                continue
            if record.due_at and record.due_at > workflow.now():
                total = max(p.installment for p in self.s.payouts)
                await workflow.sleep(
                    record.due_at - workflow.now(),
                    summary=f"installment {record.installment} of {total} due",
                )
            result = await self._send(record)
            if result is PayoutStatus.FAILED_PERMANENT:
                await self._fallback(record)
                return  # a fallback generation is sent on the next pass of this stage
            if result is PayoutStatus.UNKNOWN or self.box.cancel is not None:
                return  # escalated
        self._advance()

    async def _follow_up(self) -> None:
        fu = self.context.policy.follow_up
        await self._enter("awaiting_funds", f"waiting for funds, expected by {self.s.expected_by}")
        if self.s.follow_up is None:
            now = workflow.now()
            first = timedelta(minutes=fu.first_poll_minutes)
            self.s.follow_up = FollowUpState(
                interval_seconds=int(first.total_seconds()),
                next_poll_at=now + first,
                final_at=now + timedelta(days=fu.final_escalation_days),
            )
        st = self.s.follow_up
        while not self._should_continue_as_new():
            await self._apply_events()
            if self.s.status is RefundStatus.NEEDS_ATTENTION or self.s.stage is not Stage.FOLLOW_UP:
                return  # escalated, or back to paying a fallback
            if await self._handle_receipts():
                continue
            now = workflow.now()
            settled = all(p.status is PayoutStatus.SETTLED for p in self.s.latest_payouts())
            window_over = self._window_passed_at()
            if self.s.customer_confirmed_receipt or (settled and now >= window_over):
                await self._complete()
                return
            if not settled and now >= window_over and st.delay_noticed_for != self.s.expected_by:
                st.delay_noticed_for = self.s.expected_by
                await self._record(
                    "delay_notice",
                    f"funds not confirmed by {self.s.expected_by}; customer told",
                    notify=[self._customer("refund_delayed", expected_by=self.s.expected_by)],
                )
            if now >= st.final_at or st.polls >= fu.max_polls:
                await self._escalate(f"funds not confirmed after {st.polls} checks")
                return
            if not settled and now >= st.next_poll_at:
                st.polls += 1
                await self._poll_open_payouts()
                cap = fu.max_poll_interval_hours * 3600
                st.interval_seconds = min(st.interval_seconds * fu.backoff_factor, cap)
                st.next_poll_at = workflow.now() + timedelta(seconds=st.interval_seconds)
                continue
            wakes = [st.final_at, *([st.next_poll_at] if not settled else [])]
            wakes += [window_over] if window_over > now else []
            await self._wait(lambda: self.wake, min(wakes) - now, "follow-up")

    _stages: ClassVar[dict[Stage, Callable[[RefundWorkflow], Awaitable[None]]]] = {
        Stage.SUPPLIER: _supplier,
        Stage.APPROVAL: _approval,
        Stage.RETURN: _return,
        Stage.CUSTOMER: _customer_confirmation,
        Stage.PAYOUT: _payout,
        Stage.FOLLOW_UP: _follow_up,
    }

    # --------------------------------------------------------- escalation
    async def _escalate(self, reason: str) -> None:
        self.s.escalated_from = self.s.stage
        self.s.escalation_reason = reason
        if "escalated" not in self.s.tags:
            self.s.tags = sorted([*self.s.tags, "escalated"])
        await self._transition(
            RefundStatus.NEEDS_ATTENTION,
            "escalated",
            reason,
            notify=[
                c.Notification(channel="ops", template="escalation", params={"reason": reason})
            ],
        )

    async def _needs_attention(self) -> None:
        box = self.box
        await workflow.wait_condition(lambda: box.ops is not None or box.cancel is not None)
        if box.cancel is not None:
            await self._cancelled()
            return
        action = box.ops
        assert action is not None
        box.ops = None
        note = f"{action.action} by {action.actor}: {action.note}".rstrip(": ")
        if action.action == "mark_settled":
            await self._mark_settled(action)
            return
        if action.action in ("retry_payout", "switch_destination"):
            account = action.destination.bank_account if action.destination else None
            for record in self._failed_tranches():
                if record.status is PayoutStatus.UNKNOWN:
                    # The provider may have it: same key again, and the send queries first.
                    record.status = PayoutStatus.PENDING
                    continue
                route = record.route
                if action.destination is not None:
                    route = self._route_for(action.destination.kind, record)
                self._new_generation(record, route, account)
            await self._transition(RefundStatus.PAYING, action.action, note, actor=action.actor)
            return
        # resume: back into the stage that escalated; its wait starts over with fresh deadlines
        box.supplier = box.inspection = box.confirmation = None
        self.s.follow_up = None
        await self._transition(STAGE_STATUS[self.s.stage], "resumed", note, actor=action.actor)

    # ------------------------------------------------------------- payouts
    def _payout_call(self, record: PayoutRecord) -> c.PayoutCall:
        order = self.context.order
        charges = self._charges(record)
        tender = order.payment(next(iter(charges), "")) if charges else None
        return c.PayoutCall(
            refund_id=self.s.refund_id,
            merchant_id=order.merchant_id,
            customer_id=order.customer_id,
            record=record,
            original_txn_id=tender.provider_txn_id if tender else "",
            original_amount=tender.captured if tender else 0,
            original_paid_at=tender.paid_at if tender else None,
            order_id=order.order_id,
            payment_id=tender.payment_id if tender else "",
            bank_account=record.bank_account,
            reason=self.inp.request.reason.value,
        )

    async def _send(self, record: PayoutRecord) -> PayoutStatus:
        order = self.context.order
        call = self._payout_call(record)
        await self._save_payout(record, c.REGISTER_PAYOUT)
        try:
            result = await workflow.execute_activity(
                c.SEND_PAYOUT,
                call,
                result_type=c.PayoutResult,
                start_to_close_timeout=timedelta(minutes=2),
                schedule_to_close_timeout=timedelta(days=1),
                retry_policy=_GATEWAY_RETRY,
                summary=f"pay {self._amount(record.amount)} via {record.route.value}: {record.key}",
            )
        except ActivityError as err:
            # A day of failed attempts: leave the outcome to ops, the key stays the same.
            record.status = PayoutStatus.UNKNOWN
            await self._save_payout(record, c.RECORD_PAYOUT)
            await self._escalate(f"payout {record.key} did not go through: {err.cause or err}")
            return PayoutStatus.UNKNOWN
        self._apply_result(record, result)
        await self._save_payout(record, c.RECORD_PAYOUT)
        if record.status is PayoutStatus.FAILED_PERMANENT:
            await self._record(
                "payout_failed",
                f"payout {record.key} failed for good: {record.code}",
                data={"key": record.key, "code": record.code},
            )
            return record.status
        window = _calendar(
            expected_arrival,
            workflow.now().date(),
            record.route,
            self.context.policy,
            order.country,
        )
        if self.s.expected_by is None or window.latest.isoformat() > self.s.expected_by:
            self.s.expected_by = window.latest.isoformat()
        self.s.first_payout_at = self.s.first_payout_at or workflow.now()
        await self._record(
            "payout_sent",
            f"sent {self._amount(record.amount)} via {record.route.value}, "
            f"expected by {window.latest.isoformat()}",
            data={"key": record.key, "provider_ref": record.provider_ref},
            notify=[
                self._customer(
                    "payout_sent",
                    amount=record.payout_amount,
                    currency=record.payout_currency,
                    route=record.route.value,
                    expected_from=window.earliest.isoformat(),
                    expected_by=window.latest.isoformat(),
                    trace_ref=record.trace_ref,
                )
            ],
        )
        return record.status

    def _apply_result(self, record: PayoutRecord, result: c.PayoutResult) -> None:
        record.status = result.status
        record.provider_ref = result.provider_ref or record.provider_ref
        record.trace_ref = result.trace_ref or record.trace_ref
        record.code = result.code
        record.sent_at = record.sent_at or workflow.now()
        if result.status is PayoutStatus.SETTLED:
            record.settled_at = record.settled_at or workflow.now()

    async def _fallback(self, record: PayoutRecord) -> None:
        """Try the policy's next route for a tranche that failed for good; escalate if none."""
        tried = {p.route for p in self.s.payouts if p.seq == record.seq}
        for action in self.context.policy.on_permanent_failure:
            if action is FallbackAction.ESCALATE:
                break
            route = (
                PaymentMethod.BALANCE
                if action is FallbackAction.BALANCE
                else PaymentMethod.BANK_TRANSFER
            )
            if route in tried:
                continue
            if (
                route is PaymentMethod.BANK_TRANSFER
                and self.inp.request.destination.bank_account is None
            ):
                continue
            account = self.inp.request.destination.bank_account
            new = self._new_generation(
                record, route, account if route is PaymentMethod.BANK_TRANSFER else None
            )
            await self._record(
                "payout_fallback",
                f"tranche {record.seq} falls back to {route.value} ({new.key})",
                data={"from": record.key, "to": new.key},
            )
            return
        await self._escalate(f"payout {record.key} failed ({record.code}) and no fallback is left")

    def _new_generation(
        self, record: PayoutRecord, route: PaymentMethod, account: BankAccount | None = None
    ) -> PayoutRecord:
        generation = max(p.generation for p in self.s.payouts if p.seq == record.seq) + 1
        new = record.model_copy(
            update={
                "generation": generation,
                "key": payout_key(self.s.refund_id, record.seq, generation),
                "route": route,
                "bank_account": account or record.bank_account,
                "status": PayoutStatus.PENDING,
                "provider_ref": "",
                "trace_ref": "",
                "code": "",
                "sent_at": None,
                "settled_at": None,
                "due_at": workflow.now(),
            }
        )
        self.s.payouts.append(new)
        return new

    def _failed_tranches(self) -> list[PayoutRecord]:
        return [
            p
            for p in self.s.latest_payouts()
            if p.status in (PayoutStatus.FAILED_PERMANENT, PayoutStatus.UNKNOWN)
        ]

    def _route_for(self, kind: DestinationKind, record: PayoutRecord) -> PaymentMethod:
        if kind is DestinationKind.BALANCE:
            return PaymentMethod.BALANCE
        if kind is DestinationKind.BANK_TRANSFER:
            return PaymentMethod.BANK_TRANSFER
        original = {p.seq: p.route for p in self.s.payouts if p.generation == 1}
        return original.get(record.seq, record.route)

    def _charges(self, record: PayoutRecord) -> dict[str, int]:
        planned = next(p for p in self.quote.payouts if p.seq == record.seq)
        return {ch.payment_id: ch.amount for ch in planned.charges}

    async def _save_payout(self, record: PayoutRecord, activity: str) -> None:
        await self._local(
            activity,
            c.RecordPayoutInput(
                refund_id=self.s.refund_id,
                record=record,
                charges=self._charges(record),
                at=workflow.now(),
            ),
            summary=f"{activity} {record.key} {record.status.value}",
        )

    async def _poll_open_payouts(self) -> None:
        for record in self.s.latest_payouts():
            if record.status is not PayoutStatus.ACCEPTED:
                continue
            result = await workflow.execute_activity(
                c.QUERY_PAYOUT,
                self._payout_call(record),
                result_type=c.PayoutResult,
                start_to_close_timeout=timedelta(minutes=1),
                retry_policy=_GATEWAY_RETRY,
                summary=f"check {record.key}",
            )
            await self._update_payout(
                record, result.status, result.provider_ref, result.trace_ref, result.code
            )

    async def _apply_events(self) -> None:
        while self.box.marks:
            mark = self.box.marks.pop(0)
            await self._record(
                "marked_settled",
                f"marked settled by {mark.actor}: {mark.reference}",
                actor=mark.actor,
                data={"reference": mark.reference, "note": mark.note},
            )
        early: list[PayoutEvent] = []
        while self.box.events:
            event = self.box.events.pop(0)
            record = next((p for p in self.s.payouts if p.key == event.payout_key), None)
            if record is None:
                # Ahead of our own record of that payout: kept until the record exists.
                early.append(event)
                continue
            if (event.amount is not None and event.amount != record.payout_amount) or (
                event.currency and event.currency != record.payout_currency
            ):
                await self._record(
                    "message_ignored",
                    f"provider event for {record.key} names {event.amount} {event.currency},"
                    f" the payout is {record.payout_amount} {record.payout_currency}",
                    data={"code": "payout_event_mismatch", "event_id": event.event_id},
                )
                continue
            await self._update_payout(
                record, event.status, event.provider_ref, event.trace_ref, event.code
            )
        self.box.events = early[-_MAX_EARLY_EVENTS:]

    async def _update_payout(
        self,
        record: PayoutRecord,
        status: PayoutStatus,
        provider_ref: str,
        trace_ref: str,
        code: str,
    ) -> None:
        if record.status is PayoutStatus.SETTLED:
            if status is PayoutStatus.FAILED_PERMANENT and record.code != "REVERSED_" + code:
                # The money came back after the provider had reported it paid (a bank
                # return, a reversal). The books still show it paid, so ops decide: escalate.
                record.code = "REVERSED_" + code
                await self._record(
                    "payout_reversed",
                    f"provider reversed settled payout {record.key}: {code}",
                    data={"key": record.key, "code": code},
                )
                await self._escalate(f"provider reversed settled payout {record.key}: {code}")
            return
        if status in (PayoutStatus.NOT_FOUND, PayoutStatus.UNKNOWN):
            return  # a missing answer changes nothing
        if record.status is PayoutStatus.FAILED_PERMANENT:
            return  # final for this generation; a later poll or webhook repeats old news
        if status is record.status and not trace_ref:
            return
        record.status = status
        record.provider_ref = provider_ref or record.provider_ref
        record.trace_ref = trace_ref or record.trace_ref
        record.code = code or record.code
        if status is PayoutStatus.SETTLED:
            record.settled_at = workflow.now()
        await self._save_payout(record, c.RECORD_PAYOUT)
        if status is PayoutStatus.SETTLED:
            await self._record(
                "payout_settled", f"provider settled {record.key}", data={"key": record.key}
            )
        elif status is PayoutStatus.FAILED_PERMANENT:
            # Accepted, then refused (e.g. WeChat ABNORMAL: the card behind the account is
            # gone): the same policy as a refusal at sending, in the payout stage.
            await self._record(
                "payout_failed",
                f"payout {record.key} failed after acceptance: {record.code}",
                data={"key": record.key, "code": record.code},
            )
            self._goto(Stage.PAYOUT)
            await self._fallback(record)

    async def _mark_settled(self, action: OpsAction) -> None:
        for record in self.s.latest_payouts():
            if record.status is not PayoutStatus.SETTLED:
                record.code = record.code or "MARKED_SETTLED"
                record.provider_ref = record.provider_ref or action.reference
                await self._update_payout(
                    record, PayoutStatus.SETTLED, action.reference, "", "MARKED_SETTLED"
                )
        await self._record(
            "marked_settled",
            f"marked settled by {action.actor}: {action.reference}",
            actor=action.actor,
        )
        await self._complete()

    def _window_passed_at(self) -> datetime:
        """Start of the first business day after the latest expected-arrival date; at once
        for routes that pay immediately (the store balance)."""
        policy = self.context.policy
        if all(policy.arrival(p.route).max == 0 for p in self.s.latest_payouts()):
            return self.s.first_payout_at or workflow.now()
        expected = date.fromisoformat(self.s.expected_by or workflow.now().date().isoformat())
        country = self.context.policy.holiday_country or self.context.order.country
        day = _calendar(add_business_days, expected, 1, country)
        return datetime.combine(day, time(0), tzinfo=UTC)

    async def _handle_receipts(self) -> bool:
        if not self.box.receipts:
            return False
        report = self.box.receipts.pop(0)
        if report.received:
            self.s.customer_confirmed_receipt = True
            await self._record(
                "receipt_confirmed", "customer confirmed the money arrived", actor="customer"
            )
            for record in self.s.latest_payouts():
                if record.status is not PayoutStatus.SETTLED:
                    await self._update_payout(
                        record, PayoutStatus.SETTLED, "", "", "CUSTOMER_CONFIRMED"
                    )
            return True
        self.s.not_received_reports += 1
        max_days = max(self.context.policy.arrival(p.route).max for p in self.s.latest_payouts())
        country = self.context.policy.holiday_country or self.context.order.country
        today = workflow.now().date()
        self.s.expected_by = _calendar(add_business_days, today, max_days, country).isoformat()
        traces = [p.trace_ref or p.provider_ref for p in self.s.latest_payouts()]
        await self._record(
            "not_received",
            f"customer reports no money yet; follow-up reopened until {self.s.expected_by}",
            actor="customer",
            notify=[
                self._customer("trace_reference", trace_refs=traces, expected_by=self.s.expected_by)
            ],
        )
        return True

    # ------------------------------------------------------------ outcomes
    async def _complete(self) -> None:
        await self._finish(
            RefundStatus.COMPLETED,
            "completed",
            f"completed: {self._amount(self.quote.total)} refunded",
            notify=[
                self._customer("refund_completed", amount=self.quote.total),
                self._customer("feedback_request"),
            ],
            reserved=False,
        )

    async def _cancelled(self) -> None:
        req = self.box.cancel
        who = req.requested_by if req else "system"
        await self._finish(
            RefundStatus.CANCELLED,
            "cancelled",
            f"cancelled by {who}: {req.reason if req else ''}".rstrip(": "),
            actor=who,
            notify=[self._customer("refund_cancelled")],
        )

    async def _finish(
        self,
        status: RefundStatus,
        kind: str,
        message: str,
        *,
        actor: str = "system",
        data: dict[str, Any] | None = None,
        notify: list[c.Notification] | None = None,
        reserved: bool = True,
    ) -> None:
        if reserved and self.s.quote is not None:
            await self._local(
                c.RELEASE,
                c.ReleaseInput(refund_id=self.s.refund_id, at=workflow.now()),
                summary="release the reservation",
            )
        self.s.stage = Stage.DONE
        await self._transition(status, kind, message, actor=actor, data=data, notify=notify)

    # ---------------------------------------------------------- quotes
    async def _reserve(self) -> bool:
        result = await self._local(
            c.RESERVE,
            c.ReserveInput(
                refund_id=self.s.refund_id,
                request=self.inp.request,
                order=self.context.order,
                quote=self.quote,
                policy_version=self.context.policy.version,
                status=self.s.status,
                at=workflow.now(),
            ),
            result_type=c.ReserveResult,
            summary=f"reserve {self._amount(self.quote.total)}",
        )
        if not result.ok:
            await self._finish(
                RefundStatus.REJECTED,
                "rejected",
                f"rejected: {result.message}",
                data={"code": result.code},
                notify=[
                    self._customer(
                        "refund_rejected", reasons=["AMOUNT_ABOVE_REMAINING"], text=result.message
                    )
                ],
                reserved=False,
            )
        return result.ok

    async def _requote(self, deduction: Deduction) -> bool:
        ctx = self.context
        try:
            self.s.quote = compute_quote(
                order=ctx.order,
                request=self.inp.request,
                policy=ctx.policy,
                prior_refunds=ctx.prior_refunds,
                deductions=[*self.quote.deductions, deduction],
                fx_rate=self.inp.fx_rate,
            )
        except DomainError as err:
            await self._escalate(f"cannot apply {deduction.kind}: {err.message}")
            return False
        return await self._reserve()

    # ----------------------------------------------------------- plumbing
    def _advance(self) -> None:
        self._completed_add(self.s.stage)
        for stage in _STAGE_ORDER:
            if stage not in self.s.completed_stages and self._needed(stage):
                self._goto(stage)
                return
        self._goto(Stage.DONE)

    def _completed_add(self, stage: Stage) -> None:
        if stage not in self.s.completed_stages:
            self.s.completed_stages.append(stage)

    def _goto(self, stage: Stage) -> None:
        self.s.stage = stage

    def _needed(self, stage: Stage) -> bool:
        return {
            Stage.SUPPLIER: self.s.supplier_check,
            Stage.APPROVAL: self.s.approvers_required > 0,
            Stage.RETURN: self.s.return_required,
            Stage.CUSTOMER: self.s.customer_confirmation,
            Stage.PAYOUT: True,
            Stage.FOLLOW_UP: True,
        }[stage]

    async def _enter(
        self, kind: str, message: str, notify: list[c.Notification] | None = None
    ) -> None:
        status = STAGE_STATUS[self.s.stage]
        if self.s.status is status:
            return
        await self._transition(status, kind, message, notify=notify)

    async def _local(
        self, name: str, arg: Any, *, summary: str, result_type: type | None = None
    ) -> Any:
        # Short DB steps run as local activities: no task round trip and fewer history events.
        # They retry until the database answers, so a database outage delays but loses nothing.
        return await workflow.execute_local_activity(
            name,
            arg,
            result_type=result_type,
            start_to_close_timeout=timedelta(seconds=30),
            summary=summary,
        )

    async def _wait(self, done: Callable[[], bool], timeout: timedelta, summary: str) -> bool:
        """Wait for ``done`` (or a cancel); False when the timer ran out first."""
        self.wake = False
        try:
            await workflow.wait_condition(
                lambda: done() or self.box.cancel is not None,
                timeout=max(timeout, timedelta(seconds=1)),
                timeout_summary=summary,
            )
        except TimeoutError:
            return False
        return True

    async def _transition(
        self,
        status: RefundStatus,
        kind: str,
        message: str,
        *,
        actor: str = "system",
        data: dict[str, Any] | None = None,
        notify: list[c.Notification] | None = None,
    ) -> None:
        self.s.status = status
        updates: list[SearchAttributeUpdate[Any]] = [
            sa.REFUND_STATUS.value_set(status.value),
            sa.REFUND_TAGS.value_set(self.s.tags),
        ]
        if self.s.quote is not None:
            updates.append(sa.REFUND_AMOUNT.value_set(self.quote.total))
        workflow.upsert_search_attributes(updates)
        workflow.set_current_details(self._details())
        await self._record(kind, message, actor=actor, data=data, notify=notify)

    async def _record(
        self,
        kind: str,
        message: str,
        *,
        actor: str = "system",
        data: dict[str, Any] | None = None,
        notify: list[c.Notification] | None = None,
    ) -> None:
        now = workflow.now()
        self.s.timeline.append(
            TimelineEntry(
                at=now,
                kind=kind,
                status=self.s.status,
                message=message,
                actor=actor,
                data=data or {},
            )
        )
        await self._local(
            c.RECORD_TRANSITION,
            c.TransitionInput(
                refund_id=self.s.refund_id,
                status=self.s.status,
                stage=self.s.stage,
                kind=kind,
                message=message,
                actor=actor,
                at=now,
                seq=len(self.s.timeline) - 1,
                data=data or {},
                notifications=notify or [],
            ),
            summary=f"{kind}: {self.s.status.value}",
        )
        # Runs recorded before notices were delivered from here replay without it.
        if notify and workflow.patched("deliver-notifications"):
            self._deliver()

    def _deliver(self) -> None:
        """Send this refund's pending notices. One delivery at a time: it sends every pending
        row of the refund, so rows written meanwhile only need one more run after it."""
        if self._delivery is not None and not self._delivery.done():
            self._deliver_again = True
            return
        self._deliver_again = False
        self._delivery = workflow.start_activity(
            c.DELIVER_NOTIFICATIONS,
            c.DeliverInput(refund_id=self.s.refund_id, max_attempts=_DELIVERY_ATTEMPTS),
            result_type=c.DeliverResult,
            start_to_close_timeout=timedelta(minutes=2),
            retry_policy=_DELIVERY_RETRY,
            summary="deliver notices",
        )

    async def _delivered(self) -> None:
        """Wait for notice delivery before the run ends or continues as new. Delivery gives
        up on its own after its last attempt (recording the failure), so this always ends."""
        while self._delivery is not None:
            # The activity records its own failures; a lost notice is not a lost refund.
            with contextlib.suppress(ActivityError):
                await self._delivery
            self._delivery = None
            if self._deliver_again:
                self._deliver()

    def _details(self) -> str:
        lines = [f"**{self.s.status.value}** at stage `{self.s.stage.value}`"]
        if self.s.quote is not None:
            lines.append(f"amount {self._amount(self.quote.total)}")
        if self.s.stage is Stage.APPROVAL:
            lines.append(f"approvals {len(self.s.current_approvals())}/{self.s.approvers_required}")
        if self.s.payouts:
            done = sum(p.status is PayoutStatus.SETTLED for p in self.s.latest_payouts())
            lines.append(f"payouts settled {done}/{len(self.s.latest_payouts())}")
        if self.s.expected_by:
            lines.append(f"expected by {self.s.expected_by}")
        if self.s.status is RefundStatus.NEEDS_ATTENTION:
            lines.append(f"needs attention: {self.s.escalation_reason}")
        return "\n\n".join(lines)

    def _customer(self, template: str, **params: Any) -> c.Notification:
        contact = self.inp.request.contact
        base = {"refund_id": self.s.refund_id, "order_id": self.inp.order_id}
        if self.s.quote is not None:
            base["currency"] = self.quote.currency
        return c.Notification(
            channel="customer", template=template, locale=contact.locale, params={**base, **params}
        )

    def _amount(self, amount: int) -> str:
        currency = self.s.quote.currency if self.s.quote else self.context.order.currency
        return format_minor(amount, currency)

    # ------------------------------------------------------------ messages
    def _refuse(self, refusal: Refusal | None) -> None:
        if refusal is not None:
            raise ApplicationError(refusal.message, type=refusal.code, non_retryable=True)

    async def _ignored(self, what: str, refusal: Refusal, actor: str) -> None:
        await self._record(
            "message_ignored",
            f"{what} ignored: {refusal.message}",
            actor=actor,
            data={"code": refusal.code},
        )

    def _result(self, detail: str = "") -> MessageResult:
        return MessageResult(accepted=True, status=self.s.status, detail=detail)

    async def _apply_decision(self, msg: ApprovalDecision) -> MessageResult:
        record = ApprovalRecord(
            approver_id=msg.approver_id,
            decision=msg.decision,
            quote_fingerprint=msg.quote_fingerprint,
            at=workflow.now(),
            comment=msg.comment,
        )
        self.s.approvals.append(record)  # before any await, so a racing duplicate is refused
        await self._local(
            c.RECORD_APPROVAL,
            c.ApprovalInput(
                refund_id=self.s.refund_id, requested_by=self.s.requested_by, approval=record
            ),
            summary=f"record {msg.decision.lower()} by {msg.approver_id}",
        )
        await self._record(
            "decision",
            f"{msg.decision.lower()} by {msg.approver_id}",
            actor=msg.approver_id,
            data={"comment": msg.comment},
        )
        got = len(self.s.current_approvals())
        return self._result(f"{got}/{self.s.approvers_required} approvals")

    # The Update is how the API delivers a decision, after authenticating the approver's key
    # (role and merchant) at the moment of the decision; the roster this run loaded at its
    # start would miss approvers added since. Raw signals have no such gate: they are checked
    # against the roster.
    @workflow.update
    async def decide(self, msg: ApprovalDecision) -> MessageResult:
        # Again: validators of racing updates all ran before either applied.
        self._refuse(refusal_for_decision(self.s, msg, check_roster=False))
        return await self._apply_decision(msg)

    @decide.validator
    def _validate_decide(self, msg: ApprovalDecision) -> None:
        self._refuse(refusal_for_decision(self.s, msg, check_roster=False))

    @workflow.signal
    async def decide_signal(self, msg: ApprovalDecision) -> None:
        refusal = refusal_for_decision(self.s, msg)
        if refusal is not None:
            await self._ignored("decision", refusal, msg.approver_id)
            return
        await self._apply_decision(msg)

    def _take_supplier(self, msg: SupplierResponse) -> None:
        self.box.supplier = msg

    @workflow.update
    def supplier_response(self, msg: SupplierResponse) -> MessageResult:
        self._take_supplier(msg)
        return self._result()

    @supplier_response.validator
    def _validate_supplier(self, msg: SupplierResponse) -> None:
        self._refuse(refusal_for_stage(self.s, Stage.SUPPLIER, "a supplier response"))

    @workflow.signal
    async def supplier_response_signal(self, msg: SupplierResponse) -> None:
        refusal = refusal_for_stage(self.s, Stage.SUPPLIER, "a supplier response")
        if refusal is not None:
            await self._ignored("supplier response", refusal, msg.supplier_ref)
            return
        self._take_supplier(msg)

    @workflow.update
    def return_inspection(self, msg: ReturnInspection) -> MessageResult:
        self.box.inspection = msg
        return self._result()

    @return_inspection.validator
    def _validate_inspection(self, msg: ReturnInspection) -> None:
        self._refuse(refusal_for_stage(self.s, Stage.RETURN, "a return inspection"))

    @workflow.signal
    async def return_inspection_signal(self, msg: ReturnInspection) -> None:
        refusal = refusal_for_stage(self.s, Stage.RETURN, "a return inspection")
        if refusal is not None:
            await self._ignored("return inspection", refusal, msg.inspector_id)
            return
        self.box.inspection = msg

    @workflow.update
    def customer_confirmation(self, msg: CustomerConfirmation) -> MessageResult:
        self.box.confirmation = msg
        return self._result()

    @customer_confirmation.validator
    def _validate_confirmation(self, msg: CustomerConfirmation) -> None:
        self._refuse(refusal_for_stage(self.s, Stage.CUSTOMER, "a customer confirmation"))

    @workflow.signal
    async def customer_confirmation_signal(self, msg: CustomerConfirmation) -> None:
        refusal = refusal_for_stage(self.s, Stage.CUSTOMER, "a customer confirmation")
        if refusal is not None:
            await self._ignored("customer confirmation", refusal, "customer")
            return
        self.box.confirmation = msg

    @workflow.update
    def receipt(self, msg: ReceiptReport) -> MessageResult:
        self.box.receipts.append(msg)
        self.wake = True
        return self._result()

    @receipt.validator
    def _validate_receipt(self, msg: ReceiptReport) -> None:
        self._refuse(refusal_for_receipt(self.s))

    @workflow.signal
    async def receipt_signal(self, msg: ReceiptReport) -> None:
        refusal = refusal_for_receipt(self.s)
        if refusal is not None:
            await self._ignored("receipt report", refusal, "customer")
            return
        self.box.receipts.append(msg)
        self.wake = True

    @workflow.update
    def cancel_refund(self, msg: CancelRequest) -> MessageResult:
        self.box.cancel = msg
        return self._result("cancelling")

    @cancel_refund.validator
    def _validate_cancel(self, msg: CancelRequest) -> None:
        self._refuse(refusal_for_cancel(self.s))

    @workflow.signal
    async def cancel_signal(self, msg: CancelRequest) -> None:
        refusal = refusal_for_cancel(self.s)
        if refusal is not None:
            await self._ignored("cancel", refusal, msg.requested_by)
            return
        self.box.cancel = msg

    @workflow.update
    def ops_action(self, msg: OpsAction) -> MessageResult:
        self._take_ops(msg)
        return self._result(msg.action)

    @ops_action.validator
    def _validate_ops(self, msg: OpsAction) -> None:
        self._refuse(refusal_for_ops(self.s, msg))

    @workflow.signal
    async def ops_action_signal(self, msg: OpsAction) -> None:
        refusal = refusal_for_ops(self.s, msg)
        if refusal is not None:
            await self._ignored(f"ops {msg.action}", refusal, msg.actor)
            return
        self._take_ops(msg)

    def _take_ops(self, msg: OpsAction) -> None:
        if msg.action == "mark_settled" and self.s.status is not RefundStatus.NEEDS_ATTENTION:
            # Outside an escalation, settling is news for the follow-up loop, like a webhook.
            for record in self.s.latest_payouts():
                self.box.events.append(
                    PayoutEvent(
                        payout_key=record.key,
                        status=PayoutStatus.SETTLED,
                        provider_ref=msg.reference,
                        code="MARKED_SETTLED",
                    )
                )
            self.box.marks.append(msg)
            self.wake = True
            return
        if msg.action == "cancel":
            self.box.cancel = CancelRequest(requested_by=msg.actor, reason=msg.note)
            return
        self.box.ops = msg

    @workflow.signal
    def payout_event(self, event: PayoutEvent) -> None:
        self.box.events.append(event)
        self.wake = True

    @workflow.query
    def view(self) -> RefundState:
        return self.s
