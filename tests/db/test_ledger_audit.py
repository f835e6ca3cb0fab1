from __future__ import annotations

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from refundflow.db.guards import violation_of
from refundflow.db.models import AuditEventRow, LedgerEntryRow, LedgerPostingRow
from refundflow.db.repository import account_balance, append_audit, list_audit, post_ledger
from refundflow.domain.errors import DomainError, InvalidInput
from tests.db.helpers import count

REFUND = [("refunds_payable", 6000), ("cash:alipay", -6000)]


def test_balanced_posting_is_accepted(session: Session, engine: Engine) -> None:
    post_ledger(session, posting_id="pst-1", entries=REFUND, memo="refund r-1", currency="CNY")
    session.commit()
    again = post_ledger(session, posting_id="pst-1", entries=REFUND, currency="CNY")  # a retry
    session.commit()
    assert again.memo == "refund r-1"
    assert count(engine, LedgerEntryRow) == 2
    assert account_balance(session, account="cash:alipay", currency="CNY") == -6000
    assert account_balance(session, account="refunds_payable", currency="CNY") == 6000

    with pytest.raises(DomainError) as err:
        post_ledger(session, posting_id="pst-1", entries=[("a", 1), ("b", -1)], currency="CNY")
    assert err.value.code == "duplicate_posting"


@pytest.mark.parametrize(
    "entries",
    [
        [("refunds_payable", 6000), ("cash:alipay", -5999)],  # off by one minor unit
        [("refunds_payable", 6000)],  # one leg
        [],
    ],
)
def test_unbalanced_posting_is_refused(
    session: Session, engine: Engine, entries: list[tuple[str, int]]
) -> None:
    with pytest.raises(DomainError) as err:
        post_ledger(session, posting_id="pst-1", entries=entries, currency="CNY")
    session.commit()
    assert err.value.code == "unbalanced_posting"
    assert count(engine, LedgerPostingRow) == 0
    assert count(engine, LedgerEntryRow) == 0


def test_zero_entry_is_refused(session: Session, engine: Engine) -> None:
    with pytest.raises(InvalidInput) as err:
        post_ledger(session, posting_id="p", entries=[("a", 0), ("b", 0)], currency="CNY")
    assert err.value.code == "invalid_posting"


def test_ledger_guards_hold_against_raw_sql(session: Session, engine: Engine) -> None:
    post_ledger(session, posting_id="pst-1", entries=REFUND, currency="CNY")
    session.commit()
    attempts = {
        "UPDATE ledger_entries SET amount = 1 WHERE posting_id = 'pst-1'": "ledger_immutable",
        "DELETE FROM ledger_entries WHERE posting_id = 'pst-1'": "ledger_immutable",
        "DELETE FROM ledger_postings": "ledger_immutable",
        "INSERT INTO ledger_entries (posting_id, account, amount) VALUES ('pst-1', 'x', 5)": (
            "ledger_immutable"
        ),
        "INSERT INTO ledger_postings (posting_id, currency, memo) VALUES ('pst-2', 'CNY', '')": (
            "unbalanced_posting"
        ),
    }
    for sql, token in attempts.items():
        with pytest.raises(IntegrityError) as err, engine.begin() as conn:
            conn.execute(text(sql))
        assert violation_of(err.value).name == token, sql
    assert count(engine, LedgerEntryRow) == 2
    assert account_balance(session, account="cash:alipay", currency="CNY") == -6000


def test_audit_rows_cannot_be_changed(session: Session, engine: Engine, dialect: str) -> None:
    row = append_audit(
        session, refund_id="r-1", kind="status_changed", actor="system", data={"to": "PAYING"}
    )
    session.commit()
    attempts = [
        "UPDATE audit_events SET actor = 'mallory' WHERE id = :id",
        "UPDATE audit_events SET data = '{}' WHERE id = :id",
        "DELETE FROM audit_events WHERE id = :id",
    ]
    if dialect == "postgresql":
        attempts.append("TRUNCATE audit_events")
    for sql in attempts:
        with pytest.raises(IntegrityError) as err, engine.begin() as conn:
            conn.execute(text(sql), {"id": row.id})
        assert violation_of(err.value).name == "audit_immutable", sql
    events = list_audit(session, refund_id="r-1")
    assert [(e.kind, e.actor, e.data) for e in events] == [
        ("status_changed", "system", {"to": "PAYING"})
    ]
    assert count(engine, AuditEventRow) == 1


def test_audit_update_through_the_orm_is_refused_too(session: Session, engine: Engine) -> None:
    row = append_audit(session, refund_id="r-1", kind="created", actor="desk-1")
    session.commit()
    row.actor = "mallory"
    session.add(row)
    with pytest.raises(IntegrityError) as err:
        session.commit()
    session.rollback()
    assert violation_of(err.value).name == "audit_immutable"
