from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from refundflow.db.models import RefundLineRow, RefundRow, ReservationRow
from refundflow.db.repository import (
    consume_holds,
    count_recent_refunds,
    create_refund,
    prior_refunds,
    release_reservation,
    requote_refund,
    reservations,
    set_refund_status,
    upsert_order,
)
from refundflow.domain.errors import CurrencyMismatch, DomainError, InvalidInput, OverRefund
from refundflow.domain.orders import OrderSnapshot
from refundflow.domain.quote import Quote
from refundflow.domain.states import RefundStatus
from tests.db import builders as b
from tests.db.helpers import balances, count


def _refund(session: Session, snapshot: OrderSnapshot, quote: Quote, refund_id: str = "r-1"):
    return create_refund(
        session,
        refund_id=refund_id,
        order=snapshot,
        request=b.request(snapshot),
        quote=quote,
        requested_by="desk-1",
        policy_version=1,
        status=RefundStatus.UNDER_REVIEW,
    )


@pytest.fixture
def order(session: Session) -> OrderSnapshot:
    snapshot = b.order(payments=[b.payment("p1", 10000), b.payment("p2", 3000, method="card")])
    upsert_order(session, order=snapshot)
    session.commit()
    return snapshot


def _nothing_written(engine: Engine) -> None:
    assert count(engine, RefundRow) == 0
    assert count(engine, RefundLineRow) == 0
    assert count(engine, ReservationRow) == 0
    assert balances(engine) == {"p1": (10000, 0, 0), "p2": (3000, 0, 0)}


def test_reservation_within_captured(session: Session, engine: Engine, order) -> None:
    row = _refund(session, order, b.quote(order, {"p1": 6000, "p2": 3000}))
    session.commit()
    assert (row.refund_id, row.total, row.currency, row.status) == (
        "r-1",
        9000,
        "CNY",
        "UNDER_REVIEW",
    )
    assert row.created_at.tzinfo is not None
    assert balances(engine) == {"p1": (10000, 6000, 0), "p2": (3000, 3000, 0)}
    holds = {
        h.payment_id: (h.amount, h.consumed, h.state)
        for h in reservations(session, refund_id="r-1")
    }
    assert holds == {"p1": (6000, 0, "active"), "p2": (3000, 0, "active")}


def test_over_reservation_raises_and_writes_nothing(
    session: Session, engine: Engine, order
) -> None:
    with pytest.raises(OverRefund) as err:
        _refund(session, order, b.quote(order, {"p1": 6000, "p2": 3001}))
    session.commit()  # even committing the caller's transaction writes nothing of the refund
    assert err.value.code == "over_refund"
    assert "3001 from payment p2 (3000 left)" in err.value.message
    _nothing_written(engine)


def test_second_refund_over_what_is_left(session: Session, engine: Engine, order) -> None:
    _refund(session, order, b.quote(order, {"p1": 6000}), "r-1")
    session.commit()
    with pytest.raises(OverRefund):
        _refund(session, order, b.quote(order, {"p1": 4001}), "r-2")
    session.rollback()
    _refund(session, order, b.quote(order, {"p1": 4000}), "r-3")
    session.commit()
    assert balances(engine)["p1"] == (10000, 10000, 0)
    assert count(engine, RefundRow) == 2


def test_same_refund_again_is_a_retry(session: Session, engine: Engine, order) -> None:
    quote = b.quote(order, {"p1": 6000})
    first = _refund(session, order, quote)
    session.commit()
    again = _refund(session, order, quote)
    session.commit()
    assert again.refund_id == first.refund_id
    assert balances(engine)["p1"] == (10000, 6000, 0)


def test_requote_moves_the_hold(session: Session, engine: Engine, order) -> None:
    _refund(session, order, b.quote(order, {"p1": 6000, "p2": 1000}))
    session.commit()
    lower = b.quote(order, {"p1": 5000})
    row = _refund(session, order, lower)  # same refund id, new quote: a re-quote
    session.commit()
    assert row.total == 5000 and row.quote_fingerprint == lower.fingerprint()
    assert balances(engine) == {"p1": (10000, 5000, 0), "p2": (3000, 0, 0)}

    with pytest.raises(OverRefund):
        requote_refund(session, refund_id="r-1", quote=b.quote(order, {"p1": 10001}))
    session.rollback()
    assert balances(engine)["p1"] == (10000, 5000, 0)


def test_release_and_consume(session: Session, engine: Engine, order) -> None:
    _refund(session, order, b.quote(order, {"p1": 6000, "p2": 2000}))
    session.commit()

    consume_holds(session, refund_id="r-1", charges={"p1": 2500})
    session.commit()
    assert balances(engine) == {"p1": (10000, 3500, 2500), "p2": (3000, 2000, 0)}

    with pytest.raises(OverRefund):
        consume_holds(session, refund_id="r-1", charges={"p1": 3501})
    session.rollback()

    consume_holds(session, refund_id="r-1", charges={"p2": 2000})
    session.commit()
    assert {h.payment_id: h.state for h in reservations(session, refund_id="r-1")} == {
        "p1": "active",
        "p2": "consumed",
    }

    assert release_reservation(session, refund_id="r-1") == 3500
    session.commit()
    assert balances(engine) == {"p1": (10000, 0, 2500), "p2": (3000, 0, 2000)}
    assert release_reservation(session, refund_id="r-1") == 0  # twice releases nothing

    with pytest.raises(DomainError) as err:
        consume_holds(session, refund_id="r-1", charges={"p1": 1})
    assert err.value.code == "no_active_reservation"
    session.rollback()

    # What was paid still counts against the order; what was released is free again.
    _refund(session, order, b.quote(order, {"p1": 7500, "p2": 1000}), "r-2")
    session.commit()
    assert balances(engine) == {"p1": (10000, 7500, 2500), "p2": (3000, 1000, 2000)}


def test_consuming_is_all_or_nothing(session: Session, engine: Engine, order) -> None:
    """A charge that fails refuses the whole settlement before anything is written, even
    charges checked before it."""
    _refund(session, order, b.quote(order, {"p1": 6000, "p2": 2000}))
    session.commit()
    with pytest.raises(OverRefund):
        consume_holds(session, refund_id="r-1", charges={"p1": 6000, "p2": 2001})
    with pytest.raises(InvalidInput) as err:
        consume_holds(session, refund_id="r-1", charges={"p1": 100, "p2": -1})
    assert err.value.code == "negative_amount"
    session.commit()  # the caller's transaction is still good: nothing of either was written
    assert balances(engine) == {"p1": (10000, 6000, 0), "p2": (3000, 2000, 0)}
    assert {h.payment_id: h.consumed for h in reservations(session, refund_id="r-1")} == {
        "p1": 0,
        "p2": 0,
    }


def test_prior_refunds_and_recent_count(session: Session, order) -> None:
    _refund(session, order, b.quote(order, {"p1": 6000}), "r-1")
    _refund(session, order, b.quote(order, {"p1": 1000}), "r-2")
    session.commit()
    consume_holds(session, refund_id="r-2", charges={"p1": 400})
    release_reservation(session, refund_id="r-2")
    set_refund_status(session, refund_id="r-2", status=RefundStatus.CANCELLED)
    session.commit()

    prior = prior_refunds(session, merchant_id=b.MERCHANT, order_id="o-1")
    assert [(p.refund_id, p.state, p.tender_amounts) for p in prior] == [
        ("r-1", "active", {"p1": 6000}),
        ("r-2", "completed", {"p1": 400}),  # cancelled, but 400 had been paid
    ]
    since = datetime.now(UTC) - timedelta(days=30)
    assert (
        count_recent_refunds(session, merchant_id=b.MERCHANT, customer_id="c-1", since=since) == 2
    )


def test_unknown_payment_writes_nothing(session: Session, engine: Engine, order) -> None:
    with pytest.raises(InvalidInput) as err:
        _refund(session, order, b.quote(order, {"p1": 100, "p9": 100}))
    session.commit()
    assert err.value.code == "unknown_payment"
    _nothing_written(engine)


def test_wrong_currency_writes_nothing(session: Session, engine: Engine, order) -> None:
    with pytest.raises(CurrencyMismatch):
        _refund(session, order, b.quote(order, {"p1": 100}, currency="USD"))
    session.commit()
    _nothing_written(engine)


def test_tender_in_another_currency_writes_nothing(session: Session, engine: Engine) -> None:
    snapshot = b.order(payments=[b.payment("p1", 10000), b.payment("p2", 3000, currency="USD")])
    upsert_order(session, order=snapshot)
    session.commit()
    with pytest.raises(CurrencyMismatch) as err:
        _refund(session, snapshot, b.quote(snapshot, {"p1": 100, "p2": 100}))
    session.commit()
    assert "p2 is in USD" in err.value.message
    assert count(engine, RefundRow) == 0
    assert balances(engine) == {"p1": (10000, 0, 0), "p2": (3000, 0, 0)}


def test_unknown_line_and_unknown_order_write_nothing(
    session: Session, engine: Engine, order
) -> None:
    with pytest.raises(InvalidInput) as err:
        _refund(session, order, b.quote(order, {"p1": 100}, lines={"l9": 1}))
    assert err.value.code == "unknown_line"
    stranger = b.order("o-404")
    with pytest.raises(InvalidInput) as err:
        _refund(session, stranger, b.quote(stranger, {"p1": 100}))
    assert err.value.code == "unknown_order"
    session.commit()
    _nothing_written(engine)


def test_quote_that_does_not_add_up_is_refused(session: Session, engine: Engine, order) -> None:
    quote = b.quote(order, {"p1": 100}).model_copy(update={"total": 150})
    with pytest.raises(InvalidInput) as err:
        _refund(session, order, quote)
    assert err.value.code == "invalid_quote"
    session.commit()
    _nothing_written(engine)
