"""Merchants, their API keys, policies and customers' store balances."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
)
from sqlmodel import Field, SQLModel

from refundflow.db.models.fields import ID, created, money
from refundflow.db.types import JsonDoc, UtcDateTime


class MerchantRow(SQLModel, table=True):
    __tablename__ = "merchants"

    merchant_id: str = Field(primary_key=True, max_length=ID)
    name: str = Field(default="", max_length=200)
    created_at: datetime = created()
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
    created_at: datetime = created()
    revoked_at: datetime | None = Field(default=None, sa_type=UtcDateTime)


class PolicyRow(SQLModel, table=True):
    __tablename__ = "policies"
    __table_args__ = (CheckConstraint("version >= 1", name="version"),)

    merchant_id: str = Field(primary_key=True, foreign_key="merchants.merchant_id", max_length=ID)
    version: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    document: dict[str, Any] = Field(sa_type=JsonDoc)
    created_at: datetime = created()


class CustomerBalanceRow(SQLModel, table=True):
    """The store-balance wallet: refunds to ``BALANCE`` land here."""

    __tablename__ = "customer_balances"
    __table_args__ = (CheckConstraint("balance >= 0", name="non_negative"),)

    merchant_id: str = Field(primary_key=True, foreign_key="merchants.merchant_id", max_length=ID)
    customer_id: str = Field(primary_key=True, max_length=ID)
    currency: str = Field(primary_key=True, max_length=3)
    balance: int = money(0)
    updated_at: datetime = created()
