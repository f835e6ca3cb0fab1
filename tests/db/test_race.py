"""docs/architecture.md, "Books and the database": 20 concurrent refunds on one order can never
exceed what was captured."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlmodel import func, select

from refundflow.db.engine import make_engine, new_session
from refundflow.db.models import RefundRow, ReservationRow
from refundflow.db.repository import create_refund, upsert_merchant, upsert_order
from refundflow.domain.errors import OverRefund
from refundflow.domain.states import RefundStatus
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
    # One connection per thread, opened before the start so the race is on the row, not the pool.
    engine = make_engine(db_url, pool_size=THREADS, max_overflow=0)
    try:
        snapshot = b.order(payments=[b.payment("p1", CAPTURED)])
        with new_session(engine) as session:
            upsert_merchant(session, merchant_id=b.MERCHANT)
            upsert_order(session, order=snapshot)
            session.commit()
        warm = [engine.connect() for _ in range(THREADS)]
        for conn in warm:
            conn.close()

        barrier = threading.Barrier(THREADS)

        def attempt(i: int) -> str:
            with new_session(engine) as session:
                barrier.wait()
                try:
                    create_refund(
                        session,
                        refund_id=f"race-{i:02d}",
                        order=snapshot,
                        request=b.request(snapshot),
                        quote=b.quote(snapshot, {"p1": each}),
                        requested_by="desk-1",
                        policy_version=1,
                        status=RefundStatus.UNDER_REVIEW,
                    )
                    session.commit()
                    return "reserved"
                except OverRefund as exc:
                    session.rollback()
                    assert exc.code == "over_refund"
                    assert f"{each} from payment p1" in exc.message
                    return "over_refund"
                except Exception as exc:  # anything else (deadlock, lock timeout) is a failure
                    session.rollback()
                    return f"{type(exc).__name__}: {exc}"

        with ThreadPoolExecutor(THREADS) as pool:
            outcomes = Counter(pool.map(attempt, range(THREADS)))

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
