"""The steps that move or plan money: reserving the quote, requoting after a deduction, the
expected arrival, our record of each payout. Each is a local activity; the decisions among them
(requote, arrival) are recorded in history (docs/architecture.md, "What runs where")."""

from __future__ import annotations

from datetime import date

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from refundflow.activities import decisions
    from refundflow.activities.contracts import (
        ArrivalInput,
        DbStep,
        RecordPayoutInput,
        RequoteInput,
        ReserveInput,
        ReserveResult,
    )
    from refundflow.activities.refund import RefundActivities
    from refundflow.domain.calendar import ArrivalPlan
    from refundflow.domain.orders import PaymentMethod
    from refundflow.domain.quote import Deduction
    from refundflow.domain.states import PayoutRecord, PayoutStatus, RefundStatus

from refundflow.workflows.refund.effects import DB_STEP, Run


async def reserve(run: Run) -> bool:
    """Hold the quote's amounts on the order's tenders; a refund that would take more than
    is left ends here, rejected."""
    result = await workflow.execute_local_activity_method(
        RefundActivities.reserve_refund,
        ReserveInput(
            refund_id=run.state.refund_id,
            request=run.inp.request,
            order=run.context.order,
            quote=run.quote,
            policy_version=run.context.policy.version,
            status=run.state.status,
            at=workflow.now(),
        ),
        start_to_close_timeout=DB_STEP,
        summary=f"reserve {run.amount(run.quote.total)}",
    )
    return await reserved(run, result)


async def reserved(run: Run, result: ReserveResult) -> bool:
    """The reservation's outcome: a refund that would take more than is left ends here."""
    if not result.ok:
        await run.finish(
            RefundStatus.REJECTED,
            "rejected",
            f"rejected: {result.message}",
            data={"code": result.code},
            notify=[
                run.customer(
                    "refund_rejected", reasons=["AMOUNT_ABOVE_REMAINING"], text=result.message
                )
            ],
            release=False,
        )
    return result.ok


async def requote(run: Run, deduction: Deduction) -> bool:
    """The quote again with ``deduction``, reserved; escalates when it cannot apply."""
    result = await workflow.execute_local_activity(
        decisions.requote,
        RequoteInput(
            context=run.context,
            request=run.inp.request,
            deductions=[*run.quote.deductions, deduction],
            fx_rate=run.inp.fx_rate,
        ),
        start_to_close_timeout=DB_STEP,
        summary=f"requote with {deduction.kind}",
    )
    if result.quote is None:
        await run.escalate(f"cannot apply {deduction.kind}: {result.error}")
        return False
    run.state.quote = result.quote
    return await reserve(run)


async def plan_arrival(run: Run, routes: list[PaymentMethod], *, widen: bool = True) -> ArrivalPlan:
    """When money sent today through ``routes`` should arrive; recorded on the state.
    ``widen`` keeps what earlier payouts promised (a new payout never shortens it)."""
    state = run.state
    previous = state.expected_by if widen else None
    asked = ArrivalInput(
        start=workflow.now().date(),
        routes=routes,
        open_routes=[p.route for p in state.latest_payouts()],
        policy=run.context.policy,
        country=run.context.order.country,
        not_before=date.fromisoformat(previous) if previous else None,
    )
    ahead, run.first_arrival = run.first_arrival, None
    if ahead is not None and ahead.answers(asked):
        plan = ahead.plan  # worked out with the review, on the same question
    else:
        plan = await workflow.execute_local_activity(
            decisions.plan_arrival,
            asked,
            start_to_close_timeout=DB_STEP,
            summary="expected arrival",
        )
    state.expected_by = plan.latest.isoformat()
    state.window_ends_at = plan.window_ends_at
    state.first_poll_seconds = plan.first_poll_seconds
    return plan


async def save_payout(run: Run, record: PayoutRecord, charges: dict[str, int]) -> None:
    """Our record of a payout, before it is sent (its key registered) and after each answer.
    Settling consumes ``charges`` from the refund's holds."""
    pending = record.status is PayoutStatus.PENDING
    write = RecordPayoutInput(
        refund_id=run.state.refund_id,
        # A copy: the batch is written later, the record may change meanwhile.
        record=record.model_copy(),
        charges=charges,
        at=workflow.now(),
    )
    if run.batched:
        run.write(DbStep(register_payout=write) if pending else DbStep(record_payout=write))
        return
    step = RefundActivities.register_payout if pending else RefundActivities.record_payout
    await workflow.execute_local_activity_method(
        step,
        write,
        start_to_close_timeout=DB_STEP,
        summary=f"{record.key} {record.status.value}",
    )
