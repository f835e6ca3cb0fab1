"""The quote: what a refund pays, line by line, and how the money goes out.

Inputs that are not the order, request or policy (prior refunds, deductions, FX) live here too,
so the calculation has one module of types to read.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from refundflow.domain.money import CurrencyCode, FxRate, Minor
from refundflow.domain.orders import PaymentMethod, RefundItem, RefundReason
from refundflow.domain.policy import Bearer


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PriorRefund(_Frozen):
    """A refund of the same order that is in flight or done (rejected/cancelled ones are not)."""

    refund_id: str
    state: Literal["active", "completed"]
    reason: RefundReason
    items: list[RefundItem] = []
    tender_amounts: dict[str, int] = {}
    """Amount charged against each payment id, in the order currency."""
    request_fingerprint: str = ""
    created_at: datetime | None = None


class Deduction(_Frozen):
    """Taken off the refund after the fact: damage found at inspection, a presale cancellation
    fee, a manual adjustment. Always explained by ``kind`` and ``note``."""

    kind: Literal["inspection_damage", "presale_cancellation_fee", "manual"]
    amount: Minor
    line_id: str | None = None
    note: str = ""


class QuoteLine(_Frozen):
    line_id: str
    sku: str
    quantity: int
    units_refunded_before: int
    gross: int
    """Unit price x quantity for the refunded units (their exact share of the line)."""
    line_discount: int
    order_discount: int
    """Share of order-level discounts and coupons."""
    net: int
    shipping: int
    """Share of the shipping fee refunded with these units (0 when policy keeps shipping)."""
    fees: int
    restocking_fee: int
    amount: int
    """net + shipping + fees - restocking_fee."""


class TenderShare(_Frozen):
    payment_id: str
    method: PaymentMethod
    captured: int
    refunded_before: int
    """Active and completed prior refunds charged to this tender."""
    amount: int
    """Charged to this tender by this refund."""


class TenderCharge(_Frozen):
    payment_id: str
    amount: int


class PlannedPayout(_Frozen):
    """One payout call. ``seq`` is the tranche number in the payout key."""

    seq: Annotated[int, Field(ge=1)]
    installment: Annotated[int, Field(ge=1)]
    route: PaymentMethod
    """The original tender's method, or ``balance`` / ``bank_transfer`` by destination."""
    charges: list[TenderCharge]
    amount: int
    """Order currency."""
    payout_currency: CurrencyCode
    payout_amount: int
    """What reaches the customer, in ``payout_currency`` (after a fee the customer bears)."""
    due_after_days: int
    """Days after the first payout; installments wait their interval."""


class FxApplied(_Frozen):
    rate: FxRate
    from_currency: CurrencyCode
    to_currency: CurrencyCode
    converted_total: int
    """``total`` converted, before any cross-border fee."""
    cross_border_fee: int
    """In ``to_currency``."""
    fee_bearer: Bearer


class Quote(_Frozen):
    order_id: str
    currency: CurrencyCode
    reason: RefundReason
    policy_version: int
    lines: list[QuoteLine]
    items_amount: int
    """Sum of line ``net`` (items after discounts)."""
    shipping: int
    fees: int
    restocking_fee: int
    goodwill: int
    deductions: list[Deduction]
    deductions_total: int
    requested_total: int
    """What the request is worth before the cap."""
    remaining_before: int
    """Still refundable on the order before this refund."""
    total: int
    """What this refund pays, in the order currency."""
    capped: bool
    tenders: list[TenderShare]
    fx: FxApplied | None
    payout_currency: CurrencyCode
    payout_total: int
    payouts: list[PlannedPayout]
    installments: int
    notes: list[str]
    """Why the numbers are what they are, in plain words (English; for ops and audit)."""

    def fingerprint(self) -> str:
        """Stable digest of the quote: an approval names the quote it approved."""
        canonical = self.model_dump_json(exclude={"notes"})
        return hashlib.sha256(canonical.encode()).hexdigest()[:32]

    def tender_amount(self, payment_id: str) -> int:
        return next((t.amount for t in self.tenders if t.payment_id == payment_id), 0)
