"""Signed merchant webhooks, checked by a real HTTP receiver with verify_merchant_signature."""

from __future__ import annotations

import time

import httpx
import pytest

from refundflow.notify.errors import DeliveryError
from refundflow.notify.merchant_webhook import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    InvalidSignature,
    MerchantWebhookSender,
    encode_event,
    signature_header,
    verify_merchant_signature,
)
from tests.notify.conftest import WEBHOOK_SECRET, Receiver

EVENT = {
    "id": "evt_abc",
    "type": "notification.payout_sent",
    "created": 1791446400,
    "data": {"refund_id": "rf_1", "params": {"amount": 123456, "route": "alipay"}, "note": "退款"},
}


async def test_a_signed_event_is_accepted_by_the_merchant(receiver: Receiver) -> None:
    sender = MerchantWebhookSender(timeout_s=3)
    try:
        assert await sender.send(receiver.url, WEBHOOK_SECRET, EVENT) == 200
    finally:
        await sender.aclose()
    assert receiver.events == [EVENT] and receiver.event_ids == ["evt_abc"]


async def test_a_tampered_body_is_rejected(receiver: Receiver) -> None:
    body = encode_event(EVENT)
    headers = {
        SIGNATURE_HEADER: signature_header(WEBHOOK_SECRET, body, int(time.time())),
        EVENT_ID_HEADER: "evt_abc",
    }
    tampered = body.replace(b"123456", b"923456")
    async with httpx.AsyncClient() as client:
        resp = await client.post(receiver.url, content=tampered, headers=headers)
    assert resp.status_code == 400
    assert receiver.rejected == ["signature does not match the body"] and receiver.events == []


async def test_a_stale_timestamp_is_rejected_and_reported_as_retryable(receiver: Receiver) -> None:
    late = MerchantWebhookSender(timeout_s=3, clock=lambda: time.time() - 301)
    try:
        with pytest.raises(DeliveryError, match="HTTP 400") as err:
            await late.send(receiver.url, WEBHOOK_SECRET, EVENT)
    finally:
        await late.aclose()
    assert err.value.retryable
    assert receiver.rejected == ["timestamp outside the tolerance: a replay or a skewed clock"]


async def test_an_unreachable_endpoint_is_retryable() -> None:
    sender = MerchantWebhookSender(timeout_s=1)
    try:
        with pytest.raises(DeliveryError, match="unreachable") as err:
            await sender.send("http://127.0.0.1:9/hooks", WEBHOOK_SECRET, EVENT)
    finally:
        await sender.aclose()
    assert err.value.retryable


def test_verification_rules() -> None:
    body = encode_event(EVENT)
    now = 1_800_000_000
    good = signature_header(WEBHOOK_SECRET, body, now)
    # Header names in any case; a second v1 (secret rotation) may come first.
    rotated = f"t={now},v1={'0' * 64},{good.split(',')[1]}"
    assert verify_merchant_signature(
        WEBHOOK_SECRET, {"refundflow-signature": rotated}, body, now=now
    )
    assert verify_merchant_signature(WEBHOOK_SECRET, {SIGNATURE_HEADER: good}, body, now=now + 300)
    refusals = [
        ({}, "no Refundflow-Signature"),
        ({SIGNATURE_HEADER: "v1=abc"}, "malformed"),
        ({SIGNATURE_HEADER: good}, "tolerance"),  # checked at now + 301 below
    ]
    for headers, reason in refusals:
        with pytest.raises(InvalidSignature, match=reason):
            verify_merchant_signature(WEBHOOK_SECRET, headers, body, now=now + 301)
    with pytest.raises(InvalidSignature, match="does not match"):
        verify_merchant_signature("rfwh_other", {SIGNATURE_HEADER: good}, body, now=now)
