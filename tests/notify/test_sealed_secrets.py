"""Merchants' webhook secrets are sealed at rest (refundflow.crypto), on SQLite and PostgreSQL:
the database never holds one in plaintext, a key rotation seals them again, and a worker
without the keys signs nothing."""

from __future__ import annotations

import base64
import uuid

import pytest
from sqlalchemy import Engine, text

from refundflow.crypto import Keyring, SealedValueError, new_key_entry
from refundflow.db.engine import session_scope
from refundflow.db.repository import (
    create_refund,
    enqueue_outbox,
    merchant_webhook,
    reseal_webhook_secrets,
    set_merchant_webhook,
    upsert_merchant,
    upsert_order,
)
from refundflow.domain.states import RefundStatus
from refundflow.notify.dispatcher import NotificationDispatcher
from refundflow.notify.merchant_webhook import MerchantWebhookSender
from tests.db.builders import MERCHANT, order, quote, request
from tests.notify.conftest import KEYRING, WEBHOOK_SECRET, Receiver

OTHER = "shop-other"


def stored_secret(engine: Engine, merchant_id: str = MERCHANT) -> str:
    with engine.connect() as conn:
        value = conn.execute(
            text("SELECT webhook_secret FROM merchants WHERE merchant_id = :m"), {"m": merchant_id}
        ).scalar_one()
    assert isinstance(value, str)
    return value


def test_the_database_never_holds_a_webhook_secret_in_plaintext(engine: Engine) -> None:
    with session_scope(engine) as s:
        upsert_merchant(s, merchant_id=MERCHANT)
        upsert_merchant(s, merchant_id=OTHER)
        hook = set_merchant_webhook(
            s, merchant_id=MERCHANT, url="https://shop.example/hooks", keyring=KEYRING
        )
        set_merchant_webhook(s, merchant_id=OTHER, url="https://other.example", keyring=KEYRING)
    assert hook is not None
    stored = stored_secret(engine)
    assert hook.secret not in stored and stored.startswith("rfsealed1:test-1:")
    with session_scope(engine, readonly=True) as s:
        assert merchant_webhook(s, merchant_id=MERCHANT, keyring=KEYRING) == hook
        stranger = Keyring.parse(new_key_entry("test-1"), source="another key")
        with pytest.raises(SealedValueError):
            merchant_webhook(s, merchant_id=MERCHANT, keyring=stranger)
    # A sealed secret copied into another merchant's row does not open there.
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE merchants SET webhook_secret = :v WHERE merchant_id = :m"),
            {"v": stored, "m": OTHER},
        )
    with session_scope(engine, readonly=True) as s, pytest.raises(SealedValueError):
        merchant_webhook(s, merchant_id=OTHER, keyring=KEYRING)


def test_plaintext_and_rotated_out_secrets_are_sealed_again(engine: Engine) -> None:
    with session_scope(engine) as s:
        upsert_merchant(s, merchant_id=MERCHANT)
        set_merchant_webhook(
            s, merchant_id=MERCHANT, url="https://shop.example/hooks", keyring=KEYRING
        )
    # A row written before secrets were sealed.
    with engine.begin() as conn:
        conn.execute(text("UPDATE merchants SET webhook_secret = :v"), {"v": WEBHOOK_SECRET})
    with session_scope(engine) as s:
        assert reseal_webhook_secrets(s, keyring=KEYRING) == 1
        assert reseal_webhook_secrets(s, keyring=KEYRING) == 0
    assert stored_secret(engine).startswith("rfsealed1:test-1:")

    # Rotation: the new key first, the old one after it while values sealed with it remain.
    entry = new_key_entry("test-2")
    rotated = Keyring.parse(f"{entry}\n" + _entries(KEYRING), source="rotated")
    with session_scope(engine) as s:
        assert reseal_webhook_secrets(s, keyring=rotated) == 1
    assert stored_secret(engine).startswith("rfsealed1:test-2:")
    only_new = Keyring.parse(entry, source="new")
    with session_scope(engine, readonly=True) as s:
        hook = merchant_webhook(s, merchant_id=MERCHANT, keyring=only_new)
        assert hook is not None and hook.secret == WEBHOOK_SECRET
        with pytest.raises(SealedValueError):
            merchant_webhook(s, merchant_id=MERCHANT, keyring=KEYRING)


def _entries(keyring: Keyring) -> str:
    return "\n".join(
        f"{key_id}:{base64.b64encode(key).decode()}" for key_id, key in keyring.keys.items()
    )


async def test_without_the_keys_no_merchant_webhook_is_signed(
    engine: Engine, receiver: Receiver
) -> None:
    refund_id = f"rf_{uuid.uuid4().hex}"
    snap = order()
    with session_scope(engine) as s:
        upsert_merchant(s, merchant_id=MERCHANT)
        set_merchant_webhook(s, merchant_id=MERCHANT, url=receiver.url, keyring=KEYRING)
        upsert_order(s, order=snap)
        create_refund(
            s,
            refund_id=refund_id,
            order=snap,
            request=request(snap),
            quote=quote(snap, {"p1": 4000}),
            requested_by="desk-1",
            policy_version=1,
            status=RefundStatus.PAYING,
        )
        enqueue_outbox(
            s, refund_id=refund_id, channel="ops", template="escalation", payload={"reason": "x"}
        )
    webhooks = MerchantWebhookSender(timeout_s=3)
    try:
        report = await NotificationDispatcher(engine, webhooks=webhooks).deliver_refund(refund_id)
    finally:
        await webhooks.aclose()
    assert (report.sent, report.failed) == (0, 1)
    assert report.rows[0].error.startswith("webhook: missing_encryption_key: ")
    assert receiver.events == []
