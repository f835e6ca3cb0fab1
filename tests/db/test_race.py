"""docs/architecture.md, "Books and the database": 20 concurrent refunds on one order can never
exceed what was captured; 20 concurrent claims of one idempotency key make one owner; 20
concurrent first credits of a wallet all count."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlmodel import Session, func, select

from refundflow.db.engine import make_engine, new_session
from refundflow.db.models import RefundRow, ReservationRow
from refundflow.db.repository import (
    adjust_customer_balance,
    claim_idempotency_key,
    upsert_merchant,
    upsert_order,
)
from refundflow.domain.errors import OverRefund
from refundflow.domain.orders import OrderSnapshot
from tests.db import builders as b
from tests.db.helpers import balances, count

THREADS = 20
CAPTURED = 10000  # 100.00


@pytest.mark.parametrize(
    ("each", "winners"),
    [
        (6000, 1),  # 60.00 each: exactly one fits
        (600, 16),  # 6.00 each: sixteen fit (9600), so no update may be lost either
    ],
)
def test_twenty_concurrent_reservations(db_url: str, dialect: str, each: int, winners: int) -> None:
    snapshot = b.order(payments=[b.payment("p1", CAPTURED)])

    def reserve(session: Session, i: int) -> str:
        try:
            b.refund(session, snapshot, {"p1": each}, refund_id=f"race-{i:02d}")
            return "reserved"
        except OverRefund as exc:
            session.rollback()
            assert exc.code == "over_refund"
            assert f"{each} from payment p1" in exc.message
            return "over_refund"

    outcomes = _at_once(db_url, reserve, order=snapshot)
    engine = make_engine(db_url)
    try:
        print(f"\nrace on {dialect}, {THREADS} x {each}: {dict(outcomes)}; {balances(engine)}")
        assert outcomes == {"reserved": winners, "over_refund": THREADS - winners}
        captured, reserved, refunded = balances(engine)["p1"]
        assert (captured, reserved, refunded) == (CAPTURED, each * winners, 0)
        assert reserved + refunded <= captured
        assert count(engine, RefundRow) == winners
        with new_session(engine, readonly=True) as session:
            assert session.exec(select(func.sum(ReservationRow.amount))).one() == each * winners
    finally:
        engine.dispose()


def _at_once(
    db_url: str, work: Callable[[Session, int], str], *, order: OrderSnapshot | None = None
) -> Counter[str]:
    """``work`` in THREADS sessions of their own (each given its index), released together;
    each commits what it did. ``order`` is stored first."""
    engine = make_engine(db_url, pool_size=THREADS, max_overflow=0)
    try:
        with new_session(engine) as session:
            upsert_merchant(session, merchant_id=b.MERCHANT)
            if order is not None:
                upsert_order(session, order=order)
            session.commit()
        # One connection per thread, opened before the start: the race is on the rows, not
        # the pool.
        warm = [engine.connect() for _ in range(THREADS)]
        for conn in warm:
            conn.close()
        barrier = threading.Barrier(THREADS)

        def attempt(i: int) -> str:
            with new_session(engine) as session:
                barrier.wait()
                try:
                    outcome = work(session, i)
                    session.commit()
                    return outcome
                except Exception as exc:  # a deadlock or a key violation is a failure here
                    session.rollback()
                    return f"{type(exc).__name__}: {exc}"

        with ThreadPoolExecutor(THREADS) as pool:
            return Counter(pool.map(attempt, range(THREADS)))
    finally:
        engine.dispose()


def test_concurrent_claims_of_one_idempotency_key_make_one_owner(db_url: str) -> None:
    """The claim is one INSERT ... ON CONFLICT DO NOTHING: the losers wait for the winner's
    transaction (PostgreSQL) or the write lock (SQLite), then find its claim."""

    def claim(session: Session, _: int) -> str:
        claimed = claim_idempotency_key(
            session, merchant_id=b.MERCHANT, key="one-key", request_hash="h"
        )
        return claimed.outcome.value

    assert _at_once(db_url, claim) == {"new": 1, "in_flight": THREADS - 1}


def test_concurrent_first_credits_of_a_wallet_all_count(db_url: str) -> None:
    """A first store-balance credit racing another is one upsert: none is lost, none fails."""
    engine = make_engine(db_url)

    def credit(session: Session, _: int) -> str:
        adjust_customer_balance(
            session, merchant_id=b.MERCHANT, customer_id="c-new", currency="CNY", delta=150
        )
        return "credited"

    try:
        assert _at_once(db_url, credit) == {"credited": THREADS}
        with new_session(engine) as session:
            total = adjust_customer_balance(
                session, merchant_id=b.MERCHANT, customer_id="c-new", currency="CNY", delta=0
            )
        assert total == 150 * THREADS
    finally:
        engine.dispose()
