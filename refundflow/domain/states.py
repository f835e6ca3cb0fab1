"""Refund statuses, the messages a running refund accepts, and the rules that refuse them.

The workflow keeps a :class:`RefundState` and asks the pure ``refusal_*`` functions whether a
message may be applied; the Update validators, the Signal handlers and the API all give the same
answer because they all ask here.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from refundflow.domain.money import CurrencyCode, Minor
from refundflow.domain.orders import BankAccount, Destination, PaymentMethod
from refundflow.domain.quote import Quote


class RefundStatus(StrEnum):
    RECEIVED = "RECEIVED"
    UNDER_REVIEW = "UNDER_REVIEW"
    REJECTED = "REJECTED"
    AWAITING_SUPPLIER = "AWAITING_SUPPLIER"
    AWAITING_APPROVAL = "AWAITING_APPROVAL"
    AWAITING_RETURN = "AWAITING_RETURN"
    AWAITING_CUSTOMER = "AWAITING_CUSTOMER"
    PAYING = "PAYING"
    AWAITING_FUNDS = "AWAITING_FUNDS"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"
    NEEDS_ATTENTION = "NEEDS_ATTENTION"


TERMINAL = frozenset({RefundStatus.REJECTED, RefundStatus.COMPLETED, RefundStatus.CANCELLED})


class Stage(StrEnum):
    """Where the refund is in its life; the status says how it is doing there."""

    REVIEW = "review"
    SUPPLIER = "supplier"
    APPROVAL = "approval"
    RETURN = "return"
    CUSTOMER = "customer"
    PAYOUT = "payout"
    FOLLOW_UP = "follow_up"
    DONE = "done"


STAGE_STATUS = {
    Stage.REVIEW: RefundStatus.UNDER_REVIEW,
    Stage.SUPPLIER: RefundStatus.AWAITING_SUPPLIER,
    Stage.APPROVAL: RefundStatus.AWAITING_APPROVAL,
    Stage.RETURN: RefundStatus.AWAITING_RETURN,
    Stage.CUSTOMER: RefundStatus.AWAITING_CUSTOMER,
    Stage.PAYOUT: RefundStatus.PAYING,
    Stage.FOLLOW_UP: RefundStatus.AWAITING_FUNDS,
}


class PayoutStatus(StrEnum):
    """One status model for every provider (DESIGN 11)."""

    PENDING = "pending"  # key registered, not sent yet
    ACCEPTED = "accepted"
    SETTLED = "settled"
    FAILED_RETRYABLE = "failed_retryable"
    FAILED_PERMANENT = "failed_permanent"
    UNKNOWN = "unknown"
    NOT_FOUND = "not_found"  # a query found no refund under this key


class _Msg(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


Actor = Annotated[str, Field(min_length=1, max_length=128)]
Note = Annotated[str, Field(max_length=2000)]


class ApprovalDecision(_Msg):
    approver_id: Actor
    decision: Literal["APPROVE", "REJECT"]
    quote_fingerprint: str
    """The quote the approver looked at; a decision on an older quote is refused."""
    comment: Note = ""


class SupplierResponse(_Msg):
    supplier_ref: Actor
    can_cancel: bool
    cancellation_fee: Minor = 0
    note: Note = ""


class ReturnInspection(_Msg):
    inspector_id: Actor
    condition: Literal["OK", "DAMAGED"] = "OK"
    deduction: Minor = 0
    """Taken off the refund for damage; a deduction sends the refund back for approval."""
    note: Note = ""


class CustomerConfirmation(_Msg):
    confirmed: bool
    note: Note = ""


class ReceiptReport(_Msg):
    received: bool
    note: Note = ""


class CancelRequest(_Msg):
    requested_by: Actor
    reason: Note = ""


OpsActionKind = Literal["retry_payout", "switch_destination", "mark_settled", "cancel", "resume"]


class OpsAction(_Msg):
    actor: Actor
    action: OpsActionKind
    destination: Destination | None = None
    """For ``switch_destination``."""
    reference: Note = ""
    """For ``mark_settled``: the out-of-band payment reference."""
    note: Note = ""


class PayoutEvent(_Msg):
    """A provider's word on a payout, from a webhook or a poll."""

    payout_key: str
    status: PayoutStatus
    provider_ref: str = ""
    trace_ref: str = ""
    code: str = ""
    event_id: str = ""
    amount: int | None = None
    """What the provider says it refunded, in minor units of ``currency``, when it says."""
    currency: str = ""


class PayoutRecord(BaseModel):
    seq: int
    installment: int
    generation: int
    key: str
    route: PaymentMethod
    amount: int
    payout_currency: CurrencyCode
    payout_amount: int
    status: PayoutStatus = PayoutStatus.PENDING
    provider_ref: str = ""
    trace_ref: str = ""
    code: str = ""
    bank_account: BankAccount | None = None
    """Where a ``bank_transfer`` payout goes (the request's account, or one ops switched to)."""
    due_at: datetime | None = None
    sent_at: datetime | None = None
    settled_at: datetime | None = None
    expected_by: str | None = None


class ApprovalRecord(BaseModel):
    approver_id: str
    decision: Literal["APPROVE", "REJECT"]
    quote_fingerprint: str
    at: datetime
    comment: str = ""


class TimelineEntry(BaseModel):
    at: datetime
    kind: str
    status: RefundStatus
    message: str
    actor: str = "system"
    data: dict[str, Any] = {}


def payout_key(refund_id: str, seq: int, generation: int) -> str:
    """The business idempotency key sent to the provider as its refund number (DESIGN 8)."""
    return f"{refund_id}:{seq}:{generation}"


class Refusal(BaseModel):
    """Why a message was not applied. ``code`` is stable."""

    model_config = ConfigDict(frozen=True)

    code: str
    message: str


class Inbox(BaseModel):
    """Messages received and not yet acted on. Part of the state, so none is lost on
    continue-as-new."""

    supplier: SupplierResponse | None = None
    inspection: ReturnInspection | None = None
    confirmation: CustomerConfirmation | None = None
    ops: OpsAction | None = None
    cancel: CancelRequest | None = None
    receipts: list[ReceiptReport] = []
    events: list[PayoutEvent] = []
    marks: list[OpsAction] = []
    """``mark_settled`` outside an escalation: applied as events, recorded with their actor."""


class FollowUpState(BaseModel):
    polls: int = 0
    interval_seconds: int
    next_poll_at: datetime
    final_at: datetime
    delay_noticed_for: str | None = None


class RefundState(BaseModel):
    """Everything the workflow knows; carried across continue-as-new."""

    refund_id: str
    requested_by: str
    status: RefundStatus = RefundStatus.RECEIVED
    stage: Stage = Stage.REVIEW
    escalated_from: Stage | None = None
    escalation_reason: str = ""
    quote: Quote | None = None
    approvers_required: int = 0
    approvers: list[str] = []
    """Who may approve for this merchant (refreshed when approval starts)."""
    approvals: list[ApprovalRecord] = []
    return_required: bool = False
    supplier_check: bool = False
    customer_confirmation: bool = False
    tags: list[str] = []
    payouts: list[PayoutRecord] = []
    first_payout_at: datetime | None = None
    expected_by: str | None = None
    """Latest expected-arrival date (ISO) of the last payout sent."""
    customer_confirmed_receipt: bool = False
    not_received_reports: int = 0
    completed_stages: list[Stage] = []
    inbox: Inbox = Inbox()
    follow_up: FollowUpState | None = None
    timeline: list[TimelineEntry] = []

    @property
    def fingerprint(self) -> str:
        return self.quote.fingerprint() if self.quote else ""

    def current_approvals(self) -> list[ApprovalRecord]:
        fp = self.fingerprint
        return [a for a in self.approvals if a.quote_fingerprint == fp and a.decision == "APPROVE"]

    def current_rejection(self) -> ApprovalRecord | None:
        fp = self.fingerprint
        return next(
            (a for a in self.approvals if a.quote_fingerprint == fp and a.decision == "REJECT"),
            None,
        )

    def any_payout_sent(self) -> bool:
        return any(
            p.sent_at is not None or p.status is not PayoutStatus.PENDING for p in self.payouts
        )

    def open_payouts(self) -> list[PayoutRecord]:
        return [p for p in self.payouts if p.status not in _CLOSED_PAYOUT]

    def latest_payouts(self) -> list[PayoutRecord]:
        """The newest generation of each tranche: what counts for the customer."""
        latest: dict[int, PayoutRecord] = {}
        for p in self.payouts:
            if p.seq not in latest or p.generation > latest[p.seq].generation:
                latest[p.seq] = p
        return [latest[s] for s in sorted(latest)]


_CLOSED_PAYOUT = frozenset({PayoutStatus.SETTLED, PayoutStatus.FAILED_PERMANENT})


def refusal_for_decision(
    state: RefundState, msg: ApprovalDecision, *, check_roster: bool = True
) -> Refusal | None:
    """``check_roster`` compares the approver with the roster loaded at the run's start; a
    caller that authenticated the approver itself (the API, by key role) skips it."""
    if state.stage is not Stage.APPROVAL or state.status in TERMINAL:
        return Refusal(
            code="wrong_state", message=f"refund is not awaiting approval (status {state.status})"
        )
    if check_roster and state.approvers and msg.approver_id not in state.approvers:
        return Refusal(
            code="unknown_approver", message=f"{msg.approver_id} is not an approver here"
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
    if state.stage is not Stage.FOLLOW_UP and state.status is not RefundStatus.COMPLETED:
        return Refusal(code="wrong_state", message="no payout has been sent yet")
    if state.status is RefundStatus.COMPLETED:
        return Refusal(code="wrong_state", message="the refund is already completed")
    return None


def refusal_for_cancel(state: RefundState) -> Refusal | None:
    if state.status in TERMINAL:
        return Refusal(code="wrong_state", message=f"refund is already {state.status}")
    if state.any_payout_sent() and not _all_failed(state):
        return Refusal(
            code="payout_already_sent",
            message="money has already been sent; a refund can be cancelled only before payout",
        )
    return None


def _all_failed(state: RefundState) -> bool:
    return all(p.status is PayoutStatus.FAILED_PERMANENT for p in state.payouts)


def refusal_for_ops(state: RefundState, msg: OpsAction) -> Refusal | None:
    if msg.action == "cancel":
        return refusal_for_cancel(state)
    if msg.action == "mark_settled":
        if state.stage in (Stage.PAYOUT, Stage.FOLLOW_UP) and state.status not in TERMINAL:
            return None
        return Refusal(code="wrong_state", message="only a refund being paid can be marked settled")
    if state.status is not RefundStatus.NEEDS_ATTENTION:
        return Refusal(
            code="wrong_state",
            message=f"{msg.action} resolves NEEDS_ATTENTION, status is {state.status}",
        )
    if msg.action in ("retry_payout", "switch_destination") and state.stage is not Stage.PAYOUT:
        return Refusal(code="wrong_state", message=f"{msg.action} applies to a failed payout")
    unknown = any(p.status is PayoutStatus.UNKNOWN for p in state.latest_payouts())
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
