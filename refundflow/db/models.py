"""Tables (docs/architecture.md, "Books and the database"). The migration in ``migrations/versions``
creates exactly these.

Keys are natural where the outside world gives them (merchant, order, line and payment ids are
scoped by merchant and order), money is ``BIGINT`` minor units and every timestamp is UTC. The
guards the database enforces on its own (docs/architecture.md, "Books and the database") are named
here so errors can be recognised by name: see :mod:`refundflow.db.guards`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    ForeignKeyConstraint,
    Index,
    Integer,
    Text,
    UniqueConstraint,
    text,
)
from sqlmodel import Field, SQLModel

from refundflow.db.types import BigId, JsonDoc, Money, UtcDateTime, utcnow

# Deterministic names, so the migration and error translation can refer to constraints by name.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ID = 128
"""Length of outside ids (the domain's ``Id`` allows up to 128 characters)."""

_NOW = {"server_default": text("CURRENT_TIMESTAMP")}


def _created() -> Any:
    return Field(default_factory=utcnow, sa_type=UtcDateTime, sa_column_kwargs=_NOW)


def _money(default: int | None = None) -> Any:
    if default is None:
        return Field(sa_type=Money)
    return Field(default=default, sa_type=Money, sa_column_kwargs={"server_default": "0"})


class MerchantRow(SQLModel, table=True):
    __tablename__ = "merchants"

    merchant_id: str = Field(primary_key=True, max_length=ID)
    name: str = Field(default="", max_length=200)
    created_at: datetime = _created()
    webhook_url: str | None = Field(default=None, max_length=2048)
    """Where every notification of this merchant's refunds is POSTed (docs/architecture.md,
    "Notifications"); none: no webhook."""
    webhook_secret: str | None = Field(default=None, max_length=256)
    """HMAC key of the ``Refundflow-Signature`` header; kept readable because we sign with it."""


API_KEY_ROLES = ("client", "approver", "warehouse", "ops", "admin")
"""docs/architecture.md, "Approvals". An approver's key ``name`` is the approver id their decisions
carry."""


class ApiKeyRow(SQLModel, table=True):
    """Only a SHA-256 of the secret is kept; the secret is shown once, at creation."""

    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint("role IN ('client', 'approver', 'warehouse', 'ops', 'admin')", name="role"),
    )

    key_id: str = Field(primary_key=True, max_length=32)
    merchant_id: str = Field(foreign_key="merchants.merchant_id", max_length=ID, index=True)
    name: str = Field(default="", max_length=200)
    role: str = Field(default="client", max_length=16)
    key_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = _created()
    revoked_at: datetime | None = Field(default=None, sa_type=UtcDateTime)


class OrderRow(SQLModel, table=True):
    """The latest snapshot as sent by the client, plus the columns we search on."""

    __tablename__ = "orders"
    __table_args__ = (Index(None, "merchant_id", "customer_id"),)

    merchant_id: str = Field(primary_key=True, foreign_key="merchants.merchant_id", max_length=ID)
    order_id: str = Field(primary_key=True, max_length=ID)
    customer_id: str = Field(max_length=ID)
    channel: str = Field(max_length=ID)
    country: str = Field(max_length=2)
    currency: str = Field(max_length=3)
    status: str = Field(max_length=32)
    placed_at: datetime = Field(sa_type=UtcDateTime)
    delivered_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    snapshot: dict[str, Any] = Field(sa_type=JsonDoc)
    created_at: datetime = _created()
    updated_at: datetime = _created()


class OrderLineRow(SQLModel, table=True):
    __tablename__ = "order_lines"
    __table_args__ = (
        ForeignKeyConstraint(
            ["merchant_id", "order_id"], ["orders.merchant_id", "orders.order_id"]
        ),
        CheckConstraint("quantity > 0 AND unit_price >= 0 AND line_discount >= 0", name="amounts"),
    )

    merchant_id: str = Field(primary_key=True, max_length=ID)
    order_id: str = Field(primary_key=True, max_length=ID)
    line_id: str = Field(primary_key=True, max_length=ID)
    sku: str = Field(max_length=ID)
    quantity: int
    unit_price: int = _money()
    line_discount: int = _money(0)


class OrderDiscountRow(SQLModel, table=True):
    __tablename__ = "order_discounts"
    __table_args__ = (
        ForeignKeyConstraint(
            ["merchant_id", "order_id"], ["orders.merchant_id", "orders.order_id"]
        ),
        CheckConstraint("amount >= 0", name="amount"),
    )

    merchant_id: str = Field(primary_key=True, max_length=ID)
    order_id: str = Field(primary_key=True, max_length=ID)
    position: int = Field(
        primary_key=True, sa_type=Integer, sa_column_kwargs={"autoincrement": False}
    )
    code: str = Field(max_length=ID)
    kind: str = Field(max_length=16)
    amount: int = _money()
    line_ids: list[str] | None = Field(default=None, sa_type=JsonDoc)


class OrderPaymentRow(SQLModel, table=True):
    """A tender as the client described it. Its money counters live in ``tender_balances``."""

    __tablename__ = "order_payments"
    __table_args__ = (
        ForeignKeyConstraint(
            ["merchant_id", "order_id"], ["orders.merchant_id", "orders.order_id"]
        ),
        CheckConstraint("captured >= 0", name="captured"),
    )

    merchant_id: str = Field(primary_key=True, max_length=ID)
    order_id: str = Field(primary_key=True, max_length=ID)
    payment_id: str = Field(primary_key=True, max_length=ID)
    method: str = Field(max_length=32)
    provider_txn_id: str = Field(max_length=ID)
    captured: int = _money()
    currency: str = Field(max_length=3)
    paid_at: datetime = Field(sa_type=UtcDateTime)
    payer_account_ref: str | None = Field(default=None, max_length=256)


class TenderBalanceRow(SQLModel, table=True):
    """What may still be refunded from one payment.

    The CHECK is the over-refund guard: a reservation is one ``UPDATE ... SET reserved =
    reserved + :amount``, so PostgreSQL's row lock and SQLite's write lock serialise concurrent
    refunds and the CHECK refuses whichever would cross ``captured``.
    """

    __tablename__ = "tender_balances"
    __table_args__ = (
        ForeignKeyConstraint(
            ["merchant_id", "order_id", "payment_id"],
            [
                "order_payments.merchant_id",
                "order_payments.order_id",
                "order_payments.payment_id",
            ],
        ),
        CheckConstraint(
            "reserved >= 0 AND refunded >= 0 AND reserved + refunded <= captured",
            name="within_captured",
        ),
    )

    merchant_id: str = Field(primary_key=True, max_length=ID)
    order_id: str = Field(primary_key=True, max_length=ID)
    payment_id: str = Field(primary_key=True, max_length=ID)
    currency: str = Field(max_length=3)
    captured: int = _money()
    reserved: int = _money(0)
    refunded: int = _money(0)
    updated_at: datetime = _created()


class RefundRow(SQLModel, table=True):
    __tablename__ = "refunds"
    __table_args__ = (
        ForeignKeyConstraint(
            ["merchant_id", "order_id"], ["orders.merchant_id", "orders.order_id"]
        ),
        # Target of the approvals foreign key: an approval must name the real requester.
        UniqueConstraint("refund_id", "requested_by"),
        CheckConstraint("total >= 0", name="total"),
        Index(None, "merchant_id", "order_id"),
        Index(None, "merchant_id", "customer_id", "created_at"),
    )

    refund_id: str = Field(primary_key=True, max_length=ID)
    merchant_id: str = Field(max_length=ID)
    order_id: str = Field(max_length=ID)
    customer_id: str = Field(max_length=ID)
    status: str = Field(max_length=32)
    reason: str = Field(max_length=32)
    currency: str = Field(max_length=3)
    total: int = _money()
    requested_by: str = Field(max_length=ID)
    policy_version: int
    quote: dict[str, Any] = Field(sa_type=JsonDoc)
    quote_fingerprint: str = Field(max_length=64)
    request: dict[str, Any] = Field(sa_type=JsonDoc)
    request_fingerprint: str = Field(sa_type=Text)
    created_at: datetime = _created()
    updated_at: datetime = _created()
    personal_sealed: str | None = Field(default=None, sa_type=Text)
    """The customer's email, phone and bank account, sealed (:mod:`refundflow.db.personal`);
    ``request`` keeps masks in their place."""
    personal_masked: dict[str, Any] | None = Field(default=None, sa_type=JsonDoc)
    """The same, masked (``****8877``): what API answers show."""
    personal_erased_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    """When retention erased the customer's data (amounts and the audit trail stay)."""


class RefundLineRow(SQLModel, table=True):
    __tablename__ = "refund_lines"
    __table_args__ = (
        ForeignKeyConstraint(
            ["merchant_id", "order_id", "line_id"],
            ["order_lines.merchant_id", "order_lines.order_id", "order_lines.line_id"],
        ),
        CheckConstraint("quantity > 0 AND amount >= 0", name="amounts"),
    )

    refund_id: str = Field(primary_key=True, foreign_key="refunds.refund_id", max_length=ID)
    line_id: str = Field(primary_key=True, max_length=ID)
    merchant_id: str = Field(max_length=ID)
    order_id: str = Field(max_length=ID)
    quantity: int
    amount: int = _money()


RESERVATION_STATES = ("active", "released", "consumed")


class ReservationRow(SQLModel, table=True):
    """One refund's hold on one tender. ``amount`` is the whole hold, ``consumed`` the part
    already paid out (moved to ``tender_balances.refunded``)."""

    __tablename__ = "reservations"
    __table_args__ = (
        ForeignKeyConstraint(
            ["merchant_id", "order_id", "payment_id"],
            [
                "tender_balances.merchant_id",
                "tender_balances.order_id",
                "tender_balances.payment_id",
            ],
        ),
        CheckConstraint("amount >= 0 AND consumed >= 0 AND consumed <= amount", name="amounts"),
        CheckConstraint("state IN ('active', 'released', 'consumed')", name="state"),
        Index(None, "merchant_id", "order_id", "payment_id"),
    )

    refund_id: str = Field(primary_key=True, foreign_key="refunds.refund_id", max_length=ID)
    payment_id: str = Field(primary_key=True, max_length=ID)
    merchant_id: str = Field(max_length=ID)
    order_id: str = Field(max_length=ID)
    amount: int = _money()
    consumed: int = _money(0)
    state: str = Field(default="active", max_length=16)
    created_at: datetime = _created()
    updated_at: datetime = _created()


class PayoutRow(SQLModel, table=True):
    __tablename__ = "payouts"
    __table_args__ = (
        UniqueConstraint("payout_key"),
        UniqueConstraint("refund_id", "seq", "generation"),
        CheckConstraint("amount > 0 AND seq >= 1 AND generation >= 1", name="amounts"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    payout_key: str = Field(max_length=256)
    refund_id: str = Field(foreign_key="refunds.refund_id", max_length=ID)
    seq: int
    generation: int
    route: str = Field(max_length=32)
    amount: int = _money()
    currency: str = Field(max_length=3)
    status: str = Field(default="pending", max_length=32)
    provider_ref: str = Field(default="", max_length=256)
    created_at: datetime = _created()
    updated_at: datetime = _created()


class ApprovalRow(SQLModel, table=True):
    """One approver's decision on one quote.

    ``requested_by`` is pinned to the refund's requester by a composite foreign key, so the
    CHECK cannot be dodged by writing someone else's name there.
    """

    __tablename__ = "approvals"
    __table_args__ = (
        ForeignKeyConstraint(
            ["refund_id", "requested_by"], ["refunds.refund_id", "refunds.requested_by"]
        ),
        CheckConstraint("approver_id <> requested_by", name="not_self"),
        CheckConstraint("decision IN ('APPROVE', 'REJECT')", name="decision"),
        UniqueConstraint("refund_id", "approver_id", "quote_fingerprint"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    refund_id: str = Field(max_length=ID)
    approver_id: str = Field(max_length=ID)
    requested_by: str = Field(max_length=ID)
    decision: str = Field(max_length=8)
    quote_fingerprint: str = Field(max_length=64)
    comment: str = Field(default="", sa_type=Text)
    created_at: datetime = _created()


class LedgerPostingRow(SQLModel, table=True):
    """A balanced set of ledger entries. Inserted after its entries: a trigger refuses it
    unless they are at least two and sum to zero, and closes the posting to new entries."""

    __tablename__ = "ledger_postings"

    posting_id: str = Field(primary_key=True, max_length=256)
    refund_id: str | None = Field(
        default=None, foreign_key="refunds.refund_id", max_length=ID, index=True
    )
    currency: str = Field(max_length=3)
    memo: str = Field(default="", sa_type=Text)
    created_at: datetime = _created()


class LedgerEntryRow(SQLModel, table=True):
    """Signed amount: debit positive, credit negative. No foreign key to the posting, since
    entries are written first; only entries whose posting exists count."""

    __tablename__ = "ledger_entries"
    __table_args__ = (CheckConstraint("amount <> 0", name="non_zero"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    posting_id: str = Field(max_length=256, index=True)
    account: str = Field(max_length=256, index=True)
    amount: int = _money()


class AuditEventRow(SQLModel, table=True):
    """Append-only: triggers refuse UPDATE and DELETE. No foreign key to refunds because
    events are recorded before a refund row exists (e.g. a rejection at review)."""

    __tablename__ = "audit_events"

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    refund_id: str | None = Field(default=None, max_length=ID, index=True)
    kind: str = Field(max_length=64)
    actor: str = Field(max_length=ID)
    data: dict[str, Any] = Field(default_factory=dict, sa_type=JsonDoc)
    created_at: datetime = _created()


class OutboxRow(SQLModel, table=True):
    """A notification written in the same transaction as the change it announces."""

    __tablename__ = "outbox"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'sent', 'failed')", name="status"),
        CheckConstraint("attempts >= 0", name="attempts"),
        Index(None, "status", "id"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    refund_id: str | None = Field(default=None, max_length=ID, index=True)
    channel: str = Field(max_length=32)
    template: str = Field(max_length=128)
    locale: str = Field(default="en", max_length=16)
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=JsonDoc)
    status: str = Field(default="pending", max_length=16)
    attempts: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    last_error: str = Field(default="", sa_type=Text)
    created_at: datetime = _created()
    updated_at: datetime = _created()
    deliveries: dict[str, Any] = Field(
        default_factory=dict, sa_type=JsonDoc, sa_column_kwargs={"server_default": "{}"}
    )
    """Per channel (``email``, ``sms``, ``webhook``), the outcome of its delivery; a channel
    found here is never tried again, so a retry after a partial success resends nothing."""
    locked_until: datetime | None = Field(default=None, sa_type=UtcDateTime)
    """Lease of the sender delivering the row now; other senders skip it until then."""


class IdempotencyKeyRow(SQLModel, table=True):
    __tablename__ = "idempotency_keys"
    __table_args__ = (CheckConstraint("state IN ('in_flight', 'done')", name="state"),)

    merchant_id: str = Field(primary_key=True, foreign_key="merchants.merchant_id", max_length=ID)
    key: str = Field(primary_key=True, max_length=256)
    request_hash: str = Field(max_length=128)
    refund_id: str | None = Field(default=None, max_length=ID)
    state: str = Field(default="in_flight", max_length=16)
    response: dict[str, Any] | None = Field(default=None, sa_type=JsonDoc)
    created_at: datetime = _created()
    updated_at: datetime = _created()


class WebhookEventRow(SQLModel, table=True):
    __tablename__ = "webhook_events"
    __table_args__ = (UniqueConstraint("provider", "event_id"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    provider: str = Field(max_length=32)
    event_id: str = Field(max_length=256)
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=JsonDoc)
    received_at: datetime = _created()


class PolicyRow(SQLModel, table=True):
    __tablename__ = "policies"
    __table_args__ = (CheckConstraint("version >= 1", name="version"),)

    merchant_id: str = Field(primary_key=True, foreign_key="merchants.merchant_id", max_length=ID)
    version: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    document: dict[str, Any] = Field(sa_type=JsonDoc)
    created_at: datetime = _created()


class CustomerBalanceRow(SQLModel, table=True):
    """The store-balance wallet: refunds to ``BALANCE`` land here."""

    __tablename__ = "customer_balances"
    __table_args__ = (CheckConstraint("balance >= 0", name="non_negative"),)

    merchant_id: str = Field(primary_key=True, foreign_key="merchants.merchant_id", max_length=ID)
    customer_id: str = Field(primary_key=True, max_length=ID)
    currency: str = Field(primary_key=True, max_length=3)
    balance: int = _money(0)
    updated_at: datetime = _created()


__all__ = [
    "API_KEY_ROLES",
    "RESERVATION_STATES",
    "ApiKeyRow",
    "ApprovalRow",
    "AuditEventRow",
    "CustomerBalanceRow",
    "IdempotencyKeyRow",
    "LedgerEntryRow",
    "LedgerPostingRow",
    "MerchantRow",
    "OrderDiscountRow",
    "OrderLineRow",
    "OrderPaymentRow",
    "OrderRow",
    "OutboxRow",
    "PayoutRow",
    "PolicyRow",
    "RefundLineRow",
    "RefundRow",
    "ReservationRow",
    "TenderBalanceRow",
    "WebhookEventRow",
]
