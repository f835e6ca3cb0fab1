"""The double-entry ledger and the append-only audit trail."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func
from sqlmodel import Session, col, select

from refundflow.db.core import flush_pending, table_of
from refundflow.db.guards import Violation, atomic
from refundflow.db.models import AuditEventRow, LedgerEntryRow, LedgerPostingRow
from refundflow.db.types import utcnow
from refundflow.domain.errors import DomainError, InvalidInput


def post_ledger(
    session: Session,
    *,
    posting_id: str,
    entries: Sequence[tuple[str, int]],
    memo: str = "",
    currency: str,
    refund_id: str | None = None,
    at: datetime | None = None,
) -> LedgerPostingRow:
    """Write one balanced posting: ``entries`` are ``(account, amount)``, debit positive and
    credit negative, all in ``currency``. The database refuses a posting whose entries are
    fewer than two or do not sum to zero (``unbalanced_posting``). Posting the same id again
    with the same entries returns the stored posting (a retry)."""
    existing = session.execute(_POSTING, {"posting_id": posting_id}).first()
    if existing is not None:
        if _entries(session, posting_id) != sorted(entries):
            raise DomainError(
                f"posting {posting_id} exists with other entries", code="duplicate_posting"
            )
        return LedgerPostingRow.model_validate(existing._mapping)
    posting = LedgerPostingRow(
        posting_id=posting_id,
        refund_id=refund_id,
        currency=currency,
        memo=memo,
        created_at=at or utcnow(),
    )
    rows = [
        {"posting_id": posting_id, "account": account, "amount": amount}
        for account, amount in entries
    ]
    with atomic(session, _entry_refusal):
        flush_pending(session)  # (refundflow.db.core) what the caller wrote first
        # Entries first: the posting's trigger checks them and closes the posting.
        if rows:
            session.execute(_INSERT_ENTRIES, rows)
        session.execute(_INSERT_POSTING, posting.model_dump())
    return posting


def posting_exists(session: Session, *, posting_id: str) -> bool:
    return session.execute(_POSTING, {"posting_id": posting_id}).first() is not None


# Built once (refundflow.db.core): every payout posts one.
_POSTINGS = table_of(LedgerPostingRow)
_POSTING = _POSTINGS.select().where(_POSTINGS.c.posting_id == bindparam("posting_id"))
_INSERT_ENTRIES = table_of(LedgerEntryRow).insert()
_INSERT_POSTING = _POSTINGS.insert()


def account_balance(session: Session, *, account: str, currency: str) -> int:
    """Sum of the account's entries in posted (balanced) postings of ``currency``."""
    statement = (
        select(func.coalesce(func.sum(LedgerEntryRow.amount), 0))
        .select_from(LedgerEntryRow)
        .join(LedgerPostingRow, col(LedgerPostingRow.posting_id) == col(LedgerEntryRow.posting_id))
        .where(LedgerEntryRow.account == account, LedgerPostingRow.currency == currency)
    )
    return int(session.exec(statement).one())


def _entries(session: Session, posting_id: str) -> list[tuple[str, int]]:
    statement = select(LedgerEntryRow.account, LedgerEntryRow.amount).where(
        LedgerEntryRow.posting_id == posting_id
    )
    return sorted((account, int(amount)) for account, amount in session.exec(statement).all())


def _entry_refusal(violation: Violation) -> DomainError | None:
    if violation.name == "ck_ledger_entries_non_zero":
        return InvalidInput("a ledger entry of zero means nothing", code="invalid_posting")
    return None


def append_audit(
    session: Session,
    *,
    refund_id: str | None,
    kind: str,
    actor: str,
    data: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> AuditEventRow:
    """Append an audit event. There is deliberately no update or delete: the database
    refuses both (``audit_immutable``)."""
    row = AuditEventRow(
        refund_id=refund_id, kind=kind, actor=actor, data=data or {}, created_at=at or utcnow()
    )
    # Written with the transaction's next flush, in one statement with the other rows added
    # meanwhile; nothing in an insert with every value given can be refused (no savepoint).
    session.add(row)
    return row


def list_audit(session: Session, *, refund_id: str) -> list[AuditEventRow]:
    statement = (
        select(AuditEventRow)
        .where(AuditEventRow.refund_id == refund_id)
        .order_by(col(AuditEventRow.id))
    )
    return list(session.exec(statement).all())
