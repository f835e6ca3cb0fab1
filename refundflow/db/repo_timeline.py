"""The writes every refund run makes several times, as Core statements built once
(``refundflow.db.core``): a run's timeline entries (audit rows and the notices they queue),
the refund row's status and the outbox marks. The SQL is the same on SQLite and PostgreSQL,
and so are the rows: every column is given, as the models' defaults would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import CursorResult, bindparam, literal
from sqlmodel import Session

from refundflow.db.core import expire_copy, flush_pending, table_of
from refundflow.db.models import AuditEventRow, OutboxRow, RefundRow
from refundflow.db.types import utcnow
from refundflow.domain.errors import InvalidInput

_AUDIT = table_of(AuditEventRow)
_OUTBOX = table_of(OutboxRow)
_REFUNDS = table_of(RefundRow)

_SEQ = _AUDIT.c.data["seq"].as_integer()
_ENTRIES_FROM = (
    _AUDIT.select()
    .with_only_columns(_AUDIT.c.kind, _SEQ)
    .where(_AUDIT.c.refund_id == bindparam("refund_id"), bindparam("from_seq") <= _SEQ)
)
_SET_STATUS = (
    _REFUNDS.update()
    .where(
        _REFUNDS.c.refund_id == bindparam("key_refund_id"),
        _REFUNDS.c.status != bindparam("new_status"),
    )
    .values(status=bindparam("new_status"), updated_at=bindparam("at"))
)
_INSERT_AUDIT = _AUDIT.insert()
_INSERT_OUTBOX = _OUTBOX.insert()
_MARK = (
    _OUTBOX.update()
    .where(_OUTBOX.c.id == bindparam("outbox_id"))
    .values(
        attempts=_OUTBOX.c.attempts + literal(1),
        status=bindparam("new_status"),
        last_error=bindparam("error"),
        updated_at=bindparam("at"),
        locked_until=None,  # the attempt is over: a retry may take the row at once
    )
)


def recorded_entries(session: Session, *, refund_id: str, from_seq: int) -> list[tuple[str, int]]:
    """``(kind, seq)`` of the refund's timeline entries in the database from ``from_seq`` on."""
    rows = session.execute(_ENTRIES_FROM, {"refund_id": refund_id, "from_seq": from_seq})
    return [(kind, int(seq)) for kind, seq in rows]


def set_status(session: Session, *, refund_id: str, status: str, at: datetime) -> None:
    """The refund row's status, written only when it changes (no row: nothing to write)."""
    session.execute(_SET_STATUS, {"key_refund_id": refund_id, "new_status": status, "at": at})
    expire_copy(session, RefundRow, refund_id)


@dataclass
class EntryRows:
    """The rows of a batch's timeline entries, written together by :func:`insert_entries`."""

    audit: list[dict[str, Any]] = field(default_factory=list)
    outbox: list[dict[str, Any]] = field(default_factory=list)

    def add_audit(
        self, *, refund_id: str, kind: str, actor: str, data: dict[str, Any], at: datetime
    ) -> None:
        self.audit.append(
            {"refund_id": refund_id, "kind": kind, "actor": actor, "data": data, "created_at": at}
        )

    def add_notice(
        self,
        *,
        refund_id: str,
        channel: str,
        template: str,
        locale: str,
        payload: dict[str, Any],
        at: datetime,
    ) -> None:
        self.outbox.append(
            {
                "refund_id": refund_id,
                "channel": channel,
                "template": template,
                "locale": locale,
                "payload": payload,
                "status": "pending",
                "attempts": 0,
                "last_error": "",
                "created_at": at,
                "updated_at": at,
                "deliveries": {},
                "locked_until": None,
            }
        )


def insert_entries(session: Session, rows: EntryRows) -> None:
    """Audit rows in the order given, then their notices, each kind in one statement.

    Rows the session holds unwritten (added through the ORM) go first, so ids follow the order
    the caller wrote in."""
    if not rows.audit and not rows.outbox:
        return
    flush_pending(session)
    if rows.audit:
        session.execute(_INSERT_AUDIT, rows.audit)
    if rows.outbox:
        session.execute(_INSERT_OUTBOX, rows.outbox)


@dataclass(frozen=True)
class OutboxMark:
    """How a delivery attempt of an outbox row ended (see :func:`mark_outbox_rows`)."""

    outbox_id: int
    sent: bool
    error: str = ""
    give_up: bool = False


def mark_outbox_rows(
    session: Session, marks: Sequence[OutboxMark], *, at: datetime | None = None
) -> None:
    """Record delivery attempts: each row sent, failed for now (stays pending), or failed for
    good; its attempt counts in the database, whatever copy of the row the caller has."""
    if not marks:
        return
    at = at or utcnow()
    params = [
        {
            "outbox_id": mark.outbox_id,
            "new_status": "sent" if mark.sent else ("failed" if mark.give_up else "pending"),
            "error": mark.error,
            "at": at,
        }
        for mark in marks
    ]
    result = session.execute(_MARK, params[0] if len(params) == 1 else params)
    # Drivers that cannot count the rows of a batch say so; those that can are checked.
    counted = len(params) == 1 or session.get_bind().dialect.supports_sane_multi_rowcount
    if counted and isinstance(result, CursorResult) and result.rowcount != len(marks):
        raise InvalidInput(
            f"unknown outbox row among {[m.outbox_id for m in marks]}", code="unknown_outbox"
        )
    for mark in marks:
        expire_copy(session, OutboxRow, mark.outbox_id)
