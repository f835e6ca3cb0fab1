"""Notification settings: the merchant's webhook, and per-channel delivery state of the outbox.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29

- merchants.webhook_url / webhook_secret: where every notice of the merchant's refunds is
  POSTed, and the HMAC key its ``Refundflow-Signature`` header is made with (both nullable:
  no webhook until the merchant configures one);
- outbox.deliveries: JSON object, channel -> outcome, so a retry skips channels already done;
- outbox.locked_until: the lease of the sender delivering a row, so two senders never deliver
  the same row at once without holding a transaction open during the network calls.

Columns are only added, so ``recreate="never"``: SQLite does it with ALTER TABLE and keeps the
tables' CHECK constraints and triggers, which a copy-and-move rebuild would lose.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("merchants", recreate="never") as batch:
        batch.add_column(sa.Column("webhook_url", sa.String(2048), nullable=True))
        batch.add_column(sa.Column("webhook_secret", sa.String(256), nullable=True))
    with op.batch_alter_table("outbox", recreate="never") as batch:
        batch.add_column(sa.Column("deliveries", _JSON, server_default="{}", nullable=False))
        batch.add_column(sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox", recreate="never") as batch:
        batch.drop_column("locked_until")
        batch.drop_column("deliveries")
    with op.batch_alter_table("merchants", recreate="never") as batch:
        batch.drop_column("webhook_secret")
        batch.drop_column("webhook_url")
