"""Small builders for domain objects, shared by the domain tests."""

from __future__ import annotations

from typing import Any

from refundflow.domain.orders import OrderSnapshot, RefundRequest


def order(**overrides: Any) -> OrderSnapshot:
    data: dict[str, Any] = {
        "order_id": "o-1",
        "merchant_id": "m-1",
        "channel": "own_store",
        "customer_id": "c-1",
        "country": "CN",
        "currency": "CNY",
        "placed_at": "2026-03-01T10:00:00+08:00",
        "status": "DELIVERED",
        "delivered_at": "2026-03-03T10:00:00+08:00",
        "lines": [{"line_id": "l1", "sku": "A", "quantity": 1, "unit_price": 10000}],
        "payments": [
            {
                "payment_id": "p1",
                "method": "alipay",
                "provider_txn_id": "t1",
                "captured": 10000,
                "currency": "CNY",
                "paid_at": "2026-03-01T10:00:05+08:00",
            }
        ],
    }
    data.update(overrides)
    return OrderSnapshot.parse(data)


def request(**overrides: Any) -> RefundRequest:
    data: dict[str, Any] = {
        "order_id": "o-1",
        "items": [{"line_id": "l1", "quantity": 1}],
        "reason": "DAMAGED",
        "requested_by": "desk-1",
    }
    data.update(overrides)
    return RefundRequest.parse(data)


def payment(pid: str, method: str, captured: int, currency: str = "CNY") -> dict[str, Any]:
    return {
        "payment_id": pid,
        "method": method,
        "provider_txn_id": f"txn-{pid}",
        "captured": captured,
        "currency": currency,
        "paid_at": "2026-03-01T10:00:05+08:00",
    }
