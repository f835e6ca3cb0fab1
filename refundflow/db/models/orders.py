"""Orders as the order system reports them, and what may still be refunded from each payment."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    ForeignKeyConstraint,
    Index,
    Integer,
)
from sqlmodel import Field, SQLModel

from refundflow.db.models.fields import ID, created, money
from refundflow.db.types import JsonDoc, UtcDateTime


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
    created_at: datetime = created()
    updated_at: datetime = created()


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
    unit_price: int = money()
    line_discount: int = money(0)


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
    amount: int = money()
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
    captured: int = money()
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
    captured: int = money()
    reserved: int = money(0)
    refunded: int = money(0)
    updated_at: datetime = created()
