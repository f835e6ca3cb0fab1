"""Follow-up: after the payouts are sent, until the customer really has the money.

One step per call (the run loop checks for continue-as-new between steps): apply what arrived,
then complete, tell the customer of a delay, poll the provider, escalate, or wait.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from refundflow.domain.follow_up import (
        FollowUpAction,
        after_poll,
        follow_up_step,
        start_follow_up,
    )
    from refundflow.domain.states import PayoutStatus, RefundStatus, Stage

from refundflow.workflows.refund import money
from refundflow.workflows.refund.effects import Run
from refundflow.workflows.refund.payouts import apply_news, poll_open_payouts, update_payout


async def follow_up(run: Run) -> None:
    state = run.state
    policy = run.context.policy.follow_up
    await run.enter("awaiting_funds", f"waiting for funds, expected by {state.expected_by}")
    if state.follow_up is None:
        planned = state.first_poll_seconds
        first_poll = timedelta(seconds=planned) if planned else None
        state.follow_up = start_follow_up(policy, workflow.now(), first_poll)
    await apply_news(run)
    if state.status is RefundStatus.NEEDS_ATTENTION or state.stage is not Stage.FOLLOW_UP:
        return  # escalated, or back to paying a fallback
    if run.inbox.receipts:
        await _receipt(run)
        return
    step = follow_up_step(state, policy, workflow.now())
    if step.action is FollowUpAction.COMPLETE:
        await run.complete()
    elif step.action is FollowUpAction.DELAY_NOTICE:
        state.follow_up = state.follow_up.model_copy(
            update={"delay_noticed_for": state.expected_by}
        )
        await run.record(
            "delay_notice",
            f"funds not confirmed by {state.expected_by}; customer told",
            notify=[run.customer("refund_delayed", expected_by=state.expected_by)],
        )
    elif step.action is FollowUpAction.ESCALATE:
        await run.escalate(f"funds not confirmed after {state.follow_up.polls} checks")
    elif step.action is FollowUpAction.POLL:
        await poll_open_payouts(run)
        state.follow_up = after_poll(state.follow_up, policy, workflow.now())
    else:
        assert step.wake_at is not None
        await run.wait_for_news(step.wake_at, "follow-up", receipts=True)


async def _receipt(run: Run) -> None:
    """The customer's word: the money arrived (complete, whatever the providers said), or it
    has not (a trace reference and a new expected date)."""
    state = run.state
    report = run.inbox.receipts.pop(0)
    if report.received:
        state.customer_confirmed_receipt = True
        await run.record(
            "receipt_confirmed", "customer confirmed the money arrived", actor="customer"
        )
        for record in state.latest_payouts():
            if record.status is not PayoutStatus.SETTLED:
                await update_payout(run, record, PayoutStatus.SETTLED, "", "", "CUSTOMER_CONFIRMED")
        return
    state.not_received_reports += 1
    await money.plan_arrival(run, [p.route for p in state.latest_payouts()], widen=False)
    traces = [p.trace_ref or p.provider_ref for p in state.latest_payouts()]
    await run.record(
        "not_received",
        f"customer reports no money yet; follow-up reopened until {state.expected_by}",
        actor="customer",
        data={"note": report.note},
        notify=[run.customer("trace_reference", trace_refs=traces, expected_by=state.expected_by)],
    )
