"""The repository API in one place. Every function takes a ``Session`` and keyword-only
arguments, writes in the caller's transaction (in a savepoint where the database may refuse
the write, so the caller's earlier work survives the refusal) and never commits: the caller
decides what commits together (e.g. a refund, its audit event and its outbox rows).
"""

from __future__ import annotations

from refundflow.db.repo_merchants import (
    MerchantWebhook,
    adjust_customer_balance,
    create_api_key,
    get_merchant,
    get_policy,
    latest_policy,
    merchant_webhook,
    reseal_webhook_secrets,
    revoke_api_key,
    save_policy,
    set_merchant_webhook,
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
    lease_outbox,
    list_outbox,
    record_delivery,
    record_webhook_event,
    release_idempotency_key,
    webhook_event_recorded,
)
from refundflow.db.repo_orders import get_order, tender_balances, upsert_order
from refundflow.db.repo_payouts import (
    count_provider_refunds,
    get_payout,
    list_approvals,
    record_approval,
    register_payout_key,
    set_payout_status,
    settle_payout,
)
from refundflow.db.repo_personal import (
    PersonalDataAbsent,
    PersonalDataErased,
    erase_personal,
    expired_personal,
    reseal_personal,
    reveal_personal,
)
from refundflow.db.repo_records import account_balance, append_audit, list_audit, post_ledger
from refundflow.db.repo_refunds import (
    count_recent_refunds,
    create_refund,
    get_refund,
    prior_refunds,
    refund_for_notices,
    requote_refund,
    set_refund_status,
)
from refundflow.db.repo_reservations import consume_reservation, release_reservation, reservations
from refundflow.db.repo_timeline import OutboxMark, mark_outbox_rows

__all__ = [
    "ClaimOutcome",
    "IdempotencyClaim",
    "MerchantWebhook",
    "OutboxMark",
    "PersonalDataAbsent",
    "PersonalDataErased",
    "account_balance",
    "adjust_customer_balance",
    "append_audit",
    "claim_idempotency_key",
    "claim_outbox",
    "complete_idempotency_key",
    "consume_reservation",
    "count_provider_refunds",
    "count_recent_refunds",
    "create_api_key",
    "create_refund",
    "enqueue_outbox",
    "erase_personal",
    "expired_personal",
    "get_merchant",
    "get_order",
    "get_payout",
    "get_policy",
    "get_refund",
    "latest_policy",
    "lease_outbox",
    "list_approvals",
    "list_audit",
    "list_outbox",
    "mark_outbox_rows",
    "merchant_webhook",
    "post_ledger",
    "prior_refunds",
    "record_approval",
    "record_delivery",
    "record_webhook_event",
    "refund_for_notices",
    "register_payout_key",
    "release_idempotency_key",
    "release_reservation",
    "requote_refund",
    "reseal_personal",
    "reseal_webhook_secrets",
    "reservations",
    "reveal_personal",
    "revoke_api_key",
    "save_policy",
    "set_merchant_webhook",
    "set_payout_status",
    "set_refund_status",
    "settle_payout",
    "tender_balances",
    "upsert_merchant",
    "upsert_order",
    "verify_api_key",
    "webhook_event_recorded",
]
