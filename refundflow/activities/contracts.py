"""Inputs and results of every activity: one model in, one model out.

The workflow calls activities by method reference, so mypy checks these against both sides.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from refundflow.domain.calendar import ArrivalPlan
from refundflow.domain.money import FxRate
from refundflow.domain.orders import BankAccount, OrderSnapshot, PaymentMethod, RefundRequest
from refundflow.domain.policy import FallbackAction, Policy
from refundflow.domain.quote import Deduction, PriorRefund, Quote
from refundflow.domain.review import ReviewDecision
from refundflow.domain.states import (
    ApprovalRecord,
    PayoutRecord,
    RefundState,
    RefundStatus,
    Stage,
)
from refundflow.gateways.base import PayoutInstruction, PayoutResult

__all__ = ["ArrivalPlan", "PayoutResult"]  # returned as the domain and the gateway give them


class ReviewInput(BaseModel):
    refund_id: str
    merchant_id: str
    order_id: str
    request: RefundRequest
    as_of: datetime
    fx_rate: FxRate | None = None


class RefundContext(BaseModel):
    """What review and the quote need, read once from the database."""

    order: OrderSnapshot
    policy: Policy
    prior_refunds: list[PriorRefund]
    recent_customer_refunds: int


class ReviewResult(BaseModel):
    """The context the run works with for its whole life, and review's decision on it: both
    recorded in history, so a later policy fix or rounding change never alters a run's past."""

    context: RefundContext
    decision: ReviewDecision


class RequoteInput(BaseModel):
    """The quote again with one more deduction (a supplier's fee, damage found on return)."""

    context: RefundContext
    request: RefundRequest
    deductions: list[Deduction]
    fx_rate: FxRate | None = None


class RequoteResult(BaseModel):
    quote: Quote | None
    """``None`` when the deduction cannot be applied; ``error`` says why."""
    error: str = ""


class FallbackInput(BaseModel):
    """A tranche failed for good: the policy's fallbacks, and what the run has tried."""

    actions: list[FallbackAction]
    tried: list[PaymentMethod]
    has_bank_account: bool


class FallbackResult(BaseModel):
    route: PaymentMethod | None
    """The route to send the tranche again by; ``None``: escalate."""


class ArrivalInput(BaseModel):
    """When money sent on ``start`` through ``routes`` should arrive (business days)."""

    start: date
    routes: list[PaymentMethod]
    open_routes: list[PaymentMethod]
    policy: Policy
    country: str
    not_before: date | None = None


class ArrivalAhead(BaseModel):
    """The first payout's expected arrival, worked out with the review for a refund that pays
    at once (``plan_arrival`` on a ``start`` and routes known then). It answers the run's own
    question only when that is the same one: the same day, routes and open routes, nothing
    promised before; policy and country are the review's context, as the run's."""

    start: date
    routes: list[PaymentMethod]
    open_routes: list[PaymentMethod]
    plan: ArrivalPlan

    def answers(self, inp: ArrivalInput) -> bool:
        asked = (inp.start, inp.routes, inp.open_routes, inp.not_before)
        return asked == (self.start, self.routes, self.open_routes, None)


class Notification(BaseModel):
    """An outbox row: delivered by the notification issue's channels, recorded here first."""

    channel: Literal["customer", "approver", "supplier", "warehouse", "ops"]
    template: str
    locale: str = "en"
    params: dict[str, Any] = {}


class TransitionInput(BaseModel):
    refund_id: str
    status: RefundStatus
    stage: Stage
    kind: str
    """Audit event kind, e.g. ``status_changed``, ``approval_recorded``, ``message_ignored``."""
    message: str
    actor: str = "system"
    at: datetime
    seq: int
    """Index of the event in the workflow's timeline: makes a retried write a no-op."""
    data: dict[str, Any] = {}
    notifications: list[Notification] = []


class ReserveInput(BaseModel):
    """Create the refund row and reserve the quote's amounts; without a quote (a refund
    rejected at review) only the row is written, so every refund has one."""

    refund_id: str
    request: RefundRequest
    order: OrderSnapshot
    quote: Quote | None
    policy_version: int
    status: RefundStatus
    at: datetime


class ReserveResult(BaseModel):
    ok: bool
    code: str = ""
    message: str = ""


class ReleaseInput(BaseModel):
    refund_id: str
    at: datetime


class ApprovalInput(BaseModel):
    refund_id: str
    requested_by: str
    approval: ApprovalRecord


class RecheckInput(BaseModel):
    refund_id: str
    expected_fingerprint: str
    fx_rate: FxRate | None = None


class RecheckResult(BaseModel):
    matches: bool
    fingerprint: str
    total: int
    detail: str = ""


class PayoutCall(BaseModel):
    refund_id: str
    merchant_id: str
    customer_id: str
    record: PayoutRecord
    original_txn_id: str = ""
    original_amount: int = 0
    original_paid_at: datetime | None = None
    order_id: str = ""
    payment_id: str = ""
    """The tender being refunded, for the provider's per-payment limits."""
    bank_account: BankAccount | None = None
    reason: str = ""

    def instruction(self) -> PayoutInstruction:
        """What the gateway is asked to pay (or asked about), under the record's key."""
        r = self.record
        return PayoutInstruction(
            payout_key=r.key,
            refund_id=self.refund_id,
            merchant_id=self.merchant_id,
            customer_id=self.customer_id,
            route=r.route,
            amount=r.payout_amount,
            currency=r.payout_currency,
            original_txn_id=self.original_txn_id,
            original_amount=self.original_amount,
            original_paid_at=self.original_paid_at,
            bank_account=r.bank_account,
            reason=self.reason,
            provider_ref=r.provider_ref,
        )


class RecordPayoutInput(BaseModel):
    refund_id: str
    record: PayoutRecord
    charges: dict[str, int] = {}
    """Per tender, what this payout consumes from the reservation when it settles."""
    at: datetime


class DbStep(BaseModel):
    """One database write of a batch (exactly one field is set), in the order the run made it:
    the same write the single-purpose activity of that name makes."""

    transition: TransitionInput | None = None
    register_payout: RecordPayoutInput | None = None
    record_payout: RecordPayoutInput | None = None
    release: ReleaseInput | None = None
    approval: ApprovalInput | None = None


class RecordStepsInput(BaseModel):
    """The writes a run made since its last batch, in one transaction."""

    refund_id: str
    steps: list[DbStep]


class ReviewAndReserveInput(BaseModel):
    """Review, with the writes before it (the ``review_started`` entry) and the reservation
    after it: the three always run together."""

    review: ReviewInput
    steps: list[DbStep] = []


class ReviewAndReserveResult(BaseModel):
    review: ReviewResult
    reserved: ReserveResult
    """The quote's reservation; for a refund rejected at review, its row without a hold."""
    second_check: RecheckResult | None = None
    """The payout's second check (``recheck_quote``), made after the reservation's commit when
    review's plan goes straight to the payout: the payout stage then starts without a local
    activity of its own. None in results recorded before it was made here, so those runs
    replay with the check in a local activity of its own."""
    first_arrival: ArrivalAhead | None = None
    """Likewise the first payout's expected arrival (``plan_arrival``), for the same refunds."""


class RefundWorkflowInput(BaseModel):
    """Start (or continue-as-new) a RefundWorkflow. ``state``/``context`` carry a continued run."""

    refund_id: str
    merchant_id: str
    order_id: str
    request: RefundRequest
    fx_rate: FxRate | None = None
    history_limit: int | None = None
    """Continue-as-new past this many events even before the server suggests it (tests)."""
    state: RefundState | None = None
    """Where a continued run stands."""
    context: RefundContext | None = None
    """What review loaded, for a continued run."""


class DeliverInput(BaseModel):
    refund_id: str
    max_attempts: int = Field(default=8, ge=1)
    """The activity attempt that gives up on rows still failing."""


class DeliverResult(BaseModel):
    """Rows of the refund handled by the attempt that returned."""

    sent: int
    failed: int
    pending: int
    """Only after the last attempt: rows another sender was still delivering."""


class SweepInput(BaseModel):
    """One sweep of the outbox for rows no run is left to deliver."""


class SweepResult(BaseModel):
    sent: int
    failed: int
