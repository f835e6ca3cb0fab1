"""The ledger, the audit trail, the outbox, idempotency keys and provider webhooks."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Index,
    Text,
    UniqueConstraint,
)
from sqlmodel import Field, SQLModel

from refundflow.db.models.fields import ID, created, money
from refundflow.db.types import BigId, JsonDoc, UtcDateTime


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
    created_at: datetime = created()


class LedgerEntryRow(SQLModel, table=True):
    """Signed amount: debit positive, credit negative. No foreign key to the posting, since
    entries are written first; only entries whose posting exists count."""

    __tablename__ = "ledger_entries"
    __table_args__ = (CheckConstraint("amount <> 0", name="non_zero"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    posting_id: str = Field(max_length=256, index=True)
    account: str = Field(max_length=256, index=True)
    amount: int = money()


class AuditEventRow(SQLModel, table=True):
    """Append-only: triggers refuse UPDATE and DELETE. No foreign key to refunds because
    events are recorded before a refund row exists (e.g. a rejection at review)."""

    __tablename__ = "audit_events"

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    refund_id: str | None = Field(default=None, max_length=ID, index=True)
    kind: str = Field(max_length=64)
    actor: str = Field(max_length=ID)
    data: dict[str, Any] = Field(default_factory=dict, sa_type=JsonDoc)
    created_at: datetime = created()


class OutboxRow(SQLModel, table=True):
    """A notification written in the same transaction as the change it announces."""

    __tablename__ = "outbox"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'sent', 'failed')", name="status"),
        CheckConstraint("attempts >= 0", name="attempts"),
        Index(None, "status", "id"),
        # A run's lease of its own pending rows, in order (and every lookup by refund).
        Index(None, "refund_id", "status", "id"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    refund_id: str | None = Field(default=None, max_length=ID)
    channel: str = Field(max_length=32)
    template: str = Field(max_length=128)
    locale: str = Field(default="en", max_length=16)
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=JsonDoc)
    status: str = Field(default="pending", max_length=16)
    attempts: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    last_error: str = Field(default="", sa_type=Text)
    created_at: datetime = created()
    updated_at: datetime = created()
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
    created_at: datetime = created()
    updated_at: datetime = created()


class WebhookEventRow(SQLModel, table=True):
    __tablename__ = "webhook_events"
    __table_args__ = (UniqueConstraint("provider", "event_id"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    provider: str = Field(max_length=32)
    event_id: str = Field(max_length=256)
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=JsonDoc)
    received_at: datetime = created()
