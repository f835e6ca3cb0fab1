"""The repository API in one place. Every function takes a ``Session`` and keyword-only
arguments, writes inside a savepoint of the caller's transaction and never commits: the
caller decides what commits together (e.g. a refund, its audit event and its outbox rows).
"""

from __future__ import annotations

from refundflow.db.repo_merchants import (
    adjust_customer_balance,
    create_api_key,
    get_merchant,
    get_policy,
    latest_policy,
    revoke_api_key,
    save_policy,
    upsert_merchant,
    verify_api_key,
)
from refundflow.db.repo_messages import (
    ClaimOutcome,
    IdempotencyClaim,
    claim_idempotency_key,
    claim_outbox,
    complete_idempotency_key,
    enqueue_outbox,
    mark_outbox,
    record_webhook_event,
    release_idempotency_key,
)
from refundflow.db.repo_orders import get_order, tender_balances, upsert_order
from refundflow.db.repo_records import account_balance, append_audit, list_audit, post_ledger
from refundflow.db.repo_refunds import (
    consume_reservation,
    count_recent_refunds,
    create_refund,
    get_payout,
    get_refund,
    list_approvals,
    prior_refunds,
    record_approval,
    register_payout_key,
    release_reservation,
    requote_refund,
    reservations,
    set_payout_status,
    set_refund_status,
    settle_payout,
)

__all__ = [
    "ClaimOutcome",
    "IdempotencyClaim",
    "account_balance",
    "adjust_customer_balance",
    "append_audit",
    "claim_idempotency_key",
    "claim_outbox",
    "complete_idempotency_key",
    "consume_reservation",
    "count_recent_refunds",
    "create_api_key",
    "create_refund",
    "enqueue_outbox",
    "get_merchant",
    "get_order",
    "get_payout",
    "get_policy",
    "get_refund",
    "latest_policy",
    "list_approvals",
    "list_audit",
    "mark_outbox",
    "post_ledger",
    "prior_refunds",
    "record_approval",
    "record_webhook_event",
    "register_payout_key",
    "release_idempotency_key",
    "release_reservation",
    "requote_refund",
    "reservations",
    "revoke_api_key",
    "save_policy",
    "set_payout_status",
    "set_refund_status",
    "settle_payout",
    "tender_balances",
    "upsert_merchant",
    "upsert_order",
    "verify_api_key",
]
