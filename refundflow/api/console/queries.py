"""What the console's lists show, read from the database only (a list never asks thousands of
runs for their view): the rows, the policy's deadlines, and the run's own words from the audit
trail (why it escalated, that its money is late)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func
from sqlmodel import Session, col, select

from refundflow.api.deps import Principal
from refundflow.api.refund_messages import awaiting_decision, awaiting_query
from refundflow.db.models import AuditEventRow, RefundRow
from refundflow.db.repository import get_policy
from refundflow.domain.policy import DEFAULT_POLICY, Policy
from refundflow.domain.states import TERMINAL, RefundStatus

PAGE = 100
"""Rows a list shows at once; the rest load on demand (htmx), so 2,000 waiting refunds cost
one page of HTML, not 2,000 rows of it."""


@dataclass(frozen=True)
class Item:
    row: RefundRow
    note: str = ""
    """Why the refund is listed (the escalation's reason, the late notice), in the run's words."""
    noted_at: datetime | None = None
    deadline: datetime | None = None


class Policies:
    """Each merchant policy version read once per request."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.cache: dict[tuple[str, int], Policy] = {}

    def of(self, row: RefundRow) -> Policy:
        key = (row.merchant_id, row.policy_version)
        if key not in self.cache:
            found = get_policy(
                self.session, merchant_id=row.merchant_id, version=row.policy_version
            )
            self.cache[key] = found or DEFAULT_POLICY
        return self.cache[key]


def aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def inbox(session: Session, principal: Principal, *, offset: int = 0) -> tuple[list[Item], int]:
    """One page of the approver's inbox, oldest first, each with the moment the run escalates
    it for want of a decision (the policy's approval SLA from when it began waiting); and how
    many wait in all."""
    policies = Policies(session)
    rows = awaiting_decision(session, principal, limit=PAGE, offset=offset)
    items = [
        Item(
            row=row,
            deadline=aware(row.updated_at)
            + timedelta(hours=policies.of(row).approval_sla.escalate_after_hours),
        )
        for row in rows
    ]
    return items, count_awaiting(session, principal)


def count_awaiting(session: Session, principal: Principal) -> int:
    waiting = awaiting_query(principal).subquery()
    return int(session.exec(select(func.count()).select_from(waiting)).one())


def with_status(
    session: Session, principal: Principal, statuses: list[RefundStatus]
) -> list[RefundRow]:
    stmt = (
        select(RefundRow)
        .where(
            RefundRow.merchant_id == principal.merchant_id,
            col(RefundRow.status).in_([s.value for s in statuses]),
        )
        .order_by(col(RefundRow.updated_at), col(RefundRow.refund_id))
        .limit(PAGE)
    )
    return list(session.exec(stmt).all())


def recent(
    session: Session, principal: Principal, *, status: str = "", order_id: str = ""
) -> list[RefundRow]:
    """The merchant's latest refunds, newest first, by status and order when given."""
    stmt = select(RefundRow).where(RefundRow.merchant_id == principal.merchant_id)
    if status:
        stmt = stmt.where(RefundRow.status == status)
    if order_id:
        stmt = stmt.where(RefundRow.order_id == order_id)
    stmt = stmt.order_by(col(RefundRow.created_at).desc(), col(RefundRow.refund_id).desc())
    return list(session.exec(stmt.limit(PAGE)).all())


def _last_events(session: Session, refund_ids: list[str], kind: str) -> dict[str, AuditEventRow]:
    if not refund_ids:
        return {}
    stmt = (
        select(AuditEventRow)
        .where(col(AuditEventRow.refund_id).in_(refund_ids), AuditEventRow.kind == kind)
        .order_by(col(AuditEventRow.id))
    )
    return {e.refund_id: e for e in session.exec(stmt).all() if e.refund_id}


def needing_attention(session: Session, principal: Principal) -> list[Item]:
    """Refunds in NEEDS_ATTENTION, with the reason the run gave when it escalated."""
    rows = with_status(session, principal, [RefundStatus.NEEDS_ATTENTION])
    why = _last_events(session, [r.refund_id for r in rows], "escalated")
    return [_noted(row, why.get(row.refund_id)) for row in rows]


def late(session: Session, principal: Principal) -> list[Item]:
    """Refunds still open whose money the run found late (past the expected arrival, the
    customer told): the run's ``delay_notice``."""
    stmt = (
        select(RefundRow)
        .join(AuditEventRow, col(AuditEventRow.refund_id) == col(RefundRow.refund_id))
        .where(
            RefundRow.merchant_id == principal.merchant_id,
            col(RefundRow.status).not_in([s.value for s in TERMINAL]),
            AuditEventRow.kind == "delay_notice",
        )
        .distinct()
        .order_by(col(RefundRow.updated_at), col(RefundRow.refund_id))
        .limit(PAGE)
    )
    rows = list(session.exec(stmt).all())
    notices = _last_events(session, [r.refund_id for r in rows], "delay_notice")
    return [_noted(row, notices.get(row.refund_id)) for row in rows]


def _noted(row: RefundRow, event: AuditEventRow | None) -> Item:
    if event is None:
        return Item(row=row)
    return Item(row=row, note=str(event.data.get("message", "")), noted_at=event.created_at)


def audit_trail(session: Session, refund_id: str) -> list[AuditEventRow]:
    """The refund's timeline as the database recorded it (when the run gives no view)."""
    stmt = (
        select(AuditEventRow)
        .where(AuditEventRow.refund_id == refund_id)
        .order_by(col(AuditEventRow.id))
    )
    return list(session.exec(stmt).all())
