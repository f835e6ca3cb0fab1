"""What the run does with a provider's word on a payout, and where a failed payout goes next.

Pure rules, called from workflow code: they decide which commands a run issues, so a change
here is a change of workflow code (docs/architecture.md, "Versioning").
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from refundflow.domain.orders import DestinationKind, PaymentMethod
from refundflow.domain.policy import FallbackAction
from refundflow.domain.states import PayoutEvent, PayoutRecord, PayoutStatus, RefundState

REVERSED = "REVERSED_"
"""Prefix of a settled payout's code once the provider reversed it (a bank return)."""

_NO_ANSWER = frozenset({PayoutStatus.NOT_FOUND, PayoutStatus.UNKNOWN, PayoutStatus.PENDING})


class PayoutChange(StrEnum):
    """What one provider answer (webhook, poll, ops) means for our record of a payout."""

    NONE = "none"
    """Old news, or no answer at all: nothing to record."""
    UPDATED = "updated"
    """A new status short of final (accepted) or a new trace reference: save it."""
    SETTLED = "settled"
    FAILED = "failed"
    """Accepted, then refused (e.g. the card behind the account is gone): fall back."""
    REVERSED = "reversed"
    """Settled, then the money came back: our books say paid, so ops decide."""


def payout_change(
    record: PayoutRecord, status: PayoutStatus, trace_ref: str, code: str
) -> PayoutChange:
    if record.status is PayoutStatus.SETTLED:
        if status is PayoutStatus.FAILED_PERMANENT and record.code != REVERSED + code:
            return PayoutChange.REVERSED
        return PayoutChange.NONE
    if status in _NO_ANSWER or record.status is PayoutStatus.FAILED_PERMANENT:
        return PayoutChange.NONE  # a failed generation is final; a later answer repeats it
    if status is PayoutStatus.SETTLED:
        return PayoutChange.SETTLED
    if status is PayoutStatus.FAILED_PERMANENT:
        return PayoutChange.FAILED
    if status is record.status and trace_ref in ("", record.trace_ref):
        return PayoutChange.NONE
    return PayoutChange.UPDATED


def is_reversed(record: PayoutRecord) -> bool:
    return record.status is PayoutStatus.SETTLED and record.code.startswith(REVERSED)


def needs_repair(record: PayoutRecord) -> bool:
    """Failed for good, or its outcome unknown: only ops move it on."""
    return record.status in (PayoutStatus.UNKNOWN, PayoutStatus.FAILED_PERMANENT)


def event_mismatch(event: PayoutEvent, record: PayoutRecord) -> bool:
    """The provider names another amount or currency than we sent: not our payout's news."""
    wrong_amount = event.amount is not None and event.amount != record.payout_amount
    return wrong_amount or bool(event.currency and event.currency != record.payout_currency)


def fallback_route(
    actions: Sequence[FallbackAction], *, tried: set[PaymentMethod], has_bank_account: bool
) -> PaymentMethod | None:
    """The policy's next route for a tranche that failed for good; ``None``: escalate."""
    for action in actions:
        if action is FallbackAction.ESCALATE:
            return None
        route = (
            PaymentMethod.BALANCE
            if action is FallbackAction.BALANCE
            else PaymentMethod.BANK_TRANSFER
        )
        if route in tried or (route is PaymentMethod.BANK_TRANSFER and not has_bank_account):
            continue
        return route
    return None


def route_for_destination(kind: DestinationKind, original: PaymentMethod) -> PaymentMethod:
    """Where ops send a tranche again: the balance, a bank account, or its original route."""
    if kind is DestinationKind.BALANCE:
        return PaymentMethod.BALANCE
    if kind is DestinationKind.BANK_TRANSFER:
        return PaymentMethod.BANK_TRANSFER
    return original


def next_pending(state: RefundState) -> PayoutRecord | None:
    """The tranche to send next: the lowest ``seq`` whose newest generation is not sent."""
    return next((p for p in state.latest_payouts() if p.status is PayoutStatus.PENDING), None)


def next_generation(state: RefundState, seq: int) -> int:
    return max((p.generation for p in state.payouts if p.seq == seq), default=0) + 1
