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
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


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
    """Why the amount is taken off."""
    amount: Minor
    line_id: str | None = None
    """The line it concerns, if one."""
    note: str = ""
    """The explanation, for the customer and the audit."""


class QuoteLine(_Frozen):
    line_id: str
    """The order line."""
    sku: str
    """The line's SKU."""
    quantity: int
    """Units refunded now."""
    units_refunded_before: int
    """Units of the line refunded or reserved by earlier refunds."""
    gross: int
    """Unit price x quantity for the refunded units (their exact share of the line)."""
    line_discount: int
    """The refunded units' share of the line's own discount. In minor units of the order currency.
"""
    order_discount: int
    """Share of order-level discounts and coupons."""
    net: int
    """gross - line_discount - order_discount. In minor units of the order currency."""
    shipping: int
    """Share of the shipping fee refunded with these units (0 when policy keeps shipping)."""
    fees: int
    """Share of the order's fees refunded with these units. In minor units of the order currency."""
    restocking_fee: int
    """Kept by the merchant for a change-of-mind return, by policy. In minor units of the order
    currency."""
    amount: int
    """net + shipping + fees - restocking_fee."""


class TenderShare(_Frozen):
    payment_id: str
    """The order's payment."""
    method: PaymentMethod
    """Its payment method."""
    captured: int
    """What it captured. In minor units of the order currency."""
    refunded_before: int
    """Active and completed prior refunds charged to this tender."""
    amount: int
    """Charged to this tender by this refund."""


class TenderCharge(_Frozen):
    payment_id: str
    """The order's payment charged."""
    amount: int
    """Charged to it. In minor units of the order currency."""


class PlannedPayout(_Frozen):
    """One payout call. ``seq`` is the tranche number in the payout key."""

    seq: Annotated[int, Field(ge=1)]
    """The tranche number (part of the payout key)."""
    installment: Annotated[int, Field(ge=1)]
    """Which installment of a large refund."""
    route: PaymentMethod
    """The original tender's method, or ``balance`` / ``bank_transfer`` by destination."""
    charges: list[TenderCharge]
    """What each tender contributes."""
    amount: int
    """Order currency."""
    payout_currency: CurrencyCode
    """The currency the customer receives (ISO 4217)."""
    payout_amount: int
    """What reaches the customer, in ``payout_currency`` (after a fee the customer bears)."""
    due_after_days: int
    """Days after the first payout; installments wait their interval."""


class FxApplied(_Frozen):
    rate: FxRate
    """The recorded exchange rate."""
    from_currency: CurrencyCode
    """The order's currency."""
    to_currency: CurrencyCode
    """The payout currency."""
    converted_total: int
    """``total`` converted, before any cross-border fee."""
    cross_border_fee: int
    """In ``to_currency``."""
    fee_bearer: Bearer
    """Who bears the cross-border fee."""


class Quote(_Frozen):
    order_id: str
    """The order refunded."""
    currency: CurrencyCode
    """The order's currency (ISO 4217); amounts are its minor units."""
    reason: RefundReason
    """The request's reason."""
    policy_version: int
    """The merchant policy version the quote follows."""
    lines: list[QuoteLine]
    """Line by line: what each refunded unit brings back."""
    items_amount: int
    """Sum of line ``net`` (items after discounts)."""
    shipping: int
    """Shipping refunded. In minor units of the order currency."""
    fees: int
    """Fees refunded. In minor units of the order currency."""
    restocking_fee: int
    """Restocking fees kept. In minor units of the order currency."""
    goodwill: int
    """A goodwill amount asked for. In minor units of the order currency."""
    deductions: list[Deduction]
    """Amounts taken off after the fact."""
    deductions_total: int
    """Their sum. In minor units of the order currency."""
    requested_total: int
    """What the request is worth before the cap."""
    remaining_before: int
    """Still refundable on the order before this refund."""
    total: int
    """What this refund pays, in the order currency."""
    capped: bool
    """True when the request was worth more than remains refundable."""
    tenders: list[TenderShare]
    """What each payment of the order gives back."""
    fx: FxApplied | None
    """The conversion, when the payout currency differs."""
    payout_currency: CurrencyCode
    """The currency the customer receives (ISO 4217)."""
    payout_total: int
    """What the customer receives, in minor units of ``payout_currency``."""
    payouts: list[PlannedPayout]
    """The payout calls planned: one per tender, or installments."""
    installments: int
    """How many installments the refund is paid in."""
    notes: list[str]
    """Why the numbers are what they are, in plain words (English; for ops and audit)."""

    def fingerprint(self) -> str:
        """Stable digest of the quote: an approval names the quote it approved."""
        canonical = self.model_dump_json(exclude={"notes"})
        return hashlib.sha256(canonical.encode()).hexdigest()[:32]

    def tender_amount(self, payment_id: str) -> int:
        return next((t.amount for t in self.tenders if t.payment_id == payment_id), 0)
