"""The bank-transfer adapter against the simulated bank: signed requests, ISO 20022 reasons."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from refundflow.devstack.simulators.bank import BankSimulator
from refundflow.devstack.simulators.core import SimLedger
from refundflow.devstack.simulators.host import SimulatorHost
from refundflow.domain.orders import BankAccount, PaymentMethod
from refundflow.domain.states import PayoutStatus
from refundflow.gateways.bank_transfer import (
    BATCHES_PATH,
    SIGNATURE_HEADER,
    BankTransferGateway,
    major,
    webhook_signature,
)
from refundflow.gateways.base import GatewayError, GatewayTimeout, PayoutInstruction
from tests.gateways.webhook_receiver import Receiver

ACCEPTED, SETTLED = PayoutStatus.ACCEPTED, PayoutStatus.SETTLED
FAILED, NOT_FOUND = PayoutStatus.FAILED_PERMANENT, PayoutStatus.NOT_FOUND
IBAN = "DE89 3704 0044 0532 0130 00"


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[BankSimulator]:
    folder: Path = tmp_path_factory.mktemp("bank")
    ledger = SimLedger(folder / "ledger.db", settlement="queries:2", hold_seconds=1.0)
    simulator = BankSimulator(ledger, notify_url=receiver.url)
    simulator.fund(10**9, "CNY")
    host = SimulatorHost([simulator], tick=0.05)
    host.start()
    yield simulator
    host.stop()


@pytest.fixture(scope="module")
async def gw(sim: BankSimulator) -> AsyncIterator[BankTransferGateway]:
    gateway = BankTransferGateway(sim.adapter_config(sim.base_url))
    yield gateway
    await gateway.aclose()


def account(number: str = IBAN, bank_code: str = "COBADEFFXXX") -> BankAccount:
    return BankAccount(
        holder_name="Li Wei",
        account_number=number,
        bank_name="Commerzbank",
        bank_code=bank_code,
        country="DE",
        currency="EUR",
    )


def ins(
    amount: int, currency: str = "CNY", bank: BankAccount | None = None, **more: object
) -> PayoutInstruction:
    key = f"rf_{uuid.uuid4().hex}:1:1"
    return PayoutInstruction(
        payout_key=key,
        refund_id=key.split(":")[0],
        merchant_id="shop-1",
        customer_id="cust-1",
        route=PaymentMethod.BANK_TRANSFER,
        amount=amount,
        currency=currency,
        bank_account=bank or account(),
        **more,
    )


def test_amounts_travel_as_exact_decimals() -> None:
    assert (major(1234, "EUR"), major(7, "EUR"), major(500, "JPY"), major(1001, "KWD")) == (
        "12.34",
        "0.07",
        "500",
        "1.001",
    )


async def test_full_transfer_settles_by_polling_with_the_bank_reference(
    sim: BankSimulator, gw: BankTransferGateway
) -> None:
    order = ins(12_345)
    sent = await gw.refund(order)
    assert sent.status is ACCEPTED and sent.provider_ref.startswith("CT")
    assert (await gw.query(order)).status is ACCEPTED
    done = await gw.query(order)
    assert (done.status, done.provider_ref) == (SETTLED, sent.provider_ref)
    assert done.trace_ref.startswith("BNK") and done.settled_at is not None
    [stored] = sim.ledger.refunds(order.payout_key)
    creditor = stored.extra["creditor"]
    assert (stored.amount, stored.currency) == (12_345, "CNY")
    assert (creditor["name"], creditor["account_number"], creditor["bank_code"]) == (
        "Li Wei",
        IBAN,
        "COBADEFFXXX",
    )


async def test_an_instruction_without_an_account_is_refused_before_sending(
    sim: BankSimulator, gw: BankTransferGateway
) -> None:
    order = ins(100).model_copy(update={"bank_account": None})
    refused = await gw.refund(order)
    assert (refused.status, refused.code) == (FAILED, "MISSING_ACCOUNT")
    assert sim.ledger.count(order.payout_key) == 0


async def test_transfers_draw_the_balance_down_then_are_refused(
    sim: BankSimulator, gw: BankTransferGateway
) -> None:
    sim.fund(5000, "EUR")
    assert (await gw.refund(ins(3000, "EUR"))).status is ACCEPTED
    too_much = await gw.refund(ins(2001, "EUR"))
    assert (too_much.status, too_much.code) == (FAILED, "AM04")
    assert (await gw.refund(ins(2000, "EUR"))).status is ACCEPTED
    over = await gw.refund(ins(1, "EUR"))
    assert (over.status, over.code) == (FAILED, "AM04")
    assert sum(r.amount for r in sim.ledger.refunds_of(f"{sim.debtor_account}:EUR")) == 5000


async def test_a_repeated_reference_makes_one_transfer(
    sim: BankSimulator, gw: BankTransferGateway
) -> None:
    order = ins(800)
    first, second = await gw.refund(order), await gw.refund(order)
    assert first.provider_ref == second.provider_ref
    changed = await gw.refund(order.model_copy(update={"amount": 801}))
    assert (changed.status, changed.code) == (FAILED, "AM05")
    elsewhere = await gw.refund(
        order.model_copy(update={"bank_account": account("GB82WEST12345698765432")})
    )
    assert (elsewhere.status, elsewhere.code) == (FAILED, "AM05")
    assert sim.ledger.count(order.payout_key) == 1


async def test_timeout_after_commit_then_the_query_finds_exactly_one_transfer(
    sim: BankSimulator, gw: BankTransferGateway
) -> None:
    order = ins(700)
    assert (await gw.query(order)).status is NOT_FOUND
    sim.ledger.script(order.payout_key, ["timeout_after_commit"])
    config = sim.adapter_config(sim.base_url).model_copy(update={"timeout_s": 0.3})
    impatient = BankTransferGateway(config)
    try:
        with pytest.raises(GatewayTimeout):
            await impatient.refund(order)
    finally:
        await impatient.aclose()
    found = await gw.query(order)
    [stored] = sim.ledger.refunds(order.payout_key)
    assert (found.status, found.provider_ref) == (ACCEPTED, stored.provider_ref)
    assert (await gw.refund(order)).provider_ref == stored.provider_ref
    assert sim.ledger.count(order.payout_key) == 1


async def test_an_unavailable_bank_is_retryable(
    sim: BankSimulator, gw: BankTransferGateway
) -> None:
    order = ins(900)
    sim.ledger.script(order.payout_key, ["transient"])
    with pytest.raises(GatewayError, match="503"):
        await gw.refund(order)
    assert sim.ledger.count(order.payout_key) == 0
    assert (await gw.refund(order)).status is ACCEPTED


async def test_a_closed_account_comes_back_returned_ac04(
    sim: BankSimulator, gw: BankTransferGateway, receiver: Receiver
) -> None:
    closed = "NL91ABNA0417164300"
    sim.close_account(closed)
    order = ins(600, bank=account(closed, "ABNANL2A"))
    sent = await gw.refund(order)
    assert sent.status is ACCEPTED  # the sending bank cannot know yet
    assert (await gw.query(order)).status is ACCEPTED
    returned = await gw.query(order)
    assert (returned.status, returned.code, returned.message) == (
        FAILED,
        "AC04",
        "ClosedAccountNumber",
    )
    [event] = await receiver.events(gw.verify_webhook, order.payout_key, 1)
    assert (event.status, event.code, event.provider_ref) == (FAILED, "AC04", sent.provider_ref)


async def test_invalid_accounts_and_bank_codes_are_rejected_at_intake(
    sim: BankSimulator, gw: BankTransferGateway
) -> None:
    sim.invalidate_account("6222020200112233")
    cases = [
        (ins(100, bank=account("DE89370400440532013001")), "AC01"),  # IBAN checksum
        (ins(100, bank=account("6222020200112233", "102100099996")), "AC01"),  # marked
        (ins(100, bank=account(bank_code="NOT A CODE!")), "RC01"),
        (ins(100, "GBP"), "AC02"),  # the merchant holds no GBP at this bank
    ]
    for order, code in cases:
        refused = await gw.refund(order)
        assert (refused.status, refused.code) == (FAILED, code)
        assert sim.ledger.count(order.payout_key) == 0
        assert (await gw.query(order)).status is NOT_FOUND


async def test_requests_must_be_signed(sim: BankSimulator) -> None:
    body = json.dumps({"debtor_account": sim.debtor_account, "transfers": [{}]}).encode()
    async with httpx.AsyncClient() as client:
        unsigned = await client.post(sim.base_url + BATCHES_PATH, content=body)
        assert unsigned.status_code == 401
        forged = await client.post(
            sim.base_url + BATCHES_PATH,
            content=body,
            headers={
                "X-Bank-Client": sim.client_id,
                "X-Bank-Timestamp": str(int(time.time())),
                SIGNATURE_HEADER: "v1=" + "0" * 64,
            },
        )
        assert forged.status_code == 401
    config = sim.adapter_config(sim.base_url)
    skewed = BankTransferGateway(config, clock=lambda: time.time() - 3600)
    try:
        with pytest.raises(GatewayError, match="401"):
            await skewed.refund(ins(100))
    finally:
        await skewed.aclose()


async def test_webhooks_once_twice_never_and_out_of_order(
    sim: BankSimulator, gw: BankTransferGateway, receiver: Receiver
) -> None:
    orders = {mode: ins(1000) for mode in ("once", "twice", "never", "out_of_order")}
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
        stored.trace_ref,
    )
    twice = await receiver.events(gw.verify_webhook, orders["twice"].payout_key, 2)
    assert [e.status for e in twice] == [SETTLED, SETTLED]
    assert twice[0].event_id == twice[1].event_id
    late = await receiver.events(gw.verify_webhook, orders["out_of_order"].payout_key, 2)
    assert [e.status for e in late] == [SETTLED, ACCEPTED]
    assert await receiver.events(gw.verify_webhook, orders["never"].payout_key, 0) == []


async def test_forged_and_stale_webhooks_are_refused(
    sim: BankSimulator, gw: BankTransferGateway
) -> None:
    order = ins(100)
    await gw.refund(order)
    refund = sim.ledger.refunds(order.payout_key)[0]
    _, headers, body = sim.event_request(refund, event_id="evt_1")
    assert gw.verify_webhook(headers, body).payout_key == order.payout_key
    with pytest.raises(ValueError, match="does not verify"):
        gw.verify_webhook(headers, body.replace(b'"value":"1.00"', b'"value":"99.00"'))
    t = int(time.time())
    with pytest.raises(ValueError, match="does not verify"):
        wrong = webhook_signature("not-the-secret", t, body)
        gw.verify_webhook({SIGNATURE_HEADER: f"t={t},v1={wrong}"}, body)
    with pytest.raises(ValueError, match="well-formed"):
        gw.verify_webhook({}, body)
    _, old_headers, old_body = sim.event_request(refund, event_id="evt_2", at=time.time() - 900)
    with pytest.raises(ValueError, match="tolerance"):
        gw.verify_webhook(old_headers, old_body)
