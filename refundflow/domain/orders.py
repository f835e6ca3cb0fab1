"""Order snapshots (what was bought and paid) and refund requests (what the customer asks for)."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from refundflow.domain.errors import InvalidInput
from refundflow.domain.money import CurrencyCode, Minor, allocate


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class OrderStatus(StrEnum):
    PAID = "PAID"
    SHIPPED = "SHIPPED"
    DELIVERED = "DELIVERED"
    RETURN_IN_PROGRESS = "RETURN_IN_PROGRESS"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"


class PaymentMethod(StrEnum):
    ALIPAY = "alipay"
    WECHAT = "wechat"
    CARD = "card"
    BANK_TRANSFER = "bank_transfer"
    BALANCE = "balance"
    STRIPE = "stripe"
    PAYPAL = "paypal"


def _positive_quantity(value: int) -> int:
    if value <= 0:
        raise PydanticCustomError("negative_quantity", "quantity must be a positive whole number")
    return value


Quantity = Annotated[int, Field(strict=True)]
Id = Annotated[str, Field(min_length=1, max_length=128)]


class OrderLine(_Frozen):
    line_id: Id
    sku: Id
    quantity: Quantity
    unit_price: Minor
    line_discount: Minor = 0
    """Discount on the whole line (all units), in minor units."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        _positive_quantity(self.quantity)
        if self.line_discount > self.gross:
            raise PydanticCustomError(
                "discount_exceeds_amount", "line discount is larger than the line amount"
            )
        return self

    @property
    def gross(self) -> int:
        return self.quantity * self.unit_price

    @property
    def net(self) -> int:
        return self.gross - self.line_discount


class OrderDiscount(_Frozen):
    """An order-level discount or coupon, spread over lines in proportion to their net amount."""

    code: Id
    kind: Literal["coupon", "discount"] = "coupon"
    amount: Minor
    line_ids: list[Id] | None = None
    """Lines it applies to; ``None`` means every line."""


class OrderFee(_Frozen):
    kind: Id  # e.g. "payment_fee", "gift_wrap", "cod_fee"
    amount: Minor


class Payment(_Frozen):
    """One tender: a single capture by one method. An order may have several."""

    payment_id: Id
    method: PaymentMethod
    provider_txn_id: Id
    captured: Minor
    currency: CurrencyCode
    paid_at: datetime
    payer_account_ref: str | None = None


class PresaleInfo(_Frozen):
    supplier_ref: Id
    expected_ship_date: date
    production_starts_on: date | None = None


class OrderSnapshot(_Frozen):
    order_id: Id
    merchant_id: Id
    channel: Id  # own_store, tmall, jd, shopify, ...
    customer_id: Id
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
    currency: CurrencyCode
    placed_at: datetime
    status: OrderStatus
    delivered_at: datetime | None = None
    presale: PresaleInfo | None = None
    lines: list[OrderLine] = Field(min_length=1)
    discounts: list[OrderDiscount] = []
    shipping_fee: Minor = 0
    fees: list[OrderFee] = []
    payments: list[Payment] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> Self:
        line_ids = [line.line_id for line in self.lines]
        if len(set(line_ids)) != len(line_ids):
            raise PydanticCustomError("duplicate_line", "line ids must be unique")
        pay_ids = [p.payment_id for p in self.payments]
        if len(set(pay_ids)) != len(pay_ids):
            raise PydanticCustomError("duplicate_payment", "payment ids must be unique")
        known = set(line_ids)
        for disc in self.discounts:
            unknown = set(disc.line_ids or []) - known
            if unknown:
                raise PydanticCustomError(
                    "unknown_line", "discount {code} names unknown lines", {"code": disc.code}
                )
        self.discount_shares()  # refuses a discount larger than the lines it covers
        return self

    def discount_shares(self) -> dict[str, int]:
        """Order-level discounts spread over the lines they cover, by net amount.

        Discounts apply in order, each by what its lines are still worth after the previous
        ones, so no line is ever discounted below zero.
        """
        left = {ln.line_id: ln.net for ln in self.lines}
        shares = dict.fromkeys(left, 0)
        for disc in self.discounts:
            covered = [lid for lid in left if disc.line_ids is None or lid in disc.line_ids]
            if disc.amount > sum(left[lid] for lid in covered):
                raise PydanticCustomError(
                    "discount_exceeds_amount",
                    "discount {code} is larger than the lines it covers",
                    {"code": disc.code},
                )
            parts = allocate(disc.amount, [left[lid] for lid in covered])
            for lid, part in zip(covered, parts, strict=True):
                shares[lid] += part
                left[lid] -= part
        return shares

    @classmethod
    def parse(cls, data: Any) -> OrderSnapshot:
        """Validate untrusted input, raising :class:`InvalidInput` with a stable code."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise InvalidInput.from_validation(exc, what="order") from None

    @property
    def items_net(self) -> int:
        return sum(line.net for line in self.lines)

    @property
    def discount_total(self) -> int:
        return sum(d.amount for d in self.discounts)

    @property
    def fees_total(self) -> int:
        return sum(f.amount for f in self.fees)

    @property
    def total(self) -> int:
        """What the customer was charged: items after all discounts, plus shipping and fees."""
        return self.items_net - self.discount_total + self.shipping_fee + self.fees_total

    @property
    def captured_total(self) -> int:
        return sum(p.captured for p in self.payments)

    def line(self, line_id: str) -> OrderLine | None:
        return next((ln for ln in self.lines if ln.line_id == line_id), None)

    def payment(self, payment_id: str) -> Payment | None:
        return next((p for p in self.payments if p.payment_id == payment_id), None)


class RefundReason(StrEnum):
    NOT_AS_DESCRIBED = "NOT_AS_DESCRIBED"
    DAMAGED = "DAMAGED"
    WRONG_ITEM = "WRONG_ITEM"
    NOT_RECEIVED = "NOT_RECEIVED"
    CHANGED_MIND = "CHANGED_MIND"
    LATE_DELIVERY = "LATE_DELIVERY"
    DUPLICATE_PAYMENT = "DUPLICATE_PAYMENT"
    PRESALE_CANCEL = "PRESALE_CANCEL"
    OTHER = "OTHER"


class DestinationKind(StrEnum):
    ORIGINAL = "ORIGINAL"
    BALANCE = "BALANCE"
    BANK_TRANSFER = "BANK_TRANSFER"


class BankAccount(_Frozen):
    holder_name: Annotated[str, Field(min_length=1, max_length=200)]
    account_number: Annotated[str, Field(min_length=4, max_length=64)]
    bank_name: Annotated[str, Field(min_length=1, max_length=200)]
    bank_code: Annotated[str, Field(min_length=1, max_length=64)]  # SWIFT/BIC or CNAPS code
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
    currency: CurrencyCode


class Destination(_Frozen):
    kind: DestinationKind = DestinationKind.ORIGINAL
    bank_account: BankAccount | None = None
    """Where BANK_TRANSFER pays; with ORIGINAL, the account a policy fallback to bank
    transfer may use if the original route fails for good."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        needs = self.kind is DestinationKind.BANK_TRANSFER
        if (needs and self.bank_account is None) or (
            self.kind is DestinationKind.BALANCE and self.bank_account is not None
        ):
            raise PydanticCustomError(
                "destination_incomplete",
                "bank account details are required for BANK_TRANSFER (and optional, as the"
                " fallback account, for ORIGINAL; not for BALANCE)",
            )
        return self


Locale = Literal["zh-CN", "en"]


class CustomerContact(_Frozen):
    email: Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")] | None = None
    phone: Annotated[str, Field(pattern=r"^\+?[0-9 ()-]{5,20}$")] | None = None
    locale: Locale = "en"


class RefundItem(_Frozen):
    line_id: Id
    quantity: Quantity

    @model_validator(mode="after")
    def _check(self) -> Self:
        _positive_quantity(self.quantity)
        return self


class RefundRequest(_Frozen):
    order_id: Id
    items: list[RefundItem] = []
    goodwill_amount: Minor | None = None
    """A refund of an amount rather than of units (e.g. a price adjustment)."""
    currency: CurrencyCode | None = None
    """If given, must be the order's currency: a guard against a client's wrong assumption."""
    reason: RefundReason
    note: Annotated[str, Field(max_length=2000)] = ""
    evidence: list[Annotated[str, Field(max_length=2000)]] = []
    destination: Destination = Destination()
    contact: CustomerContact = CustomerContact()
    requested_by: Id

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not self.items and not self.goodwill_amount:
            raise PydanticCustomError("empty_request", "a refund needs items or a goodwill amount")
        ids = [item.line_id for item in self.items]
        if len(set(ids)) != len(ids):
            raise PydanticCustomError("duplicate_line", "each line may appear once per request")
        return self

    @classmethod
    def parse(cls, data: Any) -> RefundRequest:
        """Validate untrusted input, raising :class:`InvalidInput` with a stable code."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise InvalidInput.from_validation(exc, what="request") from None

    def fingerprint(self) -> str:
        """What makes two requests 'the same' for duplicate detection: lines, amount, reason."""
        items = ",".join(f"{i.line_id}x{i.quantity}" for i in sorted(self.items, key=_line_key))
        return f"{self.order_id}|{items}|{self.goodwill_amount or 0}|{self.reason.value}"


def _line_key(item: RefundItem) -> str:
    return item.line_id
