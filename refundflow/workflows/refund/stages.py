"""The stages before any money moves: review, supplier, approval, return of goods, the customer's
confirmation. Each waits for its message or its deadline, then advances, escalates or ends."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from refundflow.activities.contracts import (
        Notification,
        ReserveInput,
        ReserveResult,
        ReviewAndReserveInput,
        ReviewInput,
    )
    from refundflow.activities.refund import RefundActivities
    from refundflow.domain.quote import Deduction
    from refundflow.domain.review import ReviewOutcome
    from refundflow.domain.states import RefundStatus, Stage

from refundflow.workflows.refund import money
from refundflow.workflows.refund.effects import DB_STEP, Run


async def review(run: Run) -> None:
    """Load what the refund is about and decide: reject, or accept with the plan of stages."""
    state, request = run.state, run.inp.request
    review_input = ReviewInput(
        refund_id=state.refund_id,
        merchant_id=run.inp.merchant_id,
        order_id=run.inp.order_id,
        request=request,
        as_of=workflow.now(),
        fx_rate=run.inp.fx_rate,
    )
    reserved: ReserveResult | None = None
    if run.batched:
        # The entry, the review and the refund's row (with its hold) in one local activity.
        await run.transition(RefundStatus.UNDER_REVIEW, "review_started", "review started")
        both = await workflow.execute_local_activity_method(
            RefundActivities.review_and_reserve,
            ReviewAndReserveInput(review=review_input, steps=run.take_steps()),
            start_to_close_timeout=DB_STEP,
            summary="review against order, policy and prior refunds; reserve",
        )
        result, reserved = both.review, both.reserved
        # Made when the payout follows at once; absent from results recorded before they were
        # made here, so those runs replay with local activities of their own (no patch needed).
        run.second_check, run.first_arrival = both.second_check, both.first_arrival
    else:
        result = await workflow.execute_local_activity_method(
            RefundActivities.review_refund,
            review_input,
            start_to_close_timeout=DB_STEP,
            summary="review against order, policy and prior refunds",
        )
    run.loaded, decision = result.context, result.decision
    if reserved is None:
        await run.transition(RefundStatus.UNDER_REVIEW, "review_started", "review started")
    if decision.outcome is ReviewOutcome.REJECT or decision.quote is None:
        reasons = [r.value for r in decision.reasons]
        if reserved is None:
            # Every refund has its row, a rejected one too: clients list and read it.
            await workflow.execute_local_activity_method(
                RefundActivities.reserve_refund,
                ReserveInput(
                    refund_id=state.refund_id,
                    request=request,
                    order=run.context.order,
                    quote=None,
                    policy_version=run.context.policy.version,
                    status=RefundStatus.REJECTED,
                    at=workflow.now(),
                ),
                start_to_close_timeout=DB_STEP,
                summary="record the rejected refund",
            )
        await run.finish(
            RefundStatus.REJECTED,
            "rejected",
            f"rejected by review: {', '.join(reasons)}",
            data={"reasons": reasons},
            notify=[run.customer("refund_rejected", reasons=reasons, text=decision.details)],
            release=False,
        )
        return
    state.quote = decision.quote
    state.approvers_required = (
        decision.approvers_required if decision.outcome is ReviewOutcome.NEEDS_APPROVAL else 0
    )
    state.return_required = decision.return_required
    state.supplier_check = decision.supplier_check
    state.customer_confirmation = decision.customer_confirmation
    state.tags = sorted(set(decision.tags))
    held = await (money.reserve(run) if reserved is None else money.reserved(run, reserved))
    if not held:
        return
    await run.transition(
        RefundStatus.UNDER_REVIEW,
        "accepted",
        f"accepted: {decision.outcome.value}, {run.amount(run.quote.total)}",
        data={"outcome": decision.outcome.value, "quote": state.fingerprint},
        notify=[run.customer("refund_accepted", amount=run.quote.total)],
    )
    run.advance()


async def supplier(run: Run) -> None:
    """A presale order already in production: the supplier says whether (and at what fee) it
    can still be cancelled."""
    presale = run.context.order.presale
    hours = run.context.policy.presale.supplier_response_hours
    await run.enter(
        "supplier_asked",
        f"asked supplier {presale.supplier_ref if presale else ''} to cancel production",
        notify=[Notification(channel="supplier", template="presale_cancel_request")],
    )
    inbox = run.inbox
    if not await run.wait(
        lambda: inbox.supplier is not None, timedelta(hours=hours), "supplier deadline"
    ):
        await run.escalate(f"supplier did not answer within {hours} hours")
        return
    if inbox.cancel is not None:
        await run.cancelled()
        return
    answer, inbox.supplier = inbox.supplier, None
    assert answer is not None
    fee = f", fee {run.amount(answer.cancellation_fee)}" if answer.cancellation_fee else ""
    await run.record(
        "supplier_answered",
        f"supplier {answer.supplier_ref} "
        f"{'can' if answer.can_cancel else 'cannot'} cancel{fee}: {answer.note}".rstrip(": "),
        actor=answer.supplier_ref,
        data=answer.model_dump(),
    )
    if not answer.can_cancel:
        await run.escalate(f"supplier refused the cancellation: {answer.note}".rstrip(": "))
        return
    if answer.cancellation_fee:
        before = run.quote.total
        if not await money.requote(
            run,
            Deduction(
                kind="presale_cancellation_fee", amount=answer.cancellation_fee, note=answer.note
            ),
        ):
            return
        await _repriced(run, before, "cancellation fee")
    run.advance()


def _decided(run: Run) -> bool:
    state = run.state
    return (
        len(state.current_approvals()) >= state.approvers_required
        or state.current_rejection() is not None
    )


async def approval(run: Run) -> None:
    """Enough different approvers approve the current quote, or one rejects it. A reminder
    after the SLA's first mark, escalation after its second."""
    state = run.state
    sla = run.context.policy.approval_sla
    await run.enter(
        "approval_requested",
        f"waiting for {state.approvers_required} approval(s)",
        notify=[
            Notification(
                channel="approver",
                template="approval_requested",
                params={"refund_id": state.refund_id, "amount": run.quote.total},
            )
        ],
    )
    remind = timedelta(hours=sla.remind_after_hours)
    if not await run.wait(lambda: _decided(run), remind, "approval reminder"):
        await run.record(
            "approval_reminder",
            "approval reminder sent",
            notify=[Notification(channel="approver", template="approval_reminder")],
        )
        rest = timedelta(hours=sla.escalate_after_hours) - remind
        if not await run.wait(lambda: _decided(run), rest, "approval escalation"):
            await run.escalate(f"no decision within {sla.escalate_after_hours} hours")
            return
    if run.inbox.cancel is not None:
        await run.cancelled()
        return
    rejection = state.current_rejection()
    if rejection is not None:
        await run.finish(
            RefundStatus.REJECTED,
            "rejected",
            f"rejected by {rejection.approver_id}",
            actor=rejection.approver_id,
            notify=[
                run.customer(
                    "refund_rejected", reasons=["APPROVER_REJECTED"], text=rejection.comment
                )
            ],
        )
        return
    await run.record(
        "approved",
        "approved by " + ", ".join(a.approver_id for a in state.current_approvals()),
        notify=[run.customer("refund_approved", amount=run.quote.total)],
    )
    run.advance()


async def return_goods(run: Run) -> None:
    """The goods come back by the deadline and the warehouse inspects them; damage is deducted
    and sends the refund back for approval."""
    state, inbox = run.state, run.inbox
    days = run.context.policy.returns.deadline_days
    deadline = (workflow.now() + timedelta(days=days)).date().isoformat()
    await run.enter(
        "return_requested",
        f"waiting for the goods to come back by {deadline}",
        notify=[run.customer("return_instructions", deadline=deadline)],
    )
    if not await run.wait(
        lambda: inbox.inspection is not None, timedelta(days=days), "return deadline"
    ):
        await run.finish(
            RefundStatus.CANCELLED,
            "return_deadline_passed",
            f"goods not returned by {deadline}",
            notify=[run.customer("refund_cancelled_no_return", deadline=deadline)],
        )
        return
    if inbox.cancel is not None:
        await run.cancelled()
        return
    report, inbox.inspection = inbox.inspection, None
    assert report is not None
    deducted = f", deduction {run.amount(report.deduction)}" if report.deduction else ""
    await run.record(
        "return_inspected",
        f"goods back, {report.condition.lower()}{deducted}: {report.note}".rstrip(": "),
        actor=report.inspector_id,
        data=report.model_dump(),
    )
    if not report.deduction:
        run.advance()
        return
    before = run.quote.total
    damage = Deduction(kind="inspection_damage", amount=report.deduction, note=report.note)
    if not await money.requote(run, damage):
        return
    # A changed amount needs a person's approval again, whatever review said.
    state.approvers_required = max(1, state.approvers_required)
    state.completed_stages = [
        stage for stage in [*state.completed_stages, Stage.RETURN] if stage is not Stage.APPROVAL
    ]
    await _repriced(run, before, "inspection deduction; back to approval")
    run.state.stage = Stage.APPROVAL


async def customer_confirmation(run: Run) -> None:
    """A large refund: the customer confirms the amount before it is paid."""
    inbox = run.inbox
    days = run.context.policy.customer_confirmation.deadline_days
    await run.enter(
        "customer_confirmation_requested",
        f"asked the customer to confirm {run.amount(run.quote.total)}",
        notify=[run.customer("confirm_amount", amount=run.quote.total)],
    )
    if not await run.wait(
        lambda: inbox.confirmation is not None,
        timedelta(days=days),
        "customer confirmation deadline",
    ):
        await run.escalate(f"customer did not confirm within {days} days")
        return
    if inbox.cancel is not None:
        await run.cancelled()
        return
    answer, inbox.confirmation = inbox.confirmation, None
    assert answer is not None
    await run.record(
        "customer_confirmed" if answer.confirmed else "customer_declined",
        f"customer {'confirmed' if answer.confirmed else 'declined'} "
        f"{run.amount(run.quote.total)}: {answer.note}".rstrip(": "),
        actor="customer",
        data=answer.model_dump(),
    )
    if not answer.confirmed:
        await run.escalate(f"customer declined the amount: {answer.note}".rstrip(": "))
        return
    run.advance()


async def _repriced(run: Run, before: int, why: str) -> None:
    await run.record(
        "requoted",
        f"total {run.amount(before)} -> {run.amount(run.quote.total)} ({why})",
        data={"before": before, "after": run.quote.total, "quote": run.state.fingerprint},
    )
