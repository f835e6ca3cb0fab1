"""Order snapshots: the order row, its lines, discounts, payments and tender balances."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam
from sqlmodel import Session, col, delete, select, update

from refundflow.db.core import flush_pending, table_of
from refundflow.db.guards import Violation, atomic
from refundflow.db.models import (
    MerchantRow,
    OrderDiscountRow,
    OrderLineRow,
    OrderPaymentRow,
    OrderRow,
    RefundRow,
    TenderBalanceRow,
)
from refundflow.db.types import utcnow
from refundflow.domain.errors import CurrencyMismatch, DomainError, InvalidInput, OverRefund
from refundflow.domain.orders import OrderSnapshot


def upsert_order(session: Session, *, order: OrderSnapshot, at: datetime | None = None) -> OrderRow:
    """Create or replace the stored snapshot of ``order``.

    Captured amounts may change, but never below what refunds already hold or paid on a
    payment: the ``tender_balances`` CHECK refuses it and :class:`OverRefund` is raised.
    Lines and payments that refunds refer to cannot be removed (``order_in_use``).
    """
    now = at or utcnow()
    with atomic(session, lambda v: _order_refusal(order, v)):
        if session.get(MerchantRow, order.merchant_id) is None:
            raise InvalidInput(f"unknown merchant {order.merchant_id!r}", code="unknown_merchant")
        row = session.get(
            OrderRow,
            (order.merchant_id, order.order_id),
            with_for_update=True,
            populate_existing=True,
        )
        fields = _order_fields(order, now)
        if row is None:
            row = OrderRow(
                merchant_id=order.merchant_id, order_id=order.order_id, created_at=now, **fields
            )
        else:
            _check_currency_frozen(session, row, order)
            row.sqlmodel_update(fields)
        session.add(row)
        session.flush()  # parents before children: there are no ORM relationships to order them
        _sync_lines(session, order)
        _sync_discounts(session, order)
        _sync_payments(session, order, now)
    return row


# Built once (refundflow.db.core): every review and second check reads the order's document.
_ORDERS = table_of(OrderRow)
_SNAPSHOT = (
    _ORDERS.select()
    .with_only_columns(_ORDERS.c.snapshot)
    .where(
        _ORDERS.c.merchant_id == bindparam("merchant_id"),
        _ORDERS.c.order_id == bindparam("order_id"),
    )
)


def get_order(session: Session, *, merchant_id: str, order_id: str) -> OrderSnapshot | None:
    params = {"merchant_id": merchant_id, "order_id": order_id}
    flush_pending(session)  # a Core read: what the session holds unwritten counts too
    snapshot = session.execute(_SNAPSHOT, params).scalar()
    return None if snapshot is None else OrderSnapshot.model_validate(snapshot)


def tender_balances(session: Session, *, merchant_id: str, order_id: str) -> list[TenderBalanceRow]:
    statement = (
        select(TenderBalanceRow)
        .where(TenderBalanceRow.merchant_id == merchant_id, TenderBalanceRow.order_id == order_id)
        .order_by(col(TenderBalanceRow.payment_id))
        .execution_options(populate_existing=True)
    )
    return list(session.exec(statement).all())


def _order_refusal(order: OrderSnapshot, violation: Violation) -> DomainError | None:
    if violation.name == "pk_orders":  # two first upserts raced; the loser may simply retry
        return DomainError(
            f"order {order.order_id} was stored concurrently; retry", code="database_busy"
        )
    if violation.name == "ck_tender_balances_within_captured":
        return OverRefund(
            f"order {order.order_id}: a payment's captured amount cannot drop below what "
            "refunds already reserved or paid on it"
        )
    if violation.kind == "foreign_key":
        return DomainError(
            f"order {order.order_id}: a line or payment that refunds refer to cannot be removed",
            code="order_in_use",
        )
    return None


def _has_refunds(session: Session, row: OrderRow) -> bool:
    statement = select(RefundRow.refund_id).where(
        RefundRow.merchant_id == row.merchant_id, RefundRow.order_id == row.order_id
    )
    return session.exec(statement.limit(1)).first() is not None


def _check_currency_frozen(session: Session, row: OrderRow, order: OrderSnapshot) -> None:
    # Amounts already reserved were counted in the old currency; they cannot be re-read.
    if row.currency != order.currency and _has_refunds(session, row):
        raise CurrencyMismatch(
            f"order {order.order_id} has refunds in {row.currency}; its currency cannot change"
        )


def _order_fields(order: OrderSnapshot, now: datetime) -> dict[str, Any]:
    return {
        "customer_id": order.customer_id,
        "channel": order.channel,
        "country": order.country,
        "currency": order.currency,
        "status": order.status.value,
        "placed_at": order.placed_at,
        "delivered_at": order.delivered_at,
        "snapshot": order.model_dump(mode="json"),
        "updated_at": now,
    }


def _sync_lines(session: Session, order: OrderSnapshot) -> None:
    existing = {
        line.line_id: line
        for line in session.exec(
            select(OrderLineRow).where(
                OrderLineRow.merchant_id == order.merchant_id,
                OrderLineRow.order_id == order.order_id,
            )
        ).all()
    }
    for line in order.lines:
        fields: dict[str, Any] = {
            "sku": line.sku,
            "quantity": line.quantity,
            "unit_price": line.unit_price,
            "line_discount": line.line_discount,
        }
        row = existing.pop(line.line_id, None)
        if row is None:
            row = OrderLineRow(
                merchant_id=order.merchant_id,
                order_id=order.order_id,
                line_id=line.line_id,
                **fields,
            )
        else:
            row.sqlmodel_update(fields)
        session.add(row)
    for gone in existing.values():
        session.delete(gone)
    session.flush()


def _sync_discounts(session: Session, order: OrderSnapshot) -> None:
    # Nothing refers to discounts, so they are simply rewritten.
    session.exec(
        delete(OrderDiscountRow).where(
            col(OrderDiscountRow.merchant_id) == order.merchant_id,
            col(OrderDiscountRow.order_id) == order.order_id,
        )
    )
    for position, disc in enumerate(order.discounts):
        session.add(
            OrderDiscountRow(
                merchant_id=order.merchant_id,
                order_id=order.order_id,
                position=position,
                code=disc.code,
                kind=disc.kind,
                amount=disc.amount,
                line_ids=disc.line_ids,
            )
        )


_PAYMENT_FIELDS = {
    "payment_id",
    "method",
    "provider_txn_id",
    "captured",
    "currency",
    "paid_at",
    "payer_account_ref",
}


def _sync_payments(session: Session, order: OrderSnapshot, now: datetime) -> None:
    key = (
        OrderPaymentRow.merchant_id == order.merchant_id,
        OrderPaymentRow.order_id == order.order_id,
    )
    existing = {p.payment_id: p for p in session.exec(select(OrderPaymentRow).where(*key)).all()}
    for pay in order.payments:
        fields = pay.model_dump(include=_PAYMENT_FIELDS, mode="python")
        fields["method"] = pay.method.value
        row = existing.pop(pay.payment_id, None)
        is_new = row is None
        if row is None:
            row = OrderPaymentRow(merchant_id=order.merchant_id, order_id=order.order_id, **fields)
        else:
            row.sqlmodel_update(fields)
        session.add(row)
        session.flush()
        _sync_balance(session, row, is_new=is_new, now=now)
    for gone in existing.values():
        session.exec(
            delete(TenderBalanceRow).where(
                col(TenderBalanceRow.merchant_id) == gone.merchant_id,
                col(TenderBalanceRow.order_id) == gone.order_id,
                col(TenderBalanceRow.payment_id) == gone.payment_id,
            )
        )
        session.delete(gone)
    session.flush()


def _sync_balance(session: Session, pay: OrderPaymentRow, *, is_new: bool, now: datetime) -> None:
    if is_new:
        session.add(
            TenderBalanceRow(
                merchant_id=pay.merchant_id,
                order_id=pay.order_id,
                payment_id=pay.payment_id,
                currency=pay.currency,
                captured=pay.captured,
                updated_at=now,
            )
        )
        return
    # One UPDATE, so the CHECK judges the new captured against the committed counters.
    session.exec(
        update(TenderBalanceRow)
        .where(
            col(TenderBalanceRow.merchant_id) == pay.merchant_id,
            col(TenderBalanceRow.order_id) == pay.order_id,
            col(TenderBalanceRow.payment_id) == pay.payment_id,
        )
        .values(captured=pay.captured, currency=pay.currency, updated_at=now)
        .execution_options(synchronize_session=False)
    )
