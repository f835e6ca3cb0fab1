"""Reservations: what a refund holds on each of the order's tenders, and the counters on
``tender_balances`` they move (reserve, resize, consume, release).

Money held for a refund moves in ``tender_balances`` only through single ``UPDATE ... SET
reserved = reserved + :delta`` statements, so the CHECK on that row decides every race.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam
from sqlmodel import Session, col, select

from refundflow.db.core import expire_copy, flush_pending, table_of
from refundflow.db.guards import atomic
from refundflow.db.models import RefundRow, ReservationRow, TenderBalanceRow
from refundflow.db.types import utcnow
from refundflow.domain.errors import DomainError, InvalidInput, OverRefund


def release_reservation(session: Session, *, refund_id: str, at: datetime | None = None) -> int:
    """Give back what the refund still holds (not what it already paid). Returns the amount
    released; releasing twice releases nothing the second time."""
    now = at or utcnow()
    released = 0
    with atomic(session):
        for hold in tender_holds(session, refund_id, lock=True):
            if hold.state != "active":
                continue
            left = hold.amount - hold.consumed
            _move(session, hold, reserved=-left, refunded=0, now=now)
            hold.state = "released"
            hold.updated_at = now
            session.add(hold)
            released += left
    return released


def consume_holds(
    session: Session, *, refund_id: str, charges: Mapping[str, int], at: datetime | None = None
) -> None:
    """A payout settled: move each charge (payment id -> amount) of the refund's holds from
    reserved to refunded. All or nothing: every charge is checked against the holds (read
    first, locked on PostgreSQL) before anything is written, so a refusal leaves the caller's
    transaction as it was. More than a hold still has is :class:`OverRefund`."""
    now = at or utcnow()
    flush_pending(session)  # Core reads and writes: what the session holds unwritten first
    holds = {row.payment_id: row for row in session.execute(_HOLDS, {"refund_id": refund_id})}
    consumed: list[dict[str, Any]] = []
    moved: list[dict[str, Any]] = []
    for payment_id in sorted(charges):
        amount = charges[payment_id]
        if amount == 0:
            continue
        if amount < 0:
            raise InvalidInput("a consumed amount must be positive", code="negative_amount")
        hold = holds.get(payment_id)
        if hold is None or hold.state != "active":
            raise DomainError(
                f"refund {refund_id} holds nothing on payment {payment_id}",
                code="no_active_reservation",
            )
        if hold.consumed + amount > hold.amount:
            raise OverRefund(
                f"refund {refund_id} cannot pay {amount} from payment {payment_id}: "
                f"only {hold.amount - hold.consumed} is still reserved"
            )
        total = hold.consumed + amount
        consumed.append(
            {
                "of_refund": refund_id,
                "of_payment": payment_id,
                "new_consumed": total,
                "new_state": "consumed" if total == hold.amount else "active",
                "at": now,
            }
        )
        moved.append(
            {
                "of_merchant": hold.merchant_id,
                "of_order": hold.order_id,
                "of_payment": payment_id,
                "reserved_by": -amount,
                "refunded_by": amount,
                "at": now,
            }
        )
        expire_copy(session, ReservationRow, (refund_id, payment_id))
        expire_copy(session, TenderBalanceRow, (hold.merchant_id, hold.order_id, payment_id))
    if consumed:
        session.execute(_CONSUME, consumed)
        session.execute(_MOVE, moved)


def reservations(session: Session, *, refund_id: str) -> list[ReservationRow]:
    return tender_holds(session, refund_id, lock=False)


def reserve_new(
    session: Session, refund: RefundRow, payment_id: str, amount: int, now: datetime
) -> None:
    flush_pending(session)  # the refund's row first: the hold refers to it
    tender = {
        "of_merchant": refund.merchant_id,
        "of_order": refund.order_id,
        "of_payment": payment_id,
    }
    # The race is decided here: one UPDATE under the row's lock, judged by the CHECK.
    session.execute(_MOVE, {**tender, "reserved_by": amount, "refunded_by": 0, "at": now})
    expire_copy(session, TenderBalanceRow, (refund.merchant_id, refund.order_id, payment_id))
    hold = {
        "refund_id": refund.refund_id,
        "payment_id": payment_id,
        "merchant_id": refund.merchant_id,
        "order_id": refund.order_id,
        "amount": amount,
        "consumed": 0,
        "state": "active",
        "created_at": now,
        "updated_at": now,
    }
    session.execute(_INSERT_HOLD, hold)


# Built once (refundflow.db.core): every refund holds its amounts, and settles them, with
# these. A tender's counters move by deltas only (see the module's docstring).
_TENDERS = table_of(TenderBalanceRow)
_TENDER_KEY = ("of_merchant", "of_order", "of_payment")
_HOLDS_TABLE = table_of(ReservationRow)
_INSERT_HOLD = _HOLDS_TABLE.insert()
_HOLDS = (
    _HOLDS_TABLE.select()
    .where(_HOLDS_TABLE.c.refund_id == bindparam("refund_id"))
    .with_for_update()
)
_CONSUME = (
    _HOLDS_TABLE.update()
    .where(
        _HOLDS_TABLE.c.refund_id == bindparam("of_refund"),
        _HOLDS_TABLE.c.payment_id == bindparam("of_payment"),
    )
    .values(
        consumed=bindparam("new_consumed"), state=bindparam("new_state"), updated_at=bindparam("at")
    )
)
_MOVE = (
    _TENDERS.update()
    .where(
        _TENDERS.c.merchant_id == bindparam("of_merchant"),
        _TENDERS.c.order_id == bindparam("of_order"),
        _TENDERS.c.payment_id == bindparam("of_payment"),
    )
    .values(
        reserved=_TENDERS.c.reserved + bindparam("reserved_by"),
        refunded=_TENDERS.c.refunded + bindparam("refunded_by"),
        updated_at=bindparam("at"),
    )
)


def resize_hold(session: Session, hold: ReservationRow, amount: int, now: datetime) -> None:
    if amount == hold.amount:
        return
    if hold.state != "active":
        raise DomainError(
            f"the hold on payment {hold.payment_id} is {hold.state}; it cannot change",
            code="refund_closed",
        )
    if amount < hold.consumed:
        raise OverRefund(
            f"payment {hold.payment_id} already paid {hold.consumed}, more than the new {amount}"
        )
    _move(session, hold, reserved=amount - hold.amount, refunded=0, now=now)
    hold.amount = amount
    if amount == 0:
        hold.state = "released"
    elif amount == hold.consumed:
        hold.state = "consumed"
    hold.updated_at = now
    session.add(hold)


def _move(
    session: Session, hold: ReservationRow, *, reserved: int, refunded: int, now: datetime
) -> None:
    tender = (hold.merchant_id, hold.order_id, hold.payment_id)
    values = {"reserved_by": reserved, "refunded_by": refunded, "at": now}
    session.execute(_MOVE, {**dict(zip(_TENDER_KEY, tender, strict=True)), **values})
    expire_copy(session, TenderBalanceRow, tender)


def tender_holds(session: Session, refund_id: str, *, lock: bool) -> list[ReservationRow]:
    statement = (
        select(ReservationRow)
        .where(ReservationRow.refund_id == refund_id)
        .order_by(col(ReservationRow.payment_id))
        .execution_options(populate_existing=True)
    )
    if lock:
        statement = statement.with_for_update()
    return list(session.exec(statement).all())
