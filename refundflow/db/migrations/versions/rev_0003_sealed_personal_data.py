"""Customer data sealed in the refunds table, and erasable.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

- refunds.personal_sealed: the customer's email, phone and bank account (number, holder),
  sealed with the encryption keys (``refundflow.db.personal``);
- refunds.personal_masked: their masks, which API answers show;
- refunds.personal_erased_at: when the retention schedule erased them.

Existing rows are migrated: their personal data moves from ``request`` into the sealed column,
``request`` keeping masks. That needs the encryption keys (REFUNDFLOW_ENCRYPTION_KEYS or the
keys file); without them, and rows to seal, the migration stops and says so. Columns are only
added, so ``recreate="never"`` (see 0002). The downgrade drops the columns; it cannot put the
plaintext back, by design.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from refundflow.db.personal import masked, seal_personal, split_personal

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("refunds", recreate="never") as batch:
        batch.add_column(sa.Column("personal_sealed", sa.Text(), nullable=True))
        batch.add_column(sa.Column("personal_masked", _JSON, nullable=True))
        batch.add_column(sa.Column("personal_erased_at", sa.DateTime(timezone=True), nullable=True))
    _seal_existing_rows()


def _seal_existing_rows() -> None:
    refunds = sa.table(
        "refunds",
        sa.column("refund_id", sa.String),
        sa.column("request", _JSON),
        sa.column("personal_sealed", sa.Text),
        sa.column("personal_masked", _JSON),
    )
    connection = op.get_bind()
    rows = connection.execute(sa.select(refunds.c.refund_id, refunds.c.request)).all()
    keyring = None
    for refund_id, request in rows:
        stored, personal = split_personal(request or {})
        if not personal:
            continue
        if keyring is None:
            keyring = _keyring()
        connection.execute(
            refunds.update()
            .where(refunds.c.refund_id == refund_id)
            .values(
                request=stored,
                personal_sealed=seal_personal(keyring, refund_id, personal),
                personal_masked=masked(personal),
            )
        )


def _keyring():  # type: ignore[no-untyped-def]
    from refundflow.crypto import KeyringError
    from refundflow.settings import get_settings

    try:
        return get_settings().keyring()
    except KeyringError as exc:
        raise RuntimeError(
            f"migration 0003 seals the customer data of existing refunds: {exc.message}"
        ) from None


def downgrade() -> None:
    with op.batch_alter_table("refunds", recreate="never") as batch:
        batch.drop_column("personal_erased_at")
        batch.drop_column("personal_masked")
        batch.drop_column("personal_sealed")
