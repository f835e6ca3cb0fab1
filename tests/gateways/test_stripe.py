"""The Stripe adapter (official SDK, real HTTP) against the local Stripe simulator."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from refundflow.devstack.simulators.core import SimLedger, event_id
from refundflow.devstack.simulators.host import SimulatorHost
from refundflow.devstack.simulators.stripe import StripeSimulator, dev_simulator
from refundflow.domain.orders import PaymentMethod
from refundflow.domain.states import PayoutStatus
from refundflow.gateways.base import (
    GatewayError,
    GatewayMismatch,
    GatewayTimeout,
    PayoutInstruction,
)
from refundflow.gateways.stripe_card import SIGNATURE_HEADER, StripeConfig, StripeGateway
from tests.gateways.webhook_receiver import Receiver

# The SDK's httpx client posts its form body as ``data=`` bytes, which httpx deprecates.

ACCEPTED, SETTLED = PayoutStatus.ACCEPTED, PayoutStatus.SETTLED
FAILED, NOT_FOUND = PayoutStatus.FAILED_PERMANENT, PayoutStatus.NOT_FOUND


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[StripeSimulator]:
    folder: Path = tmp_path_factory.mktemp("stripe")
    ledger = SimLedger(folder / "ledger.db", settlement="queries:2", hold_seconds=1.0)
    simulator = StripeSimulator(ledger, notify_url=receiver.url)
    host = SimulatorHost([simulator], tick=0.05)
    host.start()
    yield simulator
    host.stop()


@pytest.fixture(scope="module")
async def gw(sim: StripeSimulator) -> AsyncIterator[StripeGateway]:
    gateway = StripeGateway(sim.adapter_config(sim.base_url))
    yield gateway
    await gateway.aclose()


def paid(sim: StripeSimulator, amount: int = 5000, currency: str = "USD") -> str:
    payment_id = f"pi_{uuid.uuid4().hex[:14]}"
    sim.ledger.add_payment(payment_id, amount=amount, currency=currency)
    return payment_id


def ins(payment: str, amount: int, key: str | None = None, **more: object) -> PayoutInstruction:
    key = key or f"rf_{uuid.uuid4().hex}:1:1"
    return PayoutInstruction(
        payout_key=key,
        refund_id=key.split(":")[0],
        merchant_id="shop-1",
        customer_id="cust-1",
        route=PaymentMethod.CARD,
        amount=amount,
        currency="USD",
        original_txn_id=payment,
        **more,
    )


async def test_full_refund_settles_by_polling_with_the_card_arn(
    sim: StripeSimulator, gw: StripeGateway
) -> None:
    order = ins(paid(sim), 5000)
    sent = await gw.refund(order)
    assert sent.status is ACCEPTED and sent.provider_ref.startswith("re_")
    assert sent.trace_ref == ""  # the ARN is not there while the refund is pending
    known = order.model_copy(update={"provider_ref": sent.provider_ref})
    assert (await gw.query(known)).status is ACCEPTED
    done = await gw.query(known)
    assert done.status is SETTLED and done.provider_ref == sent.provider_ref
    assert len(done.trace_ref) == 23 and done.trace_ref.isdigit()
    # Without the refund id the adapter finds it among the payment's refunds by its key.
    listed = await gw.query(order)
    assert (listed.status, listed.provider_ref, listed.trace_ref) == (
        SETTLED,
        sent.provider_ref,
        done.trace_ref,
    )
    [stored] = sim.ledger.refunds(order.payout_key)
    assert (stored.amount, stored.currency, stored.payment_id) == (
        5000,
        "USD",
        order.original_txn_id,
    )


async def test_partial_refunds_up_to_the_remainder_then_refused(
    sim: StripeSimulator, gw: StripeGateway
) -> None:
    payment = paid(sim, 5000)
    assert (await gw.refund(ins(payment, 3000))).status is ACCEPTED
    too_much = await gw.refund(ins(payment, 2001))
    assert (too_much.status, too_much.code) == (FAILED, "amount_too_large")
    # A charge refunded through its ch_ id counts against the same payment.
    charge = "ch_" + payment[3:]
    assert (await gw.refund(ins(charge, 2000))).status is ACCEPTED
    over = await gw.refund(ins(payment, 1))
    assert (over.status, over.code) == (FAILED, "charge_already_refunded")
    assert sum(r.amount for r in sim.ledger.refunds_of(payment)) == 5000


async def test_a_repeated_key_makes_one_refund_and_other_params_are_refused(
    sim: StripeSimulator, gw: StripeGateway
) -> None:
    order = ins(paid(sim), 1200)
    first, second = await gw.refund(order), await gw.refund(order)
    assert first.status is second.status is ACCEPTED
    assert first.provider_ref == second.provider_ref
    changed = await gw.refund(order.model_copy(update={"amount": 1300}))
    assert (changed.status, changed.code) == (FAILED, "idempotency_error")
    assert sim.ledger.count(order.payout_key) == 1


async def test_timeout_after_commit_then_the_query_finds_exactly_one_refund(
    sim: StripeSimulator, gw: StripeGateway
) -> None:
    order = ins(paid(sim), 700)
    sim.ledger.script(order.payout_key, ["timeout_after_commit"])
    impatient = StripeGateway(
        sim.adapter_config(sim.base_url).model_copy(update={"timeout_s": 0.3})
    )
    try:
        with pytest.raises(GatewayTimeout):
            await impatient.refund(order)
    finally:
        await impatient.aclose()
    found = await gw.query(order)
    [stored] = sim.ledger.refunds(order.payout_key)
    assert (found.status, found.provider_ref) == (ACCEPTED, stored.provider_ref)
    # Sending again under the same key replays the refund instead of making another.
    again = await gw.refund(order)
    assert again.provider_ref == stored.provider_ref
    assert sim.ledger.count(order.payout_key) == 1


async def test_transient_errors_and_rate_limits_are_retryable(
    sim: StripeSimulator, gw: StripeGateway
) -> None:
    order = ins(paid(sim), 900)
    sim.ledger.script(order.payout_key, ["transient"])
    with pytest.raises(GatewayError):
        await gw.refund(order)
    sim.throttle(1)
    with pytest.raises(GatewayError):
        await gw.refund(order)
    assert sim.ledger.count(order.payout_key) == 0
    assert (await gw.refund(order)).status is ACCEPTED
    assert sim.ledger.count(order.payout_key) == 1


async def test_an_expired_card_fails_the_refund_after_acceptance(
    sim: StripeSimulator, gw: StripeGateway, receiver: Receiver
) -> None:
    order = ins(paid(sim), 800)
    sim.ledger.script(order.payout_key, [("fail_later", "expired_or_canceled_card")])
    sent = await gw.refund(order)
    assert sent.status is ACCEPTED
    known = order.model_copy(update={"provider_ref": sent.provider_ref})
    assert (await gw.query(known)).status is ACCEPTED
    failed = await gw.query(known)
    assert (failed.status, failed.code) == (FAILED, "expired_or_canceled_card")
    [event] = await receiver.events(gw.verify_webhook, order.payout_key, 1)
    assert (event.status, event.code, event.provider_ref) == (
        FAILED,
        "expired_or_canceled_card",
        sent.provider_ref,
    )
    # The failed refund gives the money back to the charge: it can be refunded again.
    retry = await gw.refund(ins(order.original_txn_id, 800))
    assert retry.status is ACCEPTED


async def test_unknown_payments_and_keys(sim: StripeSimulator, gw: StripeGateway) -> None:
    missing = await gw.refund(ins("pi_doesnotexist", 100))
    assert (missing.status, missing.code) == (FAILED, "resource_missing")
    assert (await gw.query(ins(paid(sim), 100))).status is NOT_FOUND
    assert (await gw.query(ins(paid(sim), 100, provider_ref="re_nope"))).status is NOT_FOUND
    no_payment = await gw.refund(ins("", 100))
    assert (no_payment.status, no_payment.code) == (FAILED, "MISSING_PAYMENT")
    assert (await gw.query(ins("", 100))).status is NOT_FOUND


async def test_wrong_secret_key_is_refused_as_retryable(sim: StripeSimulator) -> None:
    config = sim.adapter_config(sim.base_url)
    wrong = StripeGateway(
        StripeConfig(
            api_base=config.api_base,
            secret_key=SecretStr("sk_test_wrong"),
            webhook_secret=config.webhook_secret,
        )
    )
    try:
        with pytest.raises(GatewayError, match="credentials"):
            await wrong.refund(ins(paid(sim), 100))
    finally:
        await wrong.aclose()


async def test_webhooks_once_twice_never_and_out_of_order(
    sim: StripeSimulator, gw: StripeGateway, receiver: Receiver
) -> None:
    payment = paid(sim, 10_000)
    orders = {mode: ins(payment, 1000) for mode in ("once", "twice", "never", "out_of_order")}
    for mode, order in orders.items():
        sim.ledger.script_webhooks(order.payout_key, [mode])
        assert (await gw.refund(order)).status is ACCEPTED
    for order in orders.values():
        sim.ledger.settle(order.payout_key)

    [once] = await receiver.events(gw.verify_webhook, orders["once"].payout_key, 1)
    assert (once.status, once.provider_ref) == (
        SETTLED,
        sim.ledger.refunds(orders["once"].payout_key)[0].provider_ref,
    )
    assert len(once.trace_ref) == 23
    assert once.event_id == event_id(orders["once"].payout_key, "SUCCESS")

    twice = await receiver.events(gw.verify_webhook, orders["twice"].payout_key, 2)
    assert [e.status for e in twice] == [SETTLED, SETTLED]
    assert twice[0].event_id == twice[1].event_id  # a redelivery, deduplicated by id

    late = await receiver.events(gw.verify_webhook, orders["out_of_order"].payout_key, 2)
    assert [e.status for e in late] == [SETTLED, ACCEPTED]  # the stale word comes last
    assert late[0].event_id != late[1].event_id

    assert await receiver.events(gw.verify_webhook, orders["never"].payout_key, 0) == []


async def test_forged_and_stale_webhooks_are_refused(
    sim: StripeSimulator, gw: StripeGateway
) -> None:
    order = ins(paid(sim), 100)
    outcome = sim.ledger.create_refund(
        refund_no=order.payout_key,
        payment_id=order.original_txn_id,
        amount=100,
        currency="USD",
        check=lambda p, rs: None,
        make_refs=lambda no: ("re_forgery" + no[-6:], "1" * 23),
        extra={"metadata": {"payout_key": order.payout_key}},
    )
    assert outcome.refund is not None
    _, headers, body = sim.event_request(outcome.refund, event_id="evt_1")
    assert gw.verify_webhook(headers, body).payout_key == order.payout_key

    with pytest.raises(ValueError, match="signature"):
        gw.verify_webhook(headers, body.replace(b'"amount": 100', b'"amount": 9999'))
    with pytest.raises(ValueError):
        gw.verify_webhook({}, body)
    stamp = headers[SIGNATURE_HEADER].split(",")[0]
    with pytest.raises(ValueError, match="signature"):
        gw.verify_webhook({SIGNATURE_HEADER: f"{stamp},v1={'0' * 64}"}, body)
    _, old_headers, old_body = sim.event_request(
        outcome.refund, event_id="evt_2", at=time.time() - 3600
    )
    with pytest.raises(ValueError, match="tolerance"):
        gw.verify_webhook(old_headers, old_body)
    # A genuine signature on an event that carries no refund is not a payout event.
    other = json.loads(body)
    other["type"] = "customer.created"
    other_body = json.dumps(other).encode()
    t = int(time.time())
    sig = hmac.new(sim.webhook_secret.encode(), f"{t}.".encode() + other_body, hashlib.sha256)
    with pytest.raises(ValueError, match="carries no refund"):
        gw.verify_webhook({SIGNATURE_HEADER: f"t={t},v1={sig.hexdigest()}"}, other_body)


# ---------------------------------------------------------------------------- currency
async def test_a_refund_in_another_currency_than_ours_is_flagged_not_taken(
    sim: StripeSimulator, gw: StripeGateway
) -> None:
    # Our tender says CNY; Stripe's charge is in USD, and a refund is in the charge's currency.
    order = ins(paid(sim, 5000, currency="USD"), 4000).model_copy(update={"currency": "CNY"})
    with pytest.raises(GatewayMismatch, match="usd") as refused:
        await gw.refund(order)
    [stored] = sim.ledger.refunds(order.payout_key)
    assert stored.currency == "USD"
    assert stored.provider_ref in str(refused.value)  # ops get a handle on the money moved
    with pytest.raises(GatewayMismatch):
        await gw.query(order)
    with pytest.raises(GatewayMismatch):
        await gw.query(order.model_copy(update={"provider_ref": stored.provider_ref}))
    _, headers, body = sim.event_request(stored, event_id="evt_usd")
    event = gw.verify_webhook(headers, body)
    assert (event.amount, event.currency) == (4000, "USD")  # so the run can tell it is not ours


async def test_the_dev_simulator_refunds_in_the_currency_of_the_payment(tmp_path: Path) -> None:
    dev = dev_simulator(tmp_path, notify_url="http://127.0.0.1:9/v1/webhooks/stripe")
    host = SimulatorHost([dev])
    host.start()
    gateway = StripeGateway(dev.adapter_config(host.base_url("stripe")))
    try:
        # The dev stack's Stripe takes any PaymentIntent, as if the customer had paid it.
        order = ins(f"pi_{uuid.uuid4().hex[:14]}", 89900).model_copy(update={"currency": "CNY"})
        assert (await gateway.refund(order)).status is ACCEPTED
        [stored] = dev.ledger.refunds(order.payout_key)
        assert (stored.amount, stored.currency) == (89900, "CNY")
        assert dev.render(stored)["currency"] == "cny"
        assert (await gateway.query(order)).status is ACCEPTED
    finally:
        await gateway.aclose()
        host.stop()
