"""The PayPal adapter (REST over httpx, real HTTP and RSA webhooks) against the PayPal simulator."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pydantic import SecretStr

from refundflow.devstack.simulators.core import SimLedger
from refundflow.devstack.simulators.host import SimulatorHost
from refundflow.devstack.simulators.paypal import PayPalSimulator
from refundflow.domain.errors import DomainError
from refundflow.domain.orders import PaymentMethod
from refundflow.domain.states import PayoutStatus
from refundflow.gateways.base import GatewayError, GatewayTimeout, PayoutInstruction
from refundflow.gateways.paypal import (
    PayPalConfig,
    PayPalGateway,
    minor_from_value,
    paypal_value,
)
from tests.gateways.webhook_receiver import Receiver

ACCEPTED, SETTLED = PayoutStatus.ACCEPTED, PayoutStatus.SETTLED
FAILED, NOT_FOUND = PayoutStatus.FAILED_PERMANENT, PayoutStatus.NOT_FOUND
DAY = 86400.0


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[PayPalSimulator]:
    folder: Path = tmp_path_factory.mktemp("paypal")
    ledger = SimLedger(folder / "ledger.db", settlement="queries:2", hold_seconds=1.0)
    simulator = PayPalSimulator(ledger, notify_url=receiver.url)
    host = SimulatorHost([simulator], tick=0.05)
    host.start()
    yield simulator
    host.stop()


@pytest.fixture(scope="module")
async def gw(sim: PayPalSimulator) -> AsyncIterator[PayPalGateway]:
    # Not pinned: the adapter fetches the certificate from the simulator, as from PayPal.
    gateway = PayPalGateway(sim.adapter_config(sim.base_url, pin_certificate=False))
    yield gateway
    await gateway.aclose()


def captured(
    sim: PayPalSimulator, amount: int = 5000, currency: str = "USD", age_days: float = 1
) -> str:
    capture_id = uuid.uuid4().hex[:17].upper()
    sim.ledger.add_payment(
        capture_id, amount=amount, currency=currency, paid_at=time.time() - age_days * DAY
    )
    return capture_id


def ins(capture: str, amount: int, currency: str = "USD", **more: object) -> PayoutInstruction:
    key = f"rf_{uuid.uuid4().hex}:1:1"
    return PayoutInstruction(
        payout_key=key,
        refund_id=key.split(":")[0],
        merchant_id="shop-1",
        customer_id="cust-1",
        route=PaymentMethod.PAYPAL,
        amount=amount,
        currency=currency,
        original_txn_id=capture,
        **more,
    )


def test_amounts_travel_exactly_in_paypal_units() -> None:
    assert paypal_value(1234, "USD") == "12.34"
    assert paypal_value(5, "USD") == "0.05"
    assert paypal_value(1500, "JPY") == "1500"
    assert paypal_value(1234, "KWD") == "1.234"
    assert paypal_value(123400, "HUF") == "1234"  # PayPal takes forints whole
    with pytest.raises(DomainError) as refused:
        paypal_value(123450, "HUF")
    assert refused.value.code == "DECIMALS_NOT_SUPPORTED"
    assert minor_from_value("12.3", "USD") == 1230
    assert minor_from_value("1500", "JPY") == 1500
    assert minor_from_value("1234", "HUF") == 123400
    for value, currency, code in (
        ("15.5", "JPY", "DECIMALS_NOT_SUPPORTED"),
        ("1.234", "USD", "DECIMAL_PRECISION"),
        ("-1.00", "USD", "INVALID_PARAMETER_VALUE"),
    ):
        with pytest.raises(DomainError) as bad:
            minor_from_value(value, currency)
        assert bad.value.code == code


async def test_full_refund_settles_by_polling(sim: PayPalSimulator, gw: PayPalGateway) -> None:
    order = ins(captured(sim), 5000)
    sent = await gw.refund(order)
    assert sent.status is ACCEPTED and len(sent.provider_ref) == 17
    known = order.model_copy(update={"provider_ref": sent.provider_ref})
    assert (await gw.query(known)).status is ACCEPTED
    done = await gw.query(known)
    assert (done.status, done.provider_ref, done.trace_ref) == (
        SETTLED,
        sent.provider_ref,
        sent.provider_ref,
    )
    assert done.settled_at is not None
    [stored] = sim.ledger.refunds(order.payout_key)
    assert stored.extra["custom_id"] == stored.extra["invoice_id"] == order.payout_key


async def test_yen_refunds_carry_no_decimals(sim: PayPalSimulator, gw: PayPalGateway) -> None:
    order = ins(captured(sim, 3000, "JPY"), 1500, "JPY")
    assert (await gw.refund(order)).status is ACCEPTED
    assert sim.ledger.refunds(order.payout_key)[0].amount == 1500
    forint = await gw.refund(ins(captured(sim, 100_000, "HUF"), 12_345, "HUF"))
    assert (forint.status, forint.code) == (FAILED, "DECIMALS_NOT_SUPPORTED")


async def test_partial_refunds_up_to_the_remainder_then_refused(
    sim: PayPalSimulator, gw: PayPalGateway
) -> None:
    capture = captured(sim, 5000)
    assert (await gw.refund(ins(capture, 3000))).status is ACCEPTED
    too_much = await gw.refund(ins(capture, 2001))
    assert (too_much.status, too_much.code) == (FAILED, "REFUND_AMOUNT_EXCEEDED")
    assert (await gw.refund(ins(capture, 2000))).status is ACCEPTED
    over = await gw.refund(ins(capture, 1))
    assert (over.status, over.code) == (FAILED, "CAPTURE_FULLY_REFUNDED")
    assert sum(r.amount for r in sim.ledger.refunds_of(capture)) == 5000


async def test_a_repeated_request_id_makes_one_refund(
    sim: PayPalSimulator, gw: PayPalGateway
) -> None:
    order = ins(captured(sim), 1200)
    first, second = await gw.refund(order), await gw.refund(order)
    assert first.provider_ref == second.provider_ref
    # PayPal answers the first refund whatever the body says; the adapter notices.
    changed = await gw.refund(order.model_copy(update={"amount": 1300}))
    assert (changed.status, changed.code) == (FAILED, "REQUEST_ID_REUSED")
    assert sim.ledger.count(order.payout_key) == 1


async def test_timeout_after_commit_then_the_same_request_id_finds_the_refund(
    sim: PayPalSimulator, gw: PayPalGateway
) -> None:
    order = ins(captured(sim), 700)
    sim.ledger.script(order.payout_key, ["timeout_after_commit"])
    config = sim.adapter_config(sim.base_url).model_copy(update={"timeout_s": 0.3})
    impatient = PayPalGateway(config)
    try:
        with pytest.raises(GatewayTimeout):
            await impatient.refund(order)
    finally:
        await impatient.aclose()
    # No provider_ref: the query re-posts under the same PayPal-Request-Id.
    found = await gw.query(order)
    [stored] = sim.ledger.refunds(order.payout_key)
    assert (found.status, found.provider_ref) == (ACCEPTED, stored.provider_ref)
    assert sim.ledger.count(order.payout_key) == 1
    by_id = await gw.query(order.model_copy(update={"provider_ref": stored.provider_ref}))
    assert by_id.status is SETTLED  # the second look: settled by the queries:2 rule
    assert (await gw.query(order)).status is SETTLED
    assert sim.ledger.count(order.payout_key) == 1


async def test_transient_errors_and_rate_limits_are_retryable(
    sim: PayPalSimulator, gw: PayPalGateway
) -> None:
    order = ins(captured(sim), 900)
    sim.ledger.script(order.payout_key, ["transient"])
    with pytest.raises(GatewayError, match="500"):
        await gw.refund(order)
    sim.throttle(1)
    with pytest.raises(GatewayError, match="429"):
        await gw.refund(order)
    assert sim.ledger.count(order.payout_key) == 0
    assert (await gw.refund(order)).status is ACCEPTED


async def test_the_refund_window_closes_after_180_days(
    sim: PayPalSimulator, gw: PayPalGateway
) -> None:
    late = await gw.refund(ins(captured(sim, age_days=181), 100))
    assert (late.status, late.code) == (FAILED, "REFUND_TIME_LIMIT_EXCEEDED")
    assert (await gw.refund(ins(captured(sim, age_days=179), 100))).status is ACCEPTED
    unknown = await gw.refund(ins("NOSUCHCAPTURE0000", 100))
    assert (unknown.status, unknown.code) == (FAILED, "INVALID_RESOURCE_ID")
    gone = await gw.query(ins(captured(sim), 100, provider_ref="NOSUCHREFUND00000"))
    assert gone.status is NOT_FOUND


async def test_an_expired_token_is_renewed_once_and_bad_credentials_are_retryable(
    sim: PayPalSimulator, gw: PayPalGateway
) -> None:
    assert (await gw.refund(ins(captured(sim), 100))).status is ACCEPTED
    sim.revoke_tokens()
    assert (await gw.refund(ins(captured(sim), 100))).status is ACCEPTED
    config = sim.adapter_config(sim.base_url)
    wrong = PayPalGateway(
        PayPalConfig(
            api_base=config.api_base,
            client_id=config.client_id,
            client_secret=SecretStr("not-the-secret"),
            webhook_id=config.webhook_id,
        )
    )
    try:
        with pytest.raises(GatewayError, match="token"):
            await wrong.refund(ins(captured(sim), 100))
    finally:
        await wrong.aclose()


async def test_a_failed_refund_is_announced_by_a_signed_webhook(
    sim: PayPalSimulator, gw: PayPalGateway, receiver: Receiver
) -> None:
    order = ins(captured(sim), 800)
    sim.ledger.script(order.payout_key, [("fail_later", "REFUND_FAILED_INSUFFICIENT_FUNDS")])
    sent = await gw.refund(order)
    assert sent.status is ACCEPTED
    known = order.model_copy(update={"provider_ref": sent.provider_ref})
    await gw.query(known)
    failed = await gw.query(known)
    assert (failed.status, failed.code) == (FAILED, "REFUND_FAILED_INSUFFICIENT_FUNDS")
    [event] = await receiver.events(gw.verify_webhook, order.payout_key, 1)
    assert (event.status, event.provider_ref) == (FAILED, sent.provider_ref)
    assert event.event_id.startswith("WH-")


async def test_webhooks_once_twice_never_and_out_of_order(
    sim: PayPalSimulator, gw: PayPalGateway, receiver: Receiver
) -> None:
    capture = captured(sim, 10_000)
    orders = {mode: ins(capture, 1000) for mode in ("once", "twice", "never", "out_of_order")}
    for mode, order in orders.items():
        sim.ledger.script_webhooks(order.payout_key, [mode])
        assert (await gw.refund(order)).status is ACCEPTED
    for order in orders.values():
        sim.ledger.settle(order.payout_key)

    [once] = await receiver.events(gw.verify_webhook, orders["once"].payout_key, 1)
    stored = sim.ledger.refunds(orders["once"].payout_key)[0]
    assert (once.status, once.provider_ref, once.trace_ref) == (
        SETTLED,
        stored.provider_ref,
        stored.provider_ref,
    )
    twice = await receiver.events(gw.verify_webhook, orders["twice"].payout_key, 2)
    assert [e.status for e in twice] == [SETTLED, SETTLED]
    assert twice[0].event_id == twice[1].event_id
    late = await receiver.events(gw.verify_webhook, orders["out_of_order"].payout_key, 2)
    assert [e.status for e in late] == [SETTLED, ACCEPTED]
    assert await receiver.events(gw.verify_webhook, orders["never"].payout_key, 0) == []


async def test_forged_and_stale_webhooks_are_refused(
    sim: PayPalSimulator, gw: PayPalGateway
) -> None:
    order = ins(captured(sim), 100)
    await gw.refund(order)
    refund = sim.ledger.refunds(order.payout_key)[0]
    _, headers, body = sim.event_request(refund, event_id="evt_genuine")
    event = await asyncio.to_thread(gw.verify_webhook, headers, body)
    assert (event.payout_key, event.status) == (order.payout_key, ACCEPTED)

    def refused(h: dict[str, str], b: bytes, match: str) -> None:
        with pytest.raises(ValueError, match=match):
            gw.verify_webhook(h, b)

    refused(headers, body.replace(b'"value": "1.00"', b'"value": "99.00"'), "does not verify")
    refused({**headers, "PAYPAL-AUTH-ALGO": "SHA1withRSA"}, body, "algorithm")
    # A forger's own certificate, served from anywhere but PayPal's API, is never fetched.
    for url in (
        "http://127.0.0.1:9/v1/notifications/certs/CERT-evil",
        sim.base_url + "/../evil/v1/notifications/certs/CERT-x",
        sim.base_url + "/v2/payments/refunds/CERT-x",
    ):
        refused({**headers, "PAYPAL-CERT-URL": url}, body, "not PayPal's")
    refused({**headers, "PAYPAL-CERT-URL": sim.cert_url + "x"}, body, "unavailable")
    # Signed by another key under the genuine certificate URL.
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged_sig = other.sign(b"anything", padding.PKCS1v15(), hashes.SHA256())
    forged = {**headers, "PAYPAL-TRANSMISSION-SIG": base64.b64encode(forged_sig).decode()}
    refused(forged, body, "does not verify")
    _, old_headers, old_body = sim.event_request(refund, event_id="evt_old", at=time.time() - 900)
    refused(old_headers, old_body, "tolerance")
    refused({}, body, "transmission headers")


async def test_a_pinned_certificate_verifies_without_trusting_other_urls(
    sim: PayPalSimulator, gw: PayPalGateway
) -> None:
    pinned = PayPalGateway(sim.adapter_config(sim.base_url))
    try:
        order = ins(captured(sim), 100)
        await gw.refund(order)
        refund = sim.ledger.refunds(order.payout_key)[0]
        _, headers, body = sim.event_request(refund, event_id="evt_pinned")
        assert pinned.verify_webhook(headers, body).payout_key == order.payout_key
        with pytest.raises(ValueError, match="not PayPal's"):
            evil = {**headers, "PAYPAL-CERT-URL": "http://127.0.0.1:9/v1/notifications/certs/x"}
            pinned.verify_webhook(evil, body)
    finally:
        await pinned.aclose()
