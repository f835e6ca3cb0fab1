"""The reports' numbers: each is a list of plain rows (what the CSV export writes) that a chart
in :mod:`refundflow.api.console.charts` draws. Read from the database over a window of days;
amounts stay in integer minor units, durations in whole seconds."""

from __future__ import annotations

import csv
import io
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from refundflow.api.console.queries import aware
from refundflow.db.models import ApprovalRow, AuditEventRow, OrderRow, PayoutRow, RefundRow

Row = dict[str, Any]


@dataclass(frozen=True)
class Window:
    """Everything since a moment (no upper bound: a row stamped a moment after the page's
    clock, by another machine's clock, still counts)."""

    merchant_id: str
    since: datetime

    @classmethod
    def last_days(cls, merchant_id: str, days: int, now: datetime) -> Window:
        return cls(merchant_id=merchant_id, since=now - timedelta(days=days))


def _refunds(session: Session, window: Window) -> list[RefundRow]:
    stmt = select(RefundRow).where(
        RefundRow.merchant_id == window.merchant_id,
        col(RefundRow.created_at) >= window.since,
    )
    return list(session.exec(stmt).all())


def by_day(session: Session, window: Window) -> list[Row]:
    """Refunds requested per day, by status and currency: how many, and what they pay."""
    groups: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for row in _refunds(session, window):
        key = (aware(row.created_at).date().isoformat(), row.status, row.currency)
        groups[key][0] += 1
        groups[key][1] += row.total
    return [
        {"day": d, "status": s, "currency": c, "refunds": n, "amount_minor": amount}
        for (d, s, c), (n, amount) in sorted(groups.items())
    ]


def _orders(session: Session, window: Window) -> list[OrderRow]:
    stmt = select(OrderRow).where(
        OrderRow.merchant_id == window.merchant_id,
        col(OrderRow.placed_at) >= window.since,
    )
    return list(session.exec(stmt).all())


def rate_by_reason(session: Session, window: Window) -> list[Row]:
    """Refunds per reason, against the orders placed in the window."""
    orders = len(_orders(session, window))
    reasons = Counter(row.reason for row in _refunds(session, window))
    return [
        {"reason": reason, "refunds": n, "orders": orders, "rate": _rate(n, orders)}
        for reason, n in sorted(reasons.items())
    ]


def rate_by_channel(session: Session, window: Window) -> list[Row]:
    """Share of each sales channel's orders (placed in the window) with a refund asked."""
    orders = _orders(session, window)
    channel_of = {o.order_id: o.channel for o in orders}
    placed = Counter(channel_of.values())
    refunded_orders = {r.order_id for r in _refunds(session, window) if r.order_id in channel_of}
    refunded = Counter(channel_of[o] for o in refunded_orders)
    return [
        {
            "channel": channel,
            "orders": n,
            "refunded_orders": refunded[channel],
            "rate": _rate(refunded[channel], n),
        }
        for channel, n in sorted(placed.items())
    ]


def _rate(part: int, whole: int) -> str:
    # A rate is a ratio, not money; written with four decimals so a sheet reads it exactly.
    return f"{part / whole:.4f}" if whole else "0.0000"


def time_to_money(session: Session, window: Window) -> list[Row]:
    """From the request to the provider's settlement, per provider (payout route)."""
    stmt = (
        select(PayoutRow, RefundRow)
        .join(RefundRow, col(RefundRow.refund_id) == col(PayoutRow.refund_id))
        .where(
            RefundRow.merchant_id == window.merchant_id,
            PayoutRow.status == "settled",
            col(RefundRow.created_at) >= window.since,
        )
    )
    waits: dict[str, list[int]] = defaultdict(list)
    for payout, refund in session.exec(stmt).all():
        seconds = (aware(payout.updated_at) - aware(refund.created_at)).total_seconds()
        waits[payout.route].append(int(max(0, seconds)))
    return [_spread({"provider": route}, values) for route, values in sorted(waits.items())]


def approval_turnaround(session: Session, window: Window) -> list[Row]:
    """From the run asking for approval to each decision, per approver."""
    stmt = (
        select(ApprovalRow, RefundRow)
        .join(RefundRow, col(RefundRow.refund_id) == col(ApprovalRow.refund_id))
        .where(
            RefundRow.merchant_id == window.merchant_id,
            col(ApprovalRow.created_at) >= window.since,
        )
    )
    decisions = list(session.exec(stmt).all())
    asked = _first_events(session, [a.refund_id for a, _ in decisions], "approval_requested")
    waits: dict[str, list[int]] = defaultdict(list)
    for approval, refund in decisions:
        start = asked.get(approval.refund_id, refund.created_at)
        seconds = (aware(approval.created_at) - aware(start)).total_seconds()
        waits[approval.approver_id].append(int(max(0, seconds)))
    return [_spread({"approver": who}, values) for who, values in sorted(waits.items())]


def _first_events(session: Session, refund_ids: Sequence[str], kind: str) -> dict[str, datetime]:
    if not refund_ids:
        return {}
    stmt = (
        select(AuditEventRow)
        .where(col(AuditEventRow.refund_id).in_(set(refund_ids)), AuditEventRow.kind == kind)
        .order_by(col(AuditEventRow.id).desc())
    )
    return {e.refund_id: e.created_at for e in session.exec(stmt).all() if e.refund_id}


def _spread(row: Row, seconds: list[int]) -> Row:
    ordered = sorted(seconds)
    # p90 by nearest rank: a value that happened, never one interpolated between two.
    p90 = ordered[max(0, -(-9 * len(ordered) // 10) - 1)]
    return {
        **row,
        "count": len(ordered),
        "median_seconds": int(statistics.median_low(ordered)),
        "p90_seconds": p90,
    }


def payout_failures(session: Session, window: Window) -> list[Row]:
    """Payouts that failed for good, per provider and the provider's code."""
    stmt = (
        select(AuditEventRow, RefundRow)
        .join(RefundRow, col(RefundRow.refund_id) == col(AuditEventRow.refund_id))
        .where(
            RefundRow.merchant_id == window.merchant_id,
            AuditEventRow.kind == "payout_failed",
            col(AuditEventRow.created_at) >= window.since,
        )
    )
    events = list(session.exec(stmt).all())
    keys = {str(e.data.get("key", "")) for e, _ in events}
    routes = {
        p.payout_key: p.route
        for p in session.exec(select(PayoutRow).where(col(PayoutRow.payout_key).in_(keys))).all()
    }
    counts = Counter(
        (routes.get(str(e.data.get("key", "")), "unknown"), str(e.data.get("code") or "unknown"))
        for e, _ in events
    )
    return [
        {"provider": provider, "code": code, "failures": n}
        for (provider, code), n in sorted(counts.items())
    ]


REPORTS: dict[str, Callable[[Session, Window], list[Row]]] = {
    "by_day": by_day,
    "rate_by_reason": rate_by_reason,
    "rate_by_channel": rate_by_channel,
    "time_to_money": time_to_money,
    "approval_turnaround": approval_turnaround,
    "payout_failures": payout_failures,
}


def to_csv(rows: list[Row], columns: Sequence[str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


COLUMNS: dict[str, tuple[str, ...]] = {
    "by_day": ("day", "status", "currency", "refunds", "amount_minor"),
    "rate_by_reason": ("reason", "refunds", "orders", "rate"),
    "rate_by_channel": ("channel", "orders", "refunded_orders", "rate"),
    "time_to_money": ("provider", "count", "median_seconds", "p90_seconds"),
    "approval_turnaround": ("approver", "count", "median_seconds", "p90_seconds"),
    "payout_failures": ("provider", "code", "failures"),
}
