from __future__ import annotations

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from refundflow.db.guards import violation_of
from refundflow.db.models import ApprovalRow, PayoutRow
from refundflow.db.repository import (
    get_payout,
    list_approvals,
    record_approval,
    register_payout_key,
    set_payout_status,
    settle_payout,
    upsert_order,
)
from refundflow.domain.errors import DomainError, OverRefund
from refundflow.domain.states import PayoutStatus, RefundStatus
from tests.db import builders as b
from tests.db.helpers import balances, count

FINGERPRINT = "f" * 32


@pytest.fixture
def refund(session: Session) -> str:
    snapshot = b.order()
    upsert_order(session, order=snapshot)
    b.refund(session, snapshot, {"p1": 6000}, status=RefundStatus.AWAITING_APPROVAL)
    session.commit()
    return "r-1"


def _register(
    session: Session, key: str = "r-1:1:1", *, amount: int = 6000, route: str = "alipay"
) -> int:
    return register_payout_key(
        session,
        payout_key=key,
        refund_id="r-1",
        seq=1,
        generation=1,
        route=route,
        amount=amount,
        currency="CNY",
    )


def test_payout_key_is_idempotent_for_the_same_data(
    session: Session, engine: Engine, refund: str
) -> None:
    first = _register(session)
    session.commit()
    again = _register(session)
    session.commit()
    assert again == first
    assert count(engine, PayoutRow) == 1


def test_payout_key_with_other_data_is_refused(
    session: Session, engine: Engine, refund: str
) -> None:
    _register(session)
    session.commit()
    with pytest.raises(DomainError) as err:
        _register(session, amount=5999)
    assert err.value.code == "duplicate_payout_key"
    # The same tranche and generation under another key is the same payout twice.
    with pytest.raises(DomainError) as err:
        _register(session, key="r-1:1:1-bis")
    assert err.value.code == "duplicate_payout_key"
    session.commit()
    assert count(engine, PayoutRow) == 1


def test_unique_constraint_refuses_a_raw_duplicate(
    session: Session, engine: Engine, refund: str
) -> None:
    _register(session)
    session.commit()
    insert = text(
        "INSERT INTO payouts (payout_key, refund_id, seq, generation, route, amount, currency,"
        " status, provider_ref) VALUES ('r-1:1:1', 'r-1', 2, 1, 'alipay', 1, 'CNY', 'pending', '')"
    )
    with pytest.raises(IntegrityError) as err, engine.begin() as conn:
        conn.execute(insert)
    assert violation_of(err.value).name == "uq_payouts_payout_key"
    assert count(engine, PayoutRow) == 1


def test_settle_consumes_the_hold_once(session: Session, engine: Engine, refund: str) -> None:
    _register(session)
    set_payout_status(session, payout_key="r-1:1:1", status=PayoutStatus.ACCEPTED)
    session.commit()
    assert settle_payout(session, payout_key="r-1:1:1", charges={"p1": 6000}, provider_ref="ali-9")
    session.commit()
    assert not settle_payout(session, payout_key="r-1:1:1", charges={"p1": 6000})  # duplicate
    session.commit()
    assert balances(engine)["p1"] == (10000, 0, 6000)
    payout = get_payout(session, payout_key="r-1:1:1")
    assert payout is not None and (payout.status, payout.provider_ref) == ("settled", "ali-9")


def test_settle_cannot_take_more_than_the_hold(
    session: Session, engine: Engine, refund: str
) -> None:
    _register(session, amount=7000)
    session.commit()
    with pytest.raises(OverRefund):
        settle_payout(session, payout_key="r-1:1:1", charges={"p1": 7000})
    session.commit()
    assert balances(engine)["p1"] == (10000, 6000, 0)
    payout = get_payout(session, payout_key="r-1:1:1")
    assert payout is not None and payout.status == "pending"


def test_self_approval_is_refused(session: Session, engine: Engine, refund: str) -> None:
    with pytest.raises(DomainError) as err:
        record_approval(
            session,
            refund_id="r-1",
            approver_id="desk-1",
            decision="APPROVE",
            quote_fingerprint=FINGERPRINT,
        )
    session.commit()
    assert err.value.code == "self_approval"
    assert count(engine, ApprovalRow) == 0


def test_self_approval_is_refused_by_the_database_itself(
    session: Session, engine: Engine, refund: str
) -> None:
    insert = text(
        "INSERT INTO approvals (refund_id, approver_id, requested_by, decision,"
        " quote_fingerprint, comment) VALUES ('r-1', :approver, :requester, 'APPROVE', :fp, '')"
    )
    session.commit()
    with pytest.raises(IntegrityError) as err, engine.begin() as conn:
        conn.execute(insert, {"approver": "desk-1", "requester": "desk-1", "fp": FINGERPRINT})
    assert violation_of(err.value).name == "ck_approvals_not_self"
    # Naming someone else as the requester does not help: it must be the refund's requester.
    with pytest.raises(IntegrityError) as err, engine.begin() as conn:
        conn.execute(insert, {"approver": "desk-1", "requester": "nobody", "fp": FINGERPRINT})
    assert violation_of(err.value).kind == "foreign_key"
    assert count(engine, ApprovalRow) == 0


def test_one_approver_counts_once(session: Session, engine: Engine, refund: str) -> None:
    def approve(approver_id: str, decision: str = "APPROVE") -> ApprovalRow:
        return record_approval(
            session,
            refund_id="r-1",
            approver_id=approver_id,
            decision=decision,
            quote_fingerprint=FINGERPRINT,
        )

    first = approve("fin-1")
    again = approve("fin-1")
    approve("fin-2")
    session.commit()
    assert again == first
    with pytest.raises(DomainError) as err:
        approve("fin-1", "REJECT")
    assert err.value.code == "approval_conflict"
    session.commit()
    approvers = [a.approver_id for a in list_approvals(session, refund_id="r-1")]
    assert approvers == ["fin-1", "fin-2"]
    assert all(a.requested_by == "desk-1" for a in list_approvals(session, refund_id="r-1"))
    session.commit()  # on SQLite an open session holds the write lock the raw insert needs

    insert = text(
        "INSERT INTO approvals (refund_id, approver_id, requested_by, decision,"
        " quote_fingerprint, comment) VALUES ('r-1', 'fin-1', 'desk-1', 'APPROVE', :fp, '')"
    )
    with pytest.raises(IntegrityError) as raw, engine.begin() as conn:
        conn.execute(insert, {"fp": FINGERPRINT})
    assert violation_of(raw.value).name == "uq_approvals_refund_id_approver_id_quote_fingerprint"
