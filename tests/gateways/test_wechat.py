"""The WeChat Pay v3 adapter against its simulator: real HTTP, RSA signatures both ways,
AES-GCM encrypted notifications delivered to a real endpoint."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from refundflow.devstack.simulators.core import SimLedger, WebhookDue, event_id
from refundflow.devstack.simulators.host import SimulatorHost
from refundflow.devstack.simulators.keys import generate
from refundflow.devstack.simulators.wechat import WechatSimulator, dev_simulator
from refundflow.domain.orders import PaymentMethod
from refundflow.domain.states import PayoutStatus
from refundflow.gateways.base import GatewayError, GatewayTimeout, PayoutInstruction
from refundflow.gateways.wechat import (
    WechatBusy,
    WechatConfig,
    WechatGateway,
    WechatSignatureError,
    out_refund_no,
    payout_key_of,
)

ACCEPTED, SETTLED = PayoutStatus.ACCEPTED, PayoutStatus.SETTLED
FAILED, NOT_FOUND = PayoutStatus.FAILED_PERMANENT, PayoutStatus.NOT_FOUND
_orders = itertools.count(1)


class Receiver:
    """The merchant's notification endpoint, served by the same host as the simulator."""

    name = "merchant"

    def __init__(self, path: Path) -> None:
        self.ledger = SimLedger(path)  # no refunds of its own: the host's sweeps find nothing
        self.url = ""
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.refuse: set[str] = set()
        """Event ids answered 500 the first time (WeChat must redeliver them)."""

    def app(self) -> ASGIApp:
        async def notify(request: Request) -> Response:
            body = await request.body()
            self.received.append((dict(request.headers), body))
            event_id = json.loads(body)["id"]
            if event_id in self.refuse:
                self.refuse.discard(event_id)
                return Response(b'{"code":"FAIL","message":"busy"}', 500)
            return Response(status_code=204)

        return Starlette(routes=[Route("/notify", notify, methods=["POST"])])

    def bind(self, base_url: str) -> None:
        self.url = f"{base_url}/notify"

    def webhook_request(self, due: WebhookDue) -> None:
        return None


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WechatSimulator, Receiver]]:
    root = tmp_path_factory.mktemp("wechat")
    ledger = SimLedger(root / "wechat.db", settlement="never", hold_seconds=1.5)
    sim = WechatSimulator(ledger, keys_dir=root / "keys")
    receiver = Receiver(root / "merchant.db")
    host = SimulatorHost([sim, receiver], tick=0.05)
    host.start()
    yield sim, receiver
    host.stop()


@pytest.fixture(scope="module")
def sim(world: tuple[WechatSimulator, Receiver]) -> WechatSimulator:
    return world[0]


@pytest.fixture(scope="module")
def receiver(world: tuple[WechatSimulator, Receiver]) -> Receiver:
    return world[1]


@pytest.fixture(scope="module")
def config(sim: WechatSimulator, receiver: Receiver) -> WechatConfig:
    return sim.adapter_config(sim.base_url).model_copy(update={"notify_url": receiver.url})


@pytest.fixture(scope="module")
async def gw(config: WechatConfig) -> AsyncIterator[WechatGateway]:
    gateway = WechatGateway(config)
    yield gateway
    await gateway.aclose()


def order(
    sim: WechatSimulator,
    amount: int = 10_000,
    *,
    paid_at: float | None = None,
    user_received_account: str = "支付用户零钱",
) -> str:
    transaction_id = f"42000{next(_orders):05d}2026{uuid.uuid4().int % 10**14:014d}"
    sim.add_transaction(
        transaction_id, amount=amount, paid_at=paid_at, user_received_account=user_received_account
    )
    return transaction_id


def key(tranche: int = 1) -> str:
    return f"rf_{uuid.uuid4().hex}:{tranche}:0"


def ins(txn: str, payout_key: str, amount: int, total: int = 10_000) -> PayoutInstruction:
    return PayoutInstruction(
        payout_key=payout_key,
        refund_id=payout_key.split(":")[0],
        merchant_id="shop-1",
        customer_id="cust-1",
        route=PaymentMethod.WECHAT,
        amount=amount,
        currency="CNY",
        original_txn_id=txn,
        original_amount=total,
        reason="商品已售完",
    )


def hooks_for(receiver: Receiver, gw: WechatGateway, payout_key: str) -> list[tuple[str, str]]:
    """(event id, refund status) of every notification received for this payout, in order."""
    found = []
    for headers, body in receiver.received:
        event = gw.verify_webhook(headers, body)
        if event.payout_key == payout_key:
            found.append((event.event_id, event.code))
    return found


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


# ---------------------------------------------------------------------------- wire format
def test_payout_keys_map_onto_out_refund_no_exactly() -> None:
    payout_key = f"rf_{uuid.uuid4().hex}:2:1"
    assert out_refund_no(payout_key) == payout_key.replace(":", "*")
    assert payout_key_of(out_refund_no(payout_key)) == payout_key
    for bad in ("has*star:1:0", "dots.are:1:0", "x" * 65):
        with pytest.raises(ValueError):
            out_refund_no(bad)


async def test_an_unsigned_or_wrongly_signed_request_gets_sign_error(
    sim: WechatSimulator, config: WechatConfig
) -> None:
    async with httpx.AsyncClient() as client:
        bare = await client.get(f"{sim.base_url}/v3/refund/domestic/refunds/x1")
    assert bare.status_code == 401 and bare.json()["code"] == "SIGN_ERROR"
    stranger = config.model_copy(
        update={"merchant_private_key": SecretStr(generate("x").private_pem)}
    )
    gateway = WechatGateway(stranger)
    try:
        with pytest.raises(WechatBusy) as caught:
            await gateway.refund(ins(order(sim), payout_key := key(), 100))
    finally:
        await gateway.aclose()
    assert caught.value.code == "SIGN_ERROR"
    assert sim.ledger.count(out_refund_no(payout_key)) == 0


async def test_a_request_with_an_old_timestamp_is_refused(
    sim: WechatSimulator, config: WechatConfig
) -> None:
    late = WechatGateway(config, clock=lambda: time.time() - 600)
    try:
        with pytest.raises(WechatBusy) as caught:
            await late.query(ins(order(sim), key(), 100))
    finally:
        await late.aclose()
    assert caught.value.code == "SIGN_ERROR"


# ---------------------------------------------------------------------------- refunds
async def test_full_refund_then_settlement(sim: WechatSimulator, gw: WechatGateway) -> None:
    txn, payout_key = order(sim, user_received_account="招商银行信用卡0403"), key()
    result = await gw.refund(ins(txn, payout_key, 10_000))
    assert result.status is ACCEPTED and result.code == "PROCESSING"
    # The customer traces a refund by WeChat Pay's refund number, not by the receiving account.
    assert result.provider_ref.startswith("50") and result.trace_ref == result.provider_ref
    [stored] = sim.ledger.refunds(out_refund_no(payout_key))
    assert (stored.amount, stored.payment_id, stored.extra["notify_url"]) == (
        10_000,
        txn,
        gw.config.notify_url,
    )
    sim.ledger.settle(out_refund_no(payout_key))
    settled = await gw.query(ins(txn, payout_key, 10_000))
    assert settled.status is SETTLED and settled.code == "SUCCESS"
    assert settled.settled_at is not None and settled.trace_ref == result.provider_ref


async def test_partial_refunds_up_to_the_total_then_one_more_is_refused(
    sim: WechatSimulator, gw: WechatGateway
) -> None:
    txn = order(sim, 10_000)
    for tranche, amount in enumerate((2_500, 2_500, 5_000), start=1):
        assert (await gw.refund(ins(txn, key(tranche), amount))).status is ACCEPTED
    over = await gw.refund(ins(txn, extra := key(4), 1))
    assert over.status is FAILED and over.code == "INVALID_REQUEST"
    assert "全额退款" in over.message
    assert sum(r.amount for r in sim.ledger.refunds_of(txn)) == 10_000
    assert sim.ledger.count(out_refund_no(extra)) == 0


async def test_a_refund_above_what_is_left_is_refused(
    sim: WechatSimulator, gw: WechatGateway
) -> None:
    txn = order(sim, 10_000)
    await gw.refund(ins(txn, key(1), 6_000))
    over = await gw.refund(ins(txn, key(2), 4_001))
    assert over.status is FAILED and over.code == "INVALID_REQUEST" and "可退金额" in over.message


async def test_a_repeated_out_refund_no_returns_the_existing_refund(
    sim: WechatSimulator, gw: WechatGateway
) -> None:
    txn, payout_key = order(sim), key()
    first = await gw.refund(ins(txn, payout_key, 3_000))
    again = await gw.refund(ins(txn, payout_key, 3_000))
    assert first.provider_ref == again.provider_ref and again.status is ACCEPTED
    changed = await gw.refund(ins(txn, payout_key, 3_001))
    assert changed.status is FAILED and changed.code == "INVALID_REQUEST"
    assert sim.ledger.count(out_refund_no(payout_key)) == 1


async def test_total_must_be_the_payments_amount(sim: WechatSimulator, gw: WechatGateway) -> None:
    txn = order(sim, 10_000)
    result = await gw.refund(ins(txn, key(), 100, total=9_999))
    assert result.status is FAILED and result.code == "INVALID_REQUEST"
    assert sim.ledger.refunds_of(txn) == []


async def test_timeout_after_commit_then_the_query_finds_exactly_one_refund(
    sim: WechatSimulator, config: WechatConfig
) -> None:
    txn, payout_key = order(sim), key()
    sim.ledger.script(out_refund_no(payout_key), ["timeout_after_commit"])
    impatient = WechatGateway(config.model_copy(update={"timeout_s": 0.3}))
    try:
        with pytest.raises(GatewayTimeout):
            await impatient.refund(ins(txn, payout_key, 800))
        # On a busy machine the client's 0.3 s can run out before the provider has stored
        # the refund at all (a plain timeout, another test): this one asks once it has.
        await eventually(lambda: sim.ledger.count(out_refund_no(payout_key)) == 1)
        found = await impatient.query(ins(txn, payout_key, 800))
        assert found.status is ACCEPTED and found.provider_ref
        assert (await impatient.refund(ins(txn, payout_key, 800))).status is ACCEPTED
    finally:
        await impatient.aclose()
    assert sim.ledger.count(out_refund_no(payout_key)) == 1


@pytest.mark.parametrize("code", ["transient", "FREQUENCY_LIMITED", "NOT_ENOUGH"])
async def test_busy_answers_are_retryable_and_take_nothing(
    sim: WechatSimulator, gw: WechatGateway, code: str
) -> None:
    txn, payout_key = order(sim), key()
    behaviour = "transient" if code == "transient" else ("permanent", code)
    sim.ledger.script(out_refund_no(payout_key), [behaviour])
    with pytest.raises(GatewayError) as caught:
        await gw.refund(ins(txn, payout_key, 100))
    assert isinstance(caught.value, WechatBusy)
    assert caught.value.code == ("SYSTEM_ERROR" if code == "transient" else code)
    assert (await gw.query(ins(txn, payout_key, 100))).status is NOT_FOUND
    assert (await gw.refund(ins(txn, payout_key, 100))).status is ACCEPTED


@pytest.mark.parametrize("code", ["USER_ACCOUNT_ABNORMAL", "NO_AUTH"])
async def test_permanent_codes_fail_with_wechats_code(
    sim: WechatSimulator, gw: WechatGateway, code: str
) -> None:
    txn, payout_key = order(sim), key()
    sim.ledger.script(out_refund_no(payout_key), [("permanent", code)])
    result = await gw.refund(ins(txn, payout_key, 100))
    assert result.status is FAILED and result.code == code and result.message


async def test_an_unknown_transaction_does_not_exist(gw: WechatGateway) -> None:
    result = await gw.refund(ins("4200000000000000000000000000", key(), 100))
    assert result.status is FAILED and result.code == "RESOURCE_NOT_EXISTS"


async def test_the_refund_window_is_365_days(sim: WechatSimulator, gw: WechatGateway) -> None:
    old = order(sim, paid_at=time.time() - 366 * 86_400)
    refused = await gw.refund(ins(old, key(), 100))
    assert refused.status is FAILED and refused.code == "INVALID_REQUEST"
    assert "期限" in refused.message
    recent = order(sim, paid_at=time.time() - 364 * 86_400)
    assert (await gw.refund(ins(recent, key(), 100))).status is ACCEPTED


async def test_no_more_than_50_refunds_on_one_payment(
    sim: WechatSimulator, gw: WechatGateway
) -> None:
    txn = order(sim, 10_000)
    for tranche in range(1, 51):
        assert (await gw.refund(ins(txn, key(tranche), 1))).status is ACCEPTED
    refused = await gw.refund(ins(txn, key(51), 1))
    assert refused.status is FAILED and refused.code == "INVALID_REQUEST"
    assert "50" in refused.message
    assert len(sim.ledger.refunds_of(txn)) == 50


async def test_settlement_shows_up_by_polling(sim: WechatSimulator, gw: WechatGateway) -> None:
    txn, payout_key = order(sim), key()
    sim.ledger.script(out_refund_no(payout_key), [("ok", "queries:3")])
    instruction = ins(txn, payout_key, 1_234)
    assert (await gw.refund(instruction)).status is ACCEPTED
    assert (await gw.query(instruction)).status is ACCEPTED
    assert (await gw.query(instruction)).status is ACCEPTED
    settled = await gw.query(instruction)
    assert settled.status is SETTLED and settled.settled_at is not None


@pytest.mark.parametrize("status", ["ABNORMAL", "CLOSED"])
async def test_failures_after_acceptance_come_back_as_abnormal_or_closed(
    sim: WechatSimulator, gw: WechatGateway, receiver: Receiver, status: str
) -> None:
    txn, payout_key = order(sim), key()
    sim.ledger.script(out_refund_no(payout_key), [("fail_later", status)])
    instruction = ins(txn, payout_key, 700)
    default, sim.ledger.settlement = sim.ledger.settlement, "queries:2"
    try:
        assert (await gw.refund(instruction)).status is ACCEPTED
    finally:
        sim.ledger.settlement = default
    assert (await gw.query(instruction)).status is ACCEPTED
    result = await gw.query(instruction)  # the second query brings the failure due
    assert result.status is FAILED and result.code == status and result.provider_ref
    await eventually(lambda: len(hooks_for(receiver, gw, payout_key)) == 1)
    [(_, code)] = hooks_for(receiver, gw, payout_key)
    assert code == status


# ---------------------------------------------------------------------------- notifications
async def test_a_settled_refund_is_notified_encrypted_and_verified(
    sim: WechatSimulator, receiver: Receiver, gw: WechatGateway
) -> None:
    txn, payout_key = order(sim), key()
    accepted = await gw.refund(ins(txn, payout_key, 4_000))
    sim.ledger.settle(out_refund_no(payout_key))
    await eventually(lambda: len(hooks_for(receiver, gw, payout_key)) == 1)
    headers, body = next(
        (h, b) for h, b in receiver.received if gw.verify_webhook(h, b).payout_key == payout_key
    )
    envelope = json.loads(body)
    assert envelope["event_type"] == "REFUND.SUCCESS" and "ciphertext" in envelope["resource"]
    assert payout_key.encode() not in body and out_refund_no(payout_key).encode() not in body
    event = gw.verify_webhook(headers, body)
    assert event.status is SETTLED and event.event_id == envelope["id"]
    assert event.provider_ref == accepted.provider_ref == event.trace_ref


async def test_twice_never_and_out_of_order_deliveries(
    sim: WechatSimulator, receiver: Receiver, gw: WechatGateway
) -> None:
    txn = order(sim)
    twice, never, reordered = key(1), key(2), key(3)
    for payout_key, mode in ((twice, "twice"), (never, "never"), (reordered, "out_of_order")):
        sim.ledger.script_webhooks(out_refund_no(payout_key), [mode])
        await gw.refund(ins(txn, payout_key, 1_000))
        sim.ledger.settle(out_refund_no(payout_key))
    await eventually(lambda: len(hooks_for(receiver, gw, twice)) == 2)
    first, second = hooks_for(receiver, gw, twice)
    assert first == second and first[1] == "SUCCESS"  # same notification id: dedup works
    # A reversal after success: the final word (ABNORMAL) first, the stale SUCCESS after it,
    # under the id of the first SUCCESS, so a receiver that dedups by id ignores it.
    sim.ledger.fail(out_refund_no(reordered), "ABNORMAL")
    await eventually(lambda: len(hooks_for(receiver, gw, reordered)) == 3)
    success, abnormal, stale = hooks_for(receiver, gw, reordered)
    assert (success[1], abnormal[1], stale[1]) == ("SUCCESS", "ABNORMAL", "SUCCESS")
    assert stale[0] == success[0] != abnormal[0]
    assert hooks_for(receiver, gw, never) == []


async def test_an_unacknowledged_notification_is_delivered_again(
    sim: WechatSimulator, receiver: Receiver, gw: WechatGateway
) -> None:
    txn, payout_key = order(sim), key()
    await gw.refund(ins(txn, payout_key, 500))
    refund_no = out_refund_no(payout_key)
    receiver.refuse.add(event_id(refund_no, "SUCCESS"))
    sim.ledger.settle(refund_no)
    await eventually(lambda: len(hooks_for(receiver, gw, payout_key)) == 2)
    stamps = [
        h["wechatpay-timestamp"]
        for h, b in receiver.received
        if gw.verify_webhook(h, b).payout_key == payout_key
    ]
    assert len(stamps) == 2 and not receiver.refuse


async def test_forged_notifications_are_rejected(
    sim: WechatSimulator, receiver: Receiver, gw: WechatGateway
) -> None:
    txn, payout_key = order(sim), key()
    await gw.refund(ins(txn, payout_key, 300))
    sim.ledger.settle(out_refund_no(payout_key))
    await eventually(lambda: len(hooks_for(receiver, gw, payout_key)) == 1)
    headers, body = next(
        (h, b) for h, b in receiver.received if gw.verify_webhook(h, b).payout_key == payout_key
    )
    envelope = json.loads(body)
    # The body changed after signing.
    with pytest.raises(ValueError, match="signature"):
        gw.verify_webhook(headers, body.replace(b"REFUND.SUCCESS", b"REFUND.CLOSED"))
    # Signed by someone else's key under the platform's serial.
    mallory = generate("mallory").private_key
    message = f"{headers['wechatpay-timestamp']}\n{headers['wechatpay-nonce']}\n".encode()
    forged = base64.b64encode(
        mallory.sign(message + body + b"\n", padding.PKCS1v15(), hashes.SHA256())
    ).decode()
    with pytest.raises(ValueError):
        gw.verify_webhook(headers | {"wechatpay-signature": forged}, body)
    # Genuinely signed, but the ciphertext was not made with our APIv3 key.
    envelope["resource"]["ciphertext"] = base64.b64encode(b"\0" * 64).decode()
    rebuilt = json.dumps(envelope).encode()
    with pytest.raises(ValueError, match="unreadable"):
        gw.verify_webhook(sim.signature_headers(rebuilt), rebuilt)
    # An unknown certificate serial, and missing headers.
    with pytest.raises(ValueError):
        gw.verify_webhook(headers | {"wechatpay-serial": "1234ABCD"}, body)
    with pytest.raises(ValueError):
        gw.verify_webhook({}, body)


async def test_a_stale_notification_is_rejected(
    sim: WechatSimulator, receiver: Receiver, config: WechatConfig
) -> None:
    txn, payout_key = order(sim), key()
    fresh = WechatGateway(config)
    later = WechatGateway(config, clock=lambda: time.time() + 301)
    try:
        await fresh.refund(ins(txn, payout_key, 300))
        sim.ledger.settle(out_refund_no(payout_key))
        await eventually(lambda: len(hooks_for(receiver, fresh, payout_key)) == 1)
        headers, body = next(
            (h, b)
            for h, b in receiver.received
            if fresh.verify_webhook(h, b).payout_key == payout_key
        )
        with pytest.raises(ValueError, match="tolerance"):
            later.verify_webhook(headers, body)
        replayed = sim.signature_headers(body, timestamp=int(time.time()) - 400)
        with pytest.raises(ValueError, match="tolerance"):
            fresh.verify_webhook(replayed, body)
    finally:
        await fresh.aclose()
        await later.aclose()


# ---------------------------------------------------------------------------- answers
class Tamper(httpx.AsyncBaseTransport):
    """Passes requests through and edits the answer on its way back."""

    def __init__(self, edit: Callable[[httpx.Response, bytes], tuple[dict[str, str], bytes]]):
        self.inner = httpx.AsyncHTTPTransport()
        self.edit = edit

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        body = await response.aread()
        await response.aclose()
        headers, content = self.edit(response, body)
        return httpx.Response(response.status_code, headers=headers, content=content)


def _headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.lower() != "content-length"}


async def test_tampered_or_unsigned_answers_are_rejected(
    sim: WechatSimulator, config: WechatConfig
) -> None:
    txn = order(sim)

    def promote(response: httpx.Response, body: bytes) -> tuple[dict[str, str], bytes]:
        return _headers(response), body.replace(b'"PROCESSING"', b'"SUCCESS"')

    def unsign(response: httpx.Response, body: bytes) -> tuple[dict[str, str], bytes]:
        kept = {k: v for k, v in _headers(response).items() if k != "wechatpay-signature"}
        return kept, body

    for edit in (promote, unsign):
        gateway = WechatGateway(config, transport=Tamper(edit))
        try:
            with pytest.raises(WechatSignatureError):
                await gateway.refund(ins(txn, key(), 100))
        finally:
            await gateway.aclose()
    impostor = config.model_copy(update={"platform_certificates": [generate("x").certificate_pem]})
    gateway = WechatGateway(impostor)
    try:
        with pytest.raises(GatewayTimeout):
            await gateway.refund(ins(txn, key(), 100))
    finally:
        await gateway.aclose()


# ---------------------------------------------------------------------------- dev stack
async def test_the_dev_simulator_keeps_its_keys_and_takes_any_order(tmp_path: Path) -> None:
    first = dev_simulator(tmp_path, notify_url="http://127.0.0.1:9/hooks/wechat")
    again = dev_simulator(tmp_path, notify_url="http://127.0.0.1:9/hooks/wechat")
    assert first.merchant_keys == again.merchant_keys and first.apiv3_key == again.apiv3_key
    assert len(again.apiv3_key) == 32
    host = SimulatorHost([again])
    host.start()
    gateway = WechatGateway(again.adapter_config(host.base_url("wechat")))
    try:
        instruction = ins("4200000011112222", key(), 4_321, total=8_000)
        assert (await gateway.refund(instruction)).status is ACCEPTED
        assert (await gateway.query(instruction)).status is ACCEPTED
        over = await gateway.refund(ins("4200000011112222", key(), 3_680, total=8_000))
        assert over.status is FAILED and over.code == "INVALID_REQUEST"
    finally:
        await gateway.aclose()
        host.stop()
