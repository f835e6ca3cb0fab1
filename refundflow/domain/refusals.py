"""Whether a running refund accepts a message now, and why not.

The run's Update validators ask here, and so the API's answer is the run's answer: a refused
message changes nothing and comes back with a stable ``code``.
"""

from __future__ import annotations

from refundflow.domain.payout_rules import is_reversed, needs_repair
from refundflow.domain.states import (
    TERMINAL,
    ApprovalDecision,
    OpsAction,
    PayoutStatus,
    RefundState,
    RefundStatus,
    Refusal,
    Stage,
)

_SENT_UNSETTLED = frozenset(
    {PayoutStatus.ACCEPTED, PayoutStatus.UNKNOWN, PayoutStatus.FAILED_PERMANENT}
)


def refusal_for_decision(state: RefundState, msg: ApprovalDecision) -> Refusal | None:
    """The approver was authenticated by the caller (the API checks the key's role and merchant
    at the moment of the decision); the run checks what only it knows."""
    if state.stage is not Stage.APPROVAL or state.status in TERMINAL:
        return Refusal(
            code="wrong_state", message=f"refund is not awaiting approval (status {state.status})"
        )
    if msg.approver_id == state.requested_by:
        return Refusal(code="self_approval", message="nobody approves a refund they requested")
    if msg.quote_fingerprint != state.fingerprint:
        return Refusal(
            code="outdated_quote",
            message="the quote changed since this decision was made; review the new quote",
        )
    if any(a.approver_id == msg.approver_id for a in state.current_approvals()):
        return Refusal(code="repeated_approver", message=f"{msg.approver_id} already approved")
    return None


def refusal_for_stage(state: RefundState, stage: Stage, what: str) -> Refusal | None:
    if state.stage is not stage or state.status in TERMINAL:
        return Refusal(
            code="wrong_state",
            message=f"{what} is not expected now (status {state.status}, stage {state.stage})",
        )
    return None


def refusal_for_receipt(state: RefundState) -> Refusal | None:
    if state.status is RefundStatus.COMPLETED:
        return Refusal(code="wrong_state", message="the refund is already completed")
    if state.stage is not Stage.FOLLOW_UP:
        return Refusal(code="wrong_state", message="no payout has been sent yet")
    return None


def refusal_for_cancel(state: RefundState) -> Refusal | None:
    """A refund is cancelled only before its first payout is recorded. Once a payout exists it
    may be at the provider (sending, retried, or about to be), so cancelling could no longer
    promise that no money moves; the one exception is a refund whose every payout failed for
    good, where nothing was paid and nothing is in flight."""
    if state.status in TERMINAL:
        return Refusal(code="wrong_state", message=f"refund is already {state.status}")
    all_failed = all(p.status is PayoutStatus.FAILED_PERMANENT for p in state.payouts)
    if state.payouts and not all_failed:
        return Refusal(
            code="payout_already_sent",
            message="a payout has been started; a refund can be cancelled only before payout",
        )
    return None


def payouts_to_mark(state: RefundState) -> list[int]:
    """Tranches (``seq``) that ``mark_settled`` confirms paid: sent and not settled yet, or
    settled and then reversed by the provider. A tranche not sent yet is still paid by the run."""
    return [p.seq for p in state.latest_payouts() if p.status in _SENT_UNSETTLED or is_reversed(p)]


def refusal_for_ops(state: RefundState, msg: OpsAction) -> Refusal | None:
    if msg.action == "cancel":
        return refusal_for_cancel(state)
    if msg.action == "mark_settled":
        if state.stage not in (Stage.PAYOUT, Stage.FOLLOW_UP) or state.status in TERMINAL:
            return Refusal(
                code="wrong_state", message="only a refund being paid can be marked settled"
            )
        if not payouts_to_mark(state):
            return Refusal(code="nothing_to_mark", message="no sent payout is waiting to settle")
        return None
    if state.status is not RefundStatus.NEEDS_ATTENTION:
        return Refusal(
            code="wrong_state",
            message=f"{msg.action} resolves NEEDS_ATTENTION, status is {state.status}",
        )
    stuck = [p for p in state.latest_payouts() if needs_repair(p)]
    if msg.action in ("retry_payout", "switch_destination") and not stuck:
        return Refusal(code="wrong_state", message=f"{msg.action} applies to a failed payout")
    if msg.action == "resume" and (stuck or any(is_reversed(p) for p in state.payouts)):
        return Refusal(
            code="payout_needs_repair",
            message="a payout failed or its outcome is unknown: retry it, switch it or settle it",
        )
    unknown = any(p.status is PayoutStatus.UNKNOWN for p in stuck)
    if msg.action == "switch_destination" and unknown:
        return Refusal(
            code="payout_outcome_unknown",
            message="a payout's outcome is unknown; retry it first (the provider is queried)",
        )
    if msg.action == "switch_destination" and msg.destination is None:
        return Refusal(
            code="destination_required", message="switch_destination needs a destination"
        )
    return None
