"""The outbox's index by refund covers the lease: (refund_id, status, id).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

A run leases its refund's pending notices (``lease_outbox`` with a refund id) after every batch
of writes. With only an index on ``refund_id`` and one on ``(status, id)``, SQLite's planner
took the second: it walked every pending row of every refund to find this refund's few, so a
backlog (a mail server down for a while, thousands of rows pending) made every refund's lease
slower. One index on ``(refund_id, status, id)`` answers the lease with the refund's own pending
rows in order; it also serves every lookup by refund alone, so it replaces ``ix_outbox_refund_id``
(one index to keep up per insert, as before).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_outbox_refund_id_status_id", "outbox", ["refund_id", "status", "id"])
    op.drop_index("ix_outbox_refund_id", table_name="outbox")


def downgrade() -> None:
    op.create_index("ix_outbox_refund_id", "outbox", ["refund_id"])
    op.drop_index("ix_outbox_refund_id_status_id", table_name="outbox")
