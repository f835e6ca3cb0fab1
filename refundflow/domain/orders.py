"""Order snapshots (what was bought and paid) and refund requests (what the customer asks for)."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, Self, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from refundflow.domain.errors import InvalidInput
from refundflow.domain.money import MAX_MINOR, CurrencyCode, Minor, allocate

_Model = TypeVar("_Model", bound=BaseModel)


def _parse(model: type[_Model], data: Any, *, what: str) -> _Model:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput.from_validation(exc, what=what) from None


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


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


MAX_QUANTITY = 1_000_000
"""Units of one line: bounded so that a line's amount is a checked product, never a surprise."""


def _positive_quantity(value: int) -> int:
    if value <= 0:
        raise PydanticCustomError("negative_quantity", "quantity must be a positive whole number")
    if value > MAX_QUANTITY:
        raise PydanticCustomError(
            "quantity_too_large", "quantity must be at most {max}", {"max": MAX_QUANTITY}
        )
    return value


def _bounded_total(total: int, what: str) -> None:
    if total > MAX_MINOR:
        raise PydanticCustomError(
            "amount_too_large",
            "{what} must be at most {max} minor units",
            {"what": what, "max": MAX_MINOR},
        )


Quantity = Annotated[
    int, Field(strict=True, json_schema_extra={"minimum": 1, "maximum": MAX_QUANTITY})
]
Id = Annotated[str, Field(min_length=1, max_length=128)]


class OrderLine(_Frozen):
    line_id: Id
    """The line's id, unique in the order."""
    sku: Id
    """The product's SKU."""
    quantity: Quantity
    """Units bought, 1 to 1,000,000."""
    unit_price: Minor
    line_discount: Minor = 0
    """Discount on the whole line (all units), in minor units."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        _positive_quantity(self.quantity)
        _bounded_total(self.gross, "a line's amount")
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
    """The coupon or promotion code."""
    kind: Literal["coupon", "discount"] = "coupon"
    """A coupon or another discount."""
    amount: Minor
    line_ids: list[Id] | None = None
    """Lines it applies to; ``None`` means every line."""


class OrderFee(_Frozen):
    kind: Id  # e.g. "payment_fee", "gift_wrap", "cod_fee"
    """What the fee is for (payment_fee, gift_wrap, cod_fee, ...)."""
    amount: Minor


class Payment(_Frozen):
    """One tender: a single capture by one method. An order may have several."""

    payment_id: Id
    """The payment's id, unique in the order."""
    method: PaymentMethod
    """The payment method, which is the refund's route."""
    provider_txn_id: Id
    """The provider's transaction id of the capture."""
    captured: Minor
    currency: CurrencyCode
    """The capture's currency (ISO 4217)."""
    paid_at: datetime
    """When the payment was captured (providers' refund windows count from it)."""
    payer_account_ref: str | None = None
    """The payer's account at the provider, if known."""


class PresaleInfo(_Frozen):
    supplier_ref: Id
    """The supplier asked when cancelling a presale order."""
    expected_ship_date: date
    """When the goods are expected to ship."""
    production_starts_on: date | None = None
    """When production starts; a refund after it needs the supplier's word."""


class OrderSnapshotBody(_Frozen):
    """An order as the shop's order system describes it; :class:`OrderSnapshot` adds whose
    order it is and its id (the API takes both from the key and the path)."""

    channel: Id  # own_store, tmall, jd, shopify, ...
    """The sales channel (own_store, tmall, jd, shopify, ...)."""
    customer_id: Id
    """The shop's id of the customer."""
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
    """The order's country (ISO 3166-1 alpha-2); its holidays count business days."""
    currency: CurrencyCode
    """The order's currency (ISO 4217); every amount of the order is in its minor units."""
    placed_at: datetime
    """When the order was placed."""
    status: OrderStatus
    """Where the order is in its life."""
    delivered_at: datetime | None = None
    """When the goods were delivered, if they were."""
    presale: PresaleInfo | None = None
    """For a presale order: the supplier and the shipping date."""
    lines: list[OrderLine] = Field(min_length=1)
    """What was bought, at least one line."""
    discounts: list[OrderDiscount] = []
    """Order-level discounts and coupons, spread over the lines they cover."""
    shipping_fee: Minor = 0
    fees: list[OrderFee] = []
    """Fees charged on the order (refunded with the goods, by policy)."""
    payments: list[Payment] = Field(min_length=1)
    """How the order was paid: one entry per tender (capture)."""

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
        gross = sum(line.gross for line in self.lines)
        _bounded_total(gross + self.shipping_fee + self.fees_total, "the order's total")
        _bounded_total(self.captured_total, "the order's captured total")
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


class OrderSnapshot(OrderSnapshotBody):
    order_id: Id
    merchant_id: Id

    @classmethod
    def parse(cls, data: Any) -> OrderSnapshot:
        """Validate untrusted input, raising :class:`InvalidInput` with a stable code."""
        return _parse(cls, data, what="order")


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
    """The account holder's name, as the bank has it."""
    account_number: Annotated[str, Field(min_length=4, max_length=64)]
    """The account number or IBAN."""
    bank_name: Annotated[str, Field(min_length=1, max_length=200)]
    """The bank's name."""
    bank_code: Annotated[str, Field(min_length=1, max_length=64)]  # SWIFT/BIC or CNAPS code
    """The bank's SWIFT/BIC or CNAPS code."""
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
    """The bank's country (ISO 3166-1 alpha-2)."""
    currency: CurrencyCode
    """The account's currency (ISO 4217)."""


class Destination(_Frozen):
    kind: DestinationKind = DestinationKind.ORIGINAL
    """Where the money goes: ORIGINAL (back to the tenders paid with), BALANCE (the store balance)
    or BANK_TRANSFER (to ``bank_account``)."""
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
    """Where the customer's notices are emailed."""
    phone: Annotated[str, Field(pattern=r"^\+?[0-9 ()-]{5,20}$")] | None = None
    """Where the customer's SMS notices go."""
    locale: Locale = "en"
    """The language of the customer's notices."""


class RefundItem(_Frozen):
    line_id: Id
    """A line of the order."""
    quantity: Quantity
    """Units of the line to refund, 1 to 1,000,000."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        _positive_quantity(self.quantity)
        return self


MAX_EVIDENCE_ITEMS = 20
MAX_EVIDENCE_LENGTH = 2000
"""Evidence travels in the refund's workflow payload: a few references (photo URLs, ticket
ids), never the files themselves."""


def _bounded_evidence(items: list[str]) -> list[str]:
    if len(items) > MAX_EVIDENCE_ITEMS or any(len(i) > MAX_EVIDENCE_LENGTH for i in items):
        raise PydanticCustomError(
            "evidence_too_large",
            "evidence is at most {n} references of at most {length} characters each",
            {"n": MAX_EVIDENCE_ITEMS, "length": MAX_EVIDENCE_LENGTH},
        )
    return items


Evidence = Annotated[
    list[str],
    AfterValidator(_bounded_evidence),
    Field(
        json_schema_extra={
            "maxItems": MAX_EVIDENCE_ITEMS,
            "items": {"type": "string", "maxLength": MAX_EVIDENCE_LENGTH},
        }
    ),
]


class RefundRequestBody(_Frozen):
    """A refund as the client asks for it; :class:`RefundRequest` adds who asks."""

    order_id: Id
    """The order to refund."""
    items: list[RefundItem] = []
    """The lines and units to refund (may be empty with a goodwill amount)."""
    goodwill_amount: Minor | None = None
    """A refund of an amount rather than of units (e.g. a price adjustment)."""
    currency: CurrencyCode | None = None
    """If given, must be the order's currency: a guard against a client's wrong assumption."""
    reason: RefundReason
    """Why the customer wants a refund."""
    note: Annotated[str, Field(max_length=2000)] = ""
    """Free text for the reviewers."""
    evidence: Evidence = []
    """References to evidence (photo URLs, ticket ids): at most 20 of at most 2,000 characters."""
    destination: Destination = Destination()
    """Where the money goes (the original tenders unless told otherwise)."""
    contact: CustomerContact = CustomerContact()
    """Where the customer hears about the refund."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not self.items and not self.goodwill_amount:
            raise PydanticCustomError("empty_request", "a refund needs items or a goodwill amount")
        ids = [item.line_id for item in self.items]
        if len(set(ids)) != len(ids):
            raise PydanticCustomError("duplicate_line", "each line may appear once per request")
        return self


class RefundRequest(RefundRequestBody):
    requested_by: Id

    @classmethod
    def parse(cls, data: Any) -> RefundRequest:
        """Validate untrusted input, raising :class:`InvalidInput` with a stable code."""
        return _parse(cls, data, what="request")

    def fingerprint(self) -> str:
        """What makes two requests 'the same' for duplicate detection: lines, amount, reason."""
        items = ",".join(f"{i.line_id}x{i.quantity}" for i in sorted(self.items, key=_line_key))
        return f"{self.order_id}|{items}|{self.goodwill_amount or 0}|{self.reason.value}"


def _line_key(item: RefundItem) -> str:
    return item.line_id
