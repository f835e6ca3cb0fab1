"""Domain objects for the database tests: an order, a request and a hand-built quote, and a
refund written from them.

The quote is built directly (not computed) so these tests pin the persistence layer only.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from refundflow.db.models import RefundRow
from refundflow.db.repository import create_refund
from refundflow.domain.orders import OrderSnapshot, PaymentMethod, RefundReason, RefundRequest
from refundflow.domain.quote import PlannedPayout, Quote, QuoteLine, TenderCharge, TenderShare
from refundflow.domain.states import RefundStatus

MERCHANT = "m-1"


def payment(
    pid: str, captured: int, *, method: str = "alipay", currency: str = "CNY"
) -> dict[str, Any]:
    return {
        "payment_id": pid,
        "method": method,
        "provider_txn_id": f"txn-{pid}",
        "captured": captured,
        "currency": currency,
        "paid_at": "2026-03-01T10:00:05+08:00",
    }


def order(order_id: str = "o-1", **overrides: Any) -> OrderSnapshot:
    data: dict[str, Any] = {
        "order_id": order_id,
        "merchant_id": MERCHANT,
        "channel": "own_store",
        "customer_id": "c-1",
        "country": "CN",
        "currency": "CNY",
        "placed_at": "2026-03-01T10:00:00+08:00",
        "status": "DELIVERED",
        "delivered_at": "2026-03-03T10:00:00+08:00",
        "lines": [
            {"line_id": "l1", "sku": "A", "quantity": 2, "unit_price": 4000},
            {"line_id": "l2", "sku": "B", "quantity": 1, "unit_price": 2000},
        ],
        "payments": [payment("p1", 10000)],
    }
    data.update(overrides)
    return OrderSnapshot.parse(data)


def request(snapshot: OrderSnapshot, **overrides: Any) -> RefundRequest:
    data: dict[str, Any] = {
        "order_id": snapshot.order_id,
        "items": [{"line_id": "l1", "quantity": 1}],
        "reason": "DAMAGED",
        "requested_by": "desk-1",
    }
    data.update(overrides)
    return RefundRequest.parse(data)


def quote(
    snapshot: OrderSnapshot,
    tenders: dict[str, int],
    *,
    lines: dict[str, int] | None = None,
    currency: str | None = None,
) -> Quote:
    """A quote taking ``tenders`` (payment id -> amount); ``lines`` is line id -> quantity,
    by default one unit of ``l1``."""
    total = sum(tenders.values())
    wanted = {"l1": 1} if lines is None else lines
    quote_lines = _lines(snapshot, wanted, total)
    cur = currency or snapshot.currency
    by_id = {p.payment_id: p for p in snapshot.payments}
    shares = [
        TenderShare(
            payment_id=pid,
            method=by_id[pid].method if pid in by_id else PaymentMethod.CARD,
            captured=by_id[pid].captured if pid in by_id else 0,
            refunded_before=0,
            amount=amount,
        )
        for pid, amount in tenders.items()
    ]
    payout = PlannedPayout(
        seq=1,
        installment=1,
        route=shares[0].method if shares else PaymentMethod.ALIPAY,
        charges=[TenderCharge(payment_id=pid, amount=a) for pid, a in tenders.items()],
        amount=total,
        payout_currency=cur,
        payout_amount=total,
        due_after_days=0,
    )
    return Quote(
        order_id=snapshot.order_id,
        currency=cur,
        reason=RefundReason.DAMAGED,
        policy_version=1,
        lines=quote_lines,
        items_amount=total,
        shipping=0,
        fees=0,
        restocking_fee=0,
        goodwill=0,
        deductions=[],
        deductions_total=0,
        requested_total=total,
        remaining_before=snapshot.captured_total,
        total=total,
        capped=False,
        tenders=shares,
        fx=None,
        payout_currency=cur,
        payout_total=total,
        payouts=[payout],
        installments=1,
        notes=[],
    )


def _lines(snapshot: OrderSnapshot, wanted: dict[str, int], total: int) -> list[QuoteLine]:
    result = []
    left = total
    for i, (line_id, qty) in enumerate(wanted.items()):
        line = snapshot.line(line_id)
        amount = left if i == len(wanted) - 1 else min(left, qty * (line.unit_price if line else 0))
        left -= amount
        result.append(
            QuoteLine(
                line_id=line_id,
                sku=line.sku if line else "?",
                quantity=qty,
                units_refunded_before=0,
                gross=amount,
                line_discount=0,
                order_discount=0,
                net=amount,
                shipping=0,
                fees=0,
                restocking_fee=0,
                amount=amount,
            )
        )
    return result


def refund(
    session: Session,
    snapshot: OrderSnapshot,
    amounts: dict[str, int],
    *,
    refund_id: str = "r-1",
    status: RefundStatus = RefundStatus.UNDER_REVIEW,
) -> RefundRow:
    """The refund of ``snapshot`` taking ``amounts`` (payment id -> amount) from its tenders,
    written with its holds as a review leaves it (not committed)."""
    return create_refund(
        session,
        refund_id=refund_id,
        order=snapshot,
        request=request(snapshot),
        quote=quote(snapshot, amounts),
        requested_by="desk-1",
        policy_version=1,
        status=status,
    )
