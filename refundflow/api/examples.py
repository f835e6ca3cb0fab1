"""One worked example per route for the OpenAPI document: the requests are the README's
kettle order, and the answers are computed from them by the real quote, so they never drift
from what the API actually says."""

from __future__ import annotations

from typing import Any

from refundflow.domain.calculation import compute_quote
from refundflow.domain.orders import OrderSnapshot, RefundRequest
from refundflow.domain.policy import DEFAULT_POLICY

ORDER: dict[str, Any] = {
    "channel": "own_store",
    "customer_id": "c-42",
    "country": "CN",
    "currency": "CNY",
    "placed_at": "2026-11-29T10:00:00Z",
    "status": "PAID",
    "lines": [{"line_id": "l1", "sku": "KETTLE", "quantity": 1, "unit_price": 89900}],
    "payments": [
        {
            "payment_id": "p1",
            "method": "alipay",
            "provider_txn_id": "2026112922001",
            "captured": 89900,
            "currency": "CNY",
            "paid_at": "2026-11-29T10:00:00Z",
        }
    ],
}
REFUND: dict[str, Any] = {
    "order_id": "o-1001",
    "items": [{"line_id": "l1", "quantity": 1}],
    "reason": "CHANGED_MIND",
    "contact": {"email": "c42@example.com", "locale": "zh-CN"},
}
_order = OrderSnapshot.parse({**ORDER, "order_id": "o-1001", "merchant_id": "demo"})
_quote = compute_quote(
    order=_order,
    request=RefundRequest.parse({**REFUND, "requested_by": "shop-backend"}),
    policy=DEFAULT_POLICY,
    prior_refunds=[],
)
QUOTE: dict[str, Any] = _quote.model_dump(mode="json")
DECISION = {"decision": "APPROVE", "quote_fingerprint": _quote.fingerprint(), "comment": "ok"}
SUPPLIER_RESPONSE = {"supplier_ref": "supplier-7", "can_cancel": True, "cancellation_fee": 500}
RETURN_INSPECTION = {"condition": "DAMAGED", "deduction": 2000, "note": "dented lid"}
CUSTOMER_CONFIRMATION = {"confirmed": True}
RECEIPT = {"received": True}
CANCEL = {"reason": "the customer kept the kettle"}
OPS_ACTION = {"action": "mark_settled", "reference": "BANK-REF-77"}

ORDER_PUBLIC = {
    "order": _order.model_dump(mode="json"),
    "tenders": [{"payment_id": "p1", "captured": 89900, "reserved": 0, "refunded": 0}],
}
REFUND_PUBLIC: dict[str, Any] = {
    "refund_id": "rf_3f1c0d2a9b8e7f6a5b4c",
    "workflow_id": "refund-rf_3f1c0d2a9b8e7f6a5b4c",
    "order_id": "o-1001",
    "customer_id": "c-42",
    "status": "AWAITING_APPROVAL",
    "reason": "CHANGED_MIND",
    "currency": "CNY",
    "total": _quote.total,
    "requested_by": "shop-backend",
    "created_at": "2026-11-30T08:00:00Z",
    "updated_at": "2026-11-30T08:00:01Z",
    "quote": QUOTE,
    "quote_fingerprint": _quote.fingerprint(),
    "live": None,
}
REFUND_PAGE = {"items": [REFUND_PUBLIC], "next_cursor": None}
MESSAGE_OUT = {"accepted": True, "status": "AWAITING_FUNDS", "detail": "approved"}
POLICY: dict[str, Any] = DEFAULT_POLICY.model_dump(mode="json")
POLICY_CHANGE = {"shipping_refund": "always", "max_refunds_per_customer_30d": 5}
REPORT = {
    "rows": [
        {
            "status": "COMPLETED",
            "currency": "CNY",
            "reason": "CHANGED_MIND",
            "count": 3,
            "amount": 269700,
        }
    ]
}
WEBHOOK = {"status": "accepted"}
HEALTH = {"status": "ok"}
READY = {"database": "ok", "temporal": "ok"}


def schema_examples(*examples: dict[str, Any]) -> dict[str, Any]:
    """A model's ``json_schema_extra``: its examples in the OpenAPI document."""
    return {"examples": list(examples)}
