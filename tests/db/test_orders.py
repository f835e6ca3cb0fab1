from __future__ import annotations

from datetime import UTC

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from refundflow.db.engine import new_session
from refundflow.db.models import OrderLineRow, OrderRow
from refundflow.db.repository import (
    get_order,
    tender_balances,
    upsert_order,
)
from refundflow.domain.errors import DomainError, InvalidInput, OverRefund
from tests.db import builders as b


def _balances(engine: Engine, order_id: str = "o-1") -> dict[str, tuple[int, int, int]]:
    with new_session(engine, readonly=True) as fresh:
        rows = tender_balances(fresh, merchant_id=b.MERCHANT, order_id=order_id)
        return {r.payment_id: (r.captured, r.reserved, r.refunded) for r in rows}


def _reserve(session: Session, snapshot, amount: int, refund_id: str = "r-1") -> None:
    b.refund(session, snapshot, {"p1": amount}, refund_id=refund_id)
    session.commit()


def test_upsert_then_reupsert_updates_everything(session: Session, engine: Engine) -> None:
    first = b.order()
    upsert_order(session, order=first)
    session.commit()
    assert get_order(session, merchant_id=b.MERCHANT, order_id="o-1") == first
    assert _balances(engine) == {"p1": (10000, 0, 0)}

    second = b.order(
        status="COMPLETED",
        lines=[
            {"line_id": "l1", "sku": "A2", "quantity": 3, "unit_price": 4000},
            {"line_id": "l3", "sku": "C", "quantity": 1, "unit_price": 500},
        ],
        payments=[b.payment("p1", 12000), b.payment("p2", 500, method="card")],
        discounts=[{"code": "SPRING", "amount": 500}],
    )
    upsert_order(session, order=second)
    session.commit()

    with new_session(engine, readonly=True) as fresh:
        assert get_order(fresh, merchant_id=b.MERCHANT, order_id="o-1") == second
        row = fresh.get(OrderRow, (b.MERCHANT, "o-1"))
        assert row is not None and row.status == "COMPLETED"
        assert row.placed_at.tzinfo is not None and row.placed_at.utcoffset() == UTC.utcoffset(None)
        assert row.placed_at.hour == 2  # 10:00 +08:00 is 02:00 UTC
        lines = fresh.exec(select(OrderLineRow).where(OrderLineRow.order_id == "o-1")).all()
        assert {(ln.line_id, ln.sku, ln.quantity) for ln in lines} == {
            ("l1", "A2", 3),
            ("l3", "C", 1),
        }
    assert _balances(engine) == {"p1": (12000, 0, 0), "p2": (500, 0, 0)}


def test_reupsert_cannot_lower_captured_below_reserved(session: Session, engine: Engine) -> None:
    snapshot = b.order()
    upsert_order(session, order=snapshot)
    session.commit()
    _reserve(session, snapshot, 6000)

    with pytest.raises(OverRefund) as err:
        upsert_order(session, order=b.order(status="COMPLETED", payments=[b.payment("p1", 5000)]))
    session.rollback()
    assert err.value.code == "over_refund"
    assert _balances(engine) == {"p1": (10000, 6000, 0)}
    with new_session(engine, readonly=True) as fresh:
        stored = get_order(fresh, merchant_id=b.MERCHANT, order_id="o-1")
        assert stored is not None and stored.status.value == "DELIVERED"

    upsert_order(session, order=b.order(payments=[b.payment("p1", 6000)]))  # exactly enough
    session.commit()
    assert _balances(engine) == {"p1": (6000, 6000, 0)}


def test_reupsert_cannot_drop_a_line_a_refund_names(session: Session, engine: Engine) -> None:
    snapshot = b.order()
    upsert_order(session, order=snapshot)
    session.commit()
    _reserve(session, snapshot, 3000)

    only_l2 = [{"line_id": "l2", "sku": "B", "quantity": 1, "unit_price": 2000}]
    with pytest.raises(DomainError) as err:
        upsert_order(session, order=b.order(lines=only_l2))
    session.rollback()
    assert err.value.code == "order_in_use"
    with new_session(engine, readonly=True) as fresh:
        stored = get_order(fresh, merchant_id=b.MERCHANT, order_id="o-1")
        assert stored is not None and [ln.line_id for ln in stored.lines] == ["l1", "l2"]


def test_upsert_needs_a_known_merchant(session: Session, engine: Engine) -> None:
    with pytest.raises(InvalidInput) as err:
        upsert_order(session, order=b.order(merchant_id="nobody"))
    session.rollback()
    assert err.value.code == "unknown_merchant"
    with new_session(engine, readonly=True) as fresh:
        assert fresh.exec(select(OrderRow)).all() == []
