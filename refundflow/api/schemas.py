"""Request and response models of the HTTP API.

Request models forbid unknown fields: a client can never set ``status``, ``approved_by``,
``requested_by`` or amounts it does not own. Who acts comes from the API key.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from refundflow.domain.money import CurrencyCode, FxRate, Minor
from refundflow.domain.orders import (
    CustomerContact,
    Destination,
    OrderDiscount,
    OrderFee,
    OrderLine,
    OrderStatus,
    Payment,
    PresaleInfo,
    RefundItem,
    RefundReason,
)
from refundflow.domain.quote import Quote
from refundflow.domain.states import OpsActionKind


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OrderUpsert(_In):
    """An order snapshot as the shop sees it; the merchant comes from the API key."""

    channel: str
    customer_id: str
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
    currency: CurrencyCode
    placed_at: datetime
    status: OrderStatus
    delivered_at: datetime | None = None
    presale: PresaleInfo | None = None
    lines: list[OrderLine]
    discounts: list[OrderDiscount] = []
    shipping_fee: Minor = 0
    fees: list[OrderFee] = []
    payments: list[Payment]


class TenderPublic(BaseModel):
    payment_id: str
    captured: int
    reserved: int
    refunded: int


class OrderPublic(BaseModel):
    order: dict[str, Any]
    tenders: list[TenderPublic]


class RefundCreate(_In):
    order_id: str
    items: list[RefundItem] = []
    goodwill_amount: Minor | None = None
    currency: CurrencyCode | None = None
    reason: RefundReason
    note: Annotated[str, Field(max_length=2000)] = ""
    evidence: list[Annotated[str, Field(max_length=2000)]] = []
    destination: Destination = Destination()
    contact: CustomerContact = CustomerContact()
    fx_rate: FxRate | None = None
    """The rate a payout in another currency than the order's (a bank account in another
    currency) is converted at, with its source (the policy's ``fx_rate_source``) and time."""


class RefundPublic(BaseModel):
    refund_id: str
    workflow_id: str
    order_id: str
    customer_id: str
    status: str
    reason: str
    currency: str
    total: int
    requested_by: str
    created_at: datetime
    updated_at: datetime
    quote: Quote | None = None
    quote_fingerprint: str | None = None
    """What an approver's decision names, so it can only approve the amount they saw."""
    live: dict[str, Any] | None = None
    """The running workflow's own view (approvals, payouts, timeline), when it answers."""


class RefundPage(BaseModel):
    items: list[RefundPublic]
    next_cursor: str | None


class DecisionIn(_In):
    decision: Literal["APPROVE", "REJECT"]
    quote_fingerprint: str
    comment: Annotated[str, Field(max_length=2000)] = ""


class SupplierResponseIn(_In):
    supplier_ref: str
    can_cancel: bool
    cancellation_fee: Minor = 0
    note: Annotated[str, Field(max_length=2000)] = ""


class ReturnInspectionIn(_In):
    condition: Literal["OK", "DAMAGED"] = "OK"
    deduction: Minor = 0
    note: Annotated[str, Field(max_length=2000)] = ""


class CustomerConfirmationIn(_In):
    confirmed: bool
    note: Annotated[str, Field(max_length=2000)] = ""


class ReceiptIn(_In):
    received: bool
    note: Annotated[str, Field(max_length=2000)] = ""


class CancelIn(_In):
    reason: Annotated[str, Field(max_length=2000)] = ""


class OpsActionIn(_In):
    action: OpsActionKind
    destination: Destination | None = None
    reference: Annotated[str, Field(max_length=2000)] = ""
    note: Annotated[str, Field(max_length=2000)] = ""


class MessageOut(BaseModel):
    accepted: bool
    status: str
    detail: str = ""
