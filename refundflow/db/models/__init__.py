"""Tables (docs/architecture.md, "Books and the database"). The migration in ``migrations/versions``
creates exactly these.

Keys are natural where the outside world gives them (merchant, order, line and payment ids are
scoped by merchant and order), money is ``BIGINT`` minor units and every timestamp is UTC. The
guards the database enforces on its own (docs/architecture.md, "Books and the database") are named
here so errors can be recognised by name: see :mod:`refundflow.db.guards`."""

from __future__ import annotations

from refundflow.db.models.books import (
    AuditEventRow,
    IdempotencyKeyRow,
    LedgerEntryRow,
    LedgerPostingRow,
    OutboxRow,
    WebhookEventRow,
)
from refundflow.db.models.merchants import (
    API_KEY_ROLES,
    ApiKeyRow,
    CustomerBalanceRow,
    MerchantRow,
    PolicyRow,
)
from refundflow.db.models.orders import (
    OrderDiscountRow,
    OrderLineRow,
    OrderPaymentRow,
    OrderRow,
    TenderBalanceRow,
)
from refundflow.db.models.refunds import (
    RESERVATION_STATES,
    ApprovalRow,
    PayoutRow,
    RefundLineRow,
    RefundRow,
    ReservationRow,
)

__all__ = [
    "API_KEY_ROLES",
    "RESERVATION_STATES",
    "ApiKeyRow",
    "ApprovalRow",
    "AuditEventRow",
    "CustomerBalanceRow",
    "IdempotencyKeyRow",
    "LedgerEntryRow",
    "LedgerPostingRow",
    "MerchantRow",
    "OrderDiscountRow",
    "OrderLineRow",
    "OrderPaymentRow",
    "OrderRow",
    "OutboxRow",
    "PayoutRow",
    "PolicyRow",
    "RefundLineRow",
    "RefundRow",
    "ReservationRow",
    "TenderBalanceRow",
    "WebhookEventRow",
]
