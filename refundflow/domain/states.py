"""Refund statuses and stages, the messages a running refund accepts, and the state a run keeps.

The rules that refuse a message live in :mod:`refundflow.domain.refusals`; what the run does next
in :mod:`refundflow.domain.stages` and :mod:`refundflow.domain.payout_rules`.
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
    CUSTOMER_CONFIRMATION = "customer_confirmation"
    PAYOUT = "payout"
    FOLLOW_UP = "follow_up"
    DONE = "done"


STAGE_STATUS = {
    Stage.REVIEW: RefundStatus.UNDER_REVIEW,
    Stage.SUPPLIER: RefundStatus.AWAITING_SUPPLIER,
    Stage.APPROVAL: RefundStatus.AWAITING_APPROVAL,
    Stage.RETURN: RefundStatus.AWAITING_RETURN,
    Stage.CUSTOMER_CONFIRMATION: RefundStatus.AWAITING_CUSTOMER,
    Stage.PAYOUT: RefundStatus.PAYING,
    Stage.FOLLOW_UP: RefundStatus.AWAITING_FUNDS,
}


class PayoutStatus(StrEnum):
    """One status model for every provider (docs/architecture.md, "Payouts")."""

    PENDING = "pending"  # key registered, not sent yet
    ACCEPTED = "accepted"
    SETTLED = "settled"
    FAILED_PERMANENT = "failed_permanent"
    UNKNOWN = "unknown"
    NOT_FOUND = "not_found"  # a query found no refund under this key


class MessageResult(BaseModel):
    """What an Update of the refund's run answers: whether the message was taken, and the
    refund's status. Here, not in the workflow module, so the sandbox does not rebuild it for
    every run."""

    accepted: bool
    status: RefundStatus
    detail: str = ""


class _Msg(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


Actor = Annotated[str, Field(min_length=1, max_length=128)]
Note = Annotated[str, Field(max_length=2000)]


class ApprovalDecisionBody(_Msg):
    """A decision as the approver sends it; :class:`ApprovalDecision` adds who decided."""

    decision: Literal["APPROVE", "REJECT"]
    """APPROVE pays the quote named by ``quote_fingerprint``; REJECT ends the refund."""
    quote_fingerprint: Annotated[str, Field(max_length=128)]
    """The quote the approver looked at; a decision on an older quote is refused."""
    comment: Note = ""
    """The approver's reason, on the refund's timeline."""


class ApprovalDecision(ApprovalDecisionBody):
    approver_id: Actor


class SupplierResponse(_Msg):
    supplier_ref: Actor
    """The supplier who answered (1 to 128 characters)."""
    can_cancel: bool
    """Whether the supplier can still cancel the order."""
    cancellation_fee: Minor = 0
    note: Note = ""
    """The supplier's words, for the timeline."""


class ReturnInspectionBody(_Msg):
    """An inspection as the warehouse sends it; :class:`ReturnInspection` adds who inspected."""

    condition: Literal["OK", "DAMAGED"] = "OK"
    """The goods' condition on arrival."""
    deduction: Minor = 0
    """Taken off the refund for damage; a deduction sends the refund back for approval."""
    note: Note = ""
    """The inspector's notes, for the timeline."""


class ReturnInspection(ReturnInspectionBody):
    inspector_id: Actor


class CustomerConfirmation(_Msg):
    confirmed: bool
    """True accepts the amount; false declines it (the refund escalates to ops)."""
    note: Note = ""
    """The customer's words, for the timeline."""


class ReceiptReport(_Msg):
    received: bool
    """True: the money arrived (the refund completes); false: it has not (trace references are
    sent)."""
    note: Note = ""
    """The customer's words, for the timeline."""


class CancelRequestBody(_Msg):
    """A cancel as the client or ops sends it; :class:`CancelRequest` adds who asked."""

    reason: Note = ""
    """Why the refund is cancelled, for the timeline."""


class CancelRequest(CancelRequestBody):
    requested_by: Actor


OpsActionKind = Literal["retry_payout", "switch_destination", "mark_settled", "cancel", "resume"]


class OpsActionBody(_Msg):
    """A repair as ops sends it; :class:`OpsAction` adds who acted."""

    action: OpsActionKind
    """The repair: retry_payout, switch_destination, mark_settled, cancel or resume."""
    destination: Destination | None = None
    """For ``switch_destination``."""
    reference: Note = ""
    """For ``mark_settled``: the out-of-band payment reference."""
    note: Note = ""
    """Ops' notes, for the timeline."""


class OpsAction(OpsActionBody):
    actor: Actor


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
    """The business idempotency key sent to the provider as its refund number (docs/architecture.md,
    "Payouts")."""
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
    """``mark_settled`` outside an escalation, applied with the provider's events."""
    unmatched: list[PayoutEvent] = []
    """Events for a payout key this run has not recorded yet (the provider answered before our
    record was written); matched again whenever a payout is recorded. Bounded."""

    def has_payout_news(self) -> bool:
        """Something the payout and follow-up stages act on as it arrives."""
        return bool(self.events or self.marks or self.receipts)


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
    escalation_reason: str = ""
    quote: Quote | None = None
    approvers_required: int = 0
    approvals: list[ApprovalRecord] = []
    return_required: bool = False
    supplier_check: bool = False
    customer_confirmation: bool = False
    tags: list[str] = []
    payouts: list[PayoutRecord] = []
    first_payout_at: datetime | None = None
    expected_by: str | None = None
    """The last day (ISO) the customer should expect the money, over every payout sent."""
    first_poll_seconds: int | None = None
    """How long follow-up waits before it first asks the providers (their typical settle time,
    planned with the arrival); the policy's ``first_poll_minutes`` when not planned."""
    window_ends_at: datetime | None = None
    """When that expectation has passed: the start of the next business day after
    ``expected_by``, or the first payout itself for routes that pay at once (the balance)."""
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

    def latest_payouts(self) -> list[PayoutRecord]:
        """The newest generation of each tranche: what counts for the customer."""
        latest: dict[int, PayoutRecord] = {}
        for p in self.payouts:
            if p.seq not in latest or p.generation > latest[p.seq].generation:
                latest[p.seq] = p
        return [latest[s] for s in sorted(latest)]
