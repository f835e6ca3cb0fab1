"""Refunds, their lines, the reservations that hold their money, payouts and approvals."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    ForeignKeyConstraint,
    Index,
    Text,
    UniqueConstraint,
)
from sqlmodel import Field, SQLModel

from refundflow.db.models.fields import ID, created, money
from refundflow.db.types import BigId, JsonDoc, UtcDateTime


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
    total: int = money()
    requested_by: str = Field(max_length=ID)
    policy_version: int
    quote: dict[str, Any] = Field(sa_type=JsonDoc)
    quote_fingerprint: str = Field(max_length=64)
    request: dict[str, Any] = Field(sa_type=JsonDoc)
    request_fingerprint: str = Field(sa_type=Text)
    created_at: datetime = created()
    updated_at: datetime = created()
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
    amount: int = money()


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
    amount: int = money()
    consumed: int = money(0)
    state: str = Field(default="active", max_length=16)
    created_at: datetime = created()
    updated_at: datetime = created()


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
    amount: int = money()
    currency: str = Field(max_length=3)
    status: str = Field(default="pending", max_length=32)
    provider_ref: str = Field(default="", max_length=256)
    created_at: datetime = created()
    updated_at: datetime = created()


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
    created_at: datetime = created()
