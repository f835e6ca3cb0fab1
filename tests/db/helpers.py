"""Reading the database back in a separate, read-only session: what was really committed."""

from __future__ import annotations

from sqlalchemy import Engine, func
from sqlmodel import SQLModel, select

from refundflow.db.engine import new_session
from refundflow.db.repository import tender_balances
from tests.db.builders import MERCHANT


def balances(engine: Engine, order_id: str = "o-1") -> dict[str, tuple[int, int, int]]:
    """payment id -> (captured, reserved, refunded)."""
    with new_session(engine, readonly=True) as fresh:
        rows = tender_balances(fresh, merchant_id=MERCHANT, order_id=order_id)
        return {r.payment_id: (r.captured, r.reserved, r.refunded) for r in rows}


def count(engine: Engine, table: type[SQLModel]) -> int:
    with new_session(engine, readonly=True) as fresh:
        return int(fresh.exec(select(func.count()).select_from(table)).one())
