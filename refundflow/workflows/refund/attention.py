"""NEEDS_ATTENTION: the run waits for ops, applying providers' news meanwhile, and carries out
the repair they choose (docs/architecture.md, "Escalation and repair")."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from refundflow.domain.payout_rules import needs_repair, route_for_destination
    from refundflow.domain.states import (
        STAGE_STATUS,
        OpsAction,
        PayoutStatus,
        RefundStatus,
        Stage,
    )

from refundflow.workflows.refund.effects import Run
from refundflow.workflows.refund.payouts import apply_news, mark_settled, new_generation


async def needs_attention(run: Run) -> None:
    inbox = run.inbox
    await run.park(
        lambda: inbox.ops is not None or inbox.cancel is not None or inbox.has_payout_news(),
        None,
        "an ops decision",
    )
    if inbox.cancel is not None:
        await run.cancelled()
        return
    if inbox.ops is None:
        await apply_news(run)  # a late settlement or failure is on record before ops decide
        return
    action, inbox.ops = inbox.ops, None
    if action.action == "mark_settled":
        await _settled_by_ops(run, action)
    elif action.action in ("retry_payout", "switch_destination"):
        await _pay_again(run, action)
    else:
        # resume: back into the stage that escalated; its wait starts over with fresh deadlines.
        run.state.follow_up = None
        await run.transition(
            STAGE_STATUS[run.state.stage], "resumed", _note(action), actor=action.actor
        )


def _note(action: OpsAction) -> str:
    return f"{action.action} by {action.actor}: {action.note}".rstrip(": ")


async def _settled_by_ops(run: Run, action: OpsAction) -> None:
    await mark_settled(run, action)
    if all(p.status is PayoutStatus.SETTLED for p in run.state.latest_payouts()):
        await run.complete()
        return
    # Tranches not sent yet are still the run's to pay.
    run.state.stage = Stage.PAYOUT
    await run.transition(RefundStatus.PAYING, "payout_resumed", _note(action), actor=action.actor)


async def _pay_again(run: Run, action: OpsAction) -> None:
    """An unknown outcome is sent again under the same key (the send asks the provider first);
    a failed tranche gets a new generation, on the destination ops chose."""
    state = run.state
    first_routes = {p.seq: p.route for p in state.payouts if p.generation == 1}
    account = action.destination.bank_account if action.destination else None
    for record in [p for p in state.latest_payouts() if needs_repair(p)]:
        if record.status is PayoutStatus.UNKNOWN:
            record.status = PayoutStatus.PENDING
            continue
        route = record.route
        if action.destination is not None:
            route = route_for_destination(action.destination.kind, first_routes[record.seq])
        new_generation(run, record, route, account)
    state.stage = Stage.PAYOUT
    await run.transition(RefundStatus.PAYING, action.action, _note(action), actor=action.actor)
