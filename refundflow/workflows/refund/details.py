"""What the Temporal UI shows as a refund run's current details, refreshed at every timeline
entry and every wait (docs/architecture.md, "Visibility")."""

from __future__ import annotations

from collections.abc import Callable

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from refundflow.domain.states import PayoutStatus, RefundState, RefundStatus, Stage


def current_details(state: RefundState, amount: Callable[[int], str], waiting_for: str) -> str:
    """``amount`` formats minor units in the refund's currency; ``waiting_for`` is what the
    run waits on, if it waits."""
    lines = [f"**{state.status.value}** at stage `{state.stage.value}`"]
    if state.quote is not None:
        lines.append(f"amount {amount(state.quote.total)}")
    if state.stage is Stage.APPROVAL:
        lines.append(f"approvals {len(state.current_approvals())}/{state.approvers_required}")
    if state.payouts:
        latest = state.latest_payouts()
        done = sum(p.status is PayoutStatus.SETTLED for p in latest)
        lines.append(f"payouts settled {done}/{len(latest)}")
    if state.expected_by:
        lines.append(f"expected by {state.expected_by}")
    pending = [p for p in state.latest_payouts() if p.status is PayoutStatus.PENDING]
    if pending and pending[0].due_at is not None:
        lines.append(f"installment {pending[0].installment} due {pending[0].due_at.date()}")
    if state.status is RefundStatus.NEEDS_ATTENTION:
        lines.append(f"needs attention: {state.escalation_reason}")
    if waiting_for:
        lines.append(f"waiting for {waiting_for}")
    return "\n\n".join(lines)
