"""The Alipay adapter against the Alipay simulator: real HTTP, real RSA2 signatures both ways."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from refundflow.devstack.simulators.alipay import AlipaySimulator, dev_simulator
from refundflow.devstack.simulators.core import SimLedger, WebhookDue
from refundflow.devstack.simulators.host import SimulatorHost
from refundflow.devstack.simulators.keys import generate
from refundflow.domain.orders import PaymentMethod
from refundflow.domain.states import PayoutStatus
from refundflow.gateways.alipay import (
    AlipayBusy,
    AlipayConfig,
    AlipayGateway,
    AlipaySignatureError,
    load_private_key,
    sign,
    sign_content,
    yuan,
)
from refundflow.gateways.base import GatewayError, GatewayTimeout, PayoutInstruction

ACCEPTED, SETTLED = PayoutStatus.ACCEPTED, PayoutStatus.SETTLED
FAILED, NOT_FOUND = PayoutStatus.FAILED_PERMANENT, PayoutStatus.NOT_FOUND
_trades = itertools.count(1)


class Receiver:
    """The merchant's notification endpoint, served by the same host as the simulator."""

    name = "merchant"

    def __init__(self, path: Path) -> None:
        self.ledger = SimLedger(path)  # no refunds of its own: the host's sweeps find nothing
        self.url = ""
        self.received: list[tuple[dict[str, str], bytes]] = []

    def app(self) -> ASGIApp:
        async def notify(request: Request) -> PlainTextResponse:
            self.received.append((dict(request.headers), await request.body()))
            return PlainTextResponse("success")

        return Starlette(routes=[Route("/notify", notify, methods=["POST"])])

    def bind(self, base_url: str) -> None:
        self.url = f"{base_url}/notify"

    def webhook_request(self, due: WebhookDue) -> None:
        return None

    def bodies_for(self, key: str) -> list[bytes]:
        return [b for _, b in self.received if dict(parse_qsl(b.decode())).get("out_biz_no") == key]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AlipaySimulator, Receiver]]:
    root = tmp_path_factory.mktemp("alipay")
    ledger = SimLedger(root / "alipay.db", settlement="never", hold_seconds=1.5)
    sim = AlipaySimulator(ledger, keys_dir=root / "keys")
    receiver = Receiver(root / "merchant.db")
    host = SimulatorHost([sim, receiver], tick=0.05)
    host.start()
    yield sim, receiver
    host.stop()


@pytest.fixture(scope="module")
def sim(world: tuple[AlipaySimulator, Receiver]) -> AlipaySimulator:
    return world[0]


@pytest.fixture(scope="module")
def receiver(world: tuple[AlipaySimulator, Receiver]) -> Receiver:
    return world[1]


@pytest.fixture(scope="module")
def config(sim: AlipaySimulator) -> AlipayConfig:
    return sim.adapter_config(sim.base_url)


@pytest.fixture(scope="module")
async def gw(config: AlipayConfig) -> AsyncIterator[AlipayGateway]:
    gateway = AlipayGateway(config)
    yield gateway
    await gateway.aclose()


def trade(
    sim: AlipaySimulator,
    amount: int = 10_000,
    *,
    paid_at: float | None = None,
    notify_url: str = "",
    closed: bool = False,
) -> str:
    trade_no = f"2026{next(_trades):08d}22001400{uuid.uuid4().int % 10**8:08d}"
    sim.add_trade(trade_no, amount=amount, paid_at=paid_at, notify_url=notify_url, closed=closed)
    return trade_no


def key(tranche: int = 1) -> str:
    return f"rf_{uuid.uuid4().hex}:{tranche}:0"


def ins(trade_no: str, payout_key: str, amount: int, total: int = 10_000) -> PayoutInstruction:
    return PayoutInstruction(
        payout_key=payout_key,
        refund_id=payout_key.split(":")[0],
        merchant_id="shop-1",
        customer_id="cust-1",
        route=PaymentMethod.ALIPAY,
        amount=amount,
        currency="CNY",
        original_txn_id=trade_no,
        original_amount=total,
        reason="商品退货",
    )


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


# ---------------------------------------------------------------------------- wire format
def test_amounts_go_out_as_exact_yuan_text() -> None:
    assert [yuan(1), yuan(10), yuan(1234), yuan(100_000_000_01)] == [
        "0.01",
        "0.10",
        "12.34",
        "100000000.01",
    ]


def test_the_signed_string_is_sorted_and_skips_sign_and_empty_values() -> None:
    params = {"method": "m", "app_id": "1", "sign": "x", "notify_url": "", "biz_content": "{}"}
    assert sign_content(params) == "app_id=1&biz_content={}&method=m"


async def test_a_hand_made_form_only_request_is_accepted(sim: AlipaySimulator) -> None:
    """Everything in the form body (no query string) is a valid way to call the gateway."""
    trade_no, payout_key = trade(sim), key()
    config = sim.adapter_config(sim.base_url)
    params = {
        "app_id": config.app_id,
        "method": "alipay.trade.refund",
        "format": "JSON",
        "charset": "utf-8",
        "sign_type": "RSA2",
        "timestamp": "2026-01-02 03:04:05",
        "version": "1.0",
        "biz_content": f'{{"trade_no":"{trade_no}","refund_amount":"0.50",'
        f'"out_request_no":"{payout_key}"}}',
    }
    private_key = load_private_key(config.app_private_key.get_secret_value())
    params["sign"] = sign(private_key, sign_content(params))
    async with httpx.AsyncClient() as client:
        response = await client.post(
            config.gateway_url,
            content=urlencode(params),
            headers={"content-type": "application/x-www-form-urlencoded;charset=utf-8"},
        )
    node = response.json()["alipay_trade_refund_response"]
    assert node["code"] == "10000" and node["fund_change"] == "N"
    assert node["refund_fee"] == "0.50" and node["trade_no"] == trade_no
    assert sim.ledger.count(payout_key) == 1


async def test_a_request_signed_with_another_key_is_refused_at_the_gateway(
    sim: AlipaySimulator, config: AlipayConfig
) -> None:
    stranger = config.model_copy(update={"app_private_key": SecretStr(generate("x").private_pem)})
    gateway = AlipayGateway(stranger)
    try:
        with pytest.raises(AlipayBusy) as caught:
            await gateway.refund(ins(trade(sim), payout_key := key(), 100))
    finally:
        await gateway.aclose()
    assert caught.value.code == "isv.invalid-signature"
    assert sim.ledger.count(payout_key) == 0
    # Unsigned, a gateway error still reads as "try again later", never as an outcome.
    unsigned = AlipayGateway(stranger, transport=Tamper(_strip_sign))
    try:
        with pytest.raises(AlipayBusy):
            await unsigned.refund(ins(trade(sim), key(), 100))
    finally:
        await unsigned.aclose()


# ---------------------------------------------------------------------------- refunds
async def test_full_refund_moves_money_at_once(sim: AlipaySimulator, gw: AlipayGateway) -> None:
    trade_no, payout_key = trade(sim), key()
    sim.ledger.script(payout_key, [("ok", "seconds:0")])
    result = await gw.refund(ins(trade_no, payout_key, 10_000))
    assert result.status is SETTLED and result.provider_ref == trade_no
    assert result.settled_at is not None and result.settled_at.utcoffset() is not None
    [stored] = sim.ledger.refunds(payout_key)
    assert (stored.amount, stored.payment_id, stored.status) == (10_000, trade_no, "SUCCESS")
    queried = await gw.query(ins(trade_no, payout_key, 10_000))
    assert queried.status is SETTLED and queried.code == "REFUND_SUCCESS"


async def test_partial_refunds_up_to_the_total_then_one_more_is_refused(
    sim: AlipaySimulator, gw: AlipayGateway
) -> None:
    trade_no = trade(sim, 10_000)
    parts = [(key(1), 3_333), (key(2), 3_333), (key(3), 3_334)]
    for payout_key, amount in parts:
        assert (await gw.refund(ins(trade_no, payout_key, amount))).status is ACCEPTED
    over = await gw.refund(ins(trade_no, extra := key(4), 1))
    assert over.status is FAILED and over.code == "ACQ.REASON_TRADE_REFUND_FEE_ERR"
    assert sum(r.amount for r in sim.ledger.refunds_of(trade_no)) == 10_000
    assert sim.ledger.count(extra) == 0


async def test_a_repeated_request_number_refunds_once(
    sim: AlipaySimulator, gw: AlipayGateway
) -> None:
    trade_no, payout_key = trade(sim), key()
    first = await gw.refund(ins(trade_no, payout_key, 2_500))
    again = await gw.refund(ins(trade_no, payout_key, 2_500))
    assert first.status is again.status is ACCEPTED
    assert sim.ledger.count(payout_key) == 1
    other = await gw.refund(ins(trade_no, payout_key, 2_600))
    assert other.status is FAILED and other.code == "ACQ.DISCORDANT_REPEAT_REQUEST"
    assert sim.ledger.count(payout_key) == 1


async def test_timeout_after_commit_then_the_query_finds_exactly_one_refund(
    sim: AlipaySimulator, config: AlipayConfig
) -> None:
    trade_no, payout_key = trade(sim), key()
    sim.ledger.script(payout_key, ["timeout_after_commit"])
    impatient = AlipayGateway(config.model_copy(update={"timeout_s": 0.3}))
    try:
        with pytest.raises(GatewayTimeout):
            await impatient.refund(ins(trade_no, payout_key, 700))
        found = await impatient.query(ins(trade_no, payout_key, 700))
        assert found.status is ACCEPTED and found.provider_ref == trade_no
        assert (await impatient.refund(ins(trade_no, payout_key, 700))).status is ACCEPTED
    finally:
        await impatient.aclose()
    assert sim.ledger.count(payout_key) == 1


async def test_transient_errors_are_retryable_and_leave_nothing_behind(
    sim: AlipaySimulator, gw: AlipayGateway
) -> None:
    trade_no, payout_key = trade(sim), key()
    sim.ledger.script(payout_key, ["transient", ("permanent", "ACQ.SELLER_BALANCE_NOT_ENOUGH")])
    with pytest.raises(GatewayError) as first:
        await gw.refund(ins(trade_no, payout_key, 900))
    assert isinstance(first.value, AlipayBusy) and first.value.code == "ACQ.SYSTEM_ERROR"
    assert (await gw.query(ins(trade_no, payout_key, 900))).status is NOT_FOUND
    with pytest.raises(AlipayBusy) as second:
        await gw.refund(ins(trade_no, payout_key, 900))
    assert second.value.code == "ACQ.SELLER_BALANCE_NOT_ENOUGH"
    assert (await gw.refund(ins(trade_no, payout_key, 900))).status is ACCEPTED
    assert sim.ledger.count(payout_key) == 1


@pytest.mark.parametrize(
    ("setup", "code"),
    [
        ("scripted", "ACQ.TRADE_NOT_ALLOW_REFUND"),
        ("unknown_trade", "ACQ.TRADE_NOT_EXIST"),
        ("closed", "ACQ.TRADE_HAS_CLOSE"),
        ("window_over", "ACQ.TRADE_HAS_FINISHED"),
    ],
)
async def test_permanent_refusals_carry_alipays_code(
    sim: AlipaySimulator, gw: AlipayGateway, setup: str, code: str
) -> None:
    payout_key = key()
    if setup == "unknown_trade":
        trade_no = "2026000000000000000000000000"
    elif setup == "closed":
        trade_no = trade(sim, closed=True)
    elif setup == "window_over":
        trade_no = trade(sim, paid_at=time.time() - 367 * 86_400)
    else:
        trade_no = trade(sim)
        sim.ledger.script(payout_key, [("permanent", code)])
    result = await gw.refund(ins(trade_no, payout_key, 100))
    assert result.status is FAILED and result.code == code and result.message
    assert sim.ledger.count(payout_key) == 0


async def test_a_refund_inside_the_window_is_accepted(
    sim: AlipaySimulator, gw: AlipayGateway
) -> None:
    trade_no = trade(sim, paid_at=time.time() - 330 * 86_400)
    assert (await gw.refund(ins(trade_no, key(), 100))).status is ACCEPTED


async def test_settlement_shows_up_by_polling(sim: AlipaySimulator, gw: AlipayGateway) -> None:
    trade_no, payout_key = trade(sim), key()
    sim.ledger.script(payout_key, [("ok", "queries:3")])
    instruction = ins(trade_no, payout_key, 1_234)
    assert (await gw.refund(instruction)).status is ACCEPTED
    assert (await gw.query(instruction)).status is ACCEPTED
    assert (await gw.query(instruction)).status is ACCEPTED
    settled = await gw.query(instruction)
    assert settled.status is SETTLED and settled.settled_at is not None


async def test_a_refund_failing_later_is_not_shown_and_resending_returns_the_failure(
    sim: AlipaySimulator, gw: AlipayGateway
) -> None:
    trade_no, payout_key = trade(sim), key()
    sim.ledger.script(payout_key, [("fail_later", "ACQ.TRADE_NOT_ALLOW_REFUND")])
    instruction = ins(trade_no, payout_key, 500)
    default, sim.ledger.settlement = sim.ledger.settlement, "queries:2"
    try:
        assert (await gw.refund(instruction)).status is ACCEPTED
    finally:
        sim.ledger.settlement = default
    assert (await gw.query(instruction)).status is ACCEPTED
    assert (await gw.query(instruction)).status is NOT_FOUND  # failed on this query
    resent = await gw.refund(instruction)
    assert resent.status is FAILED and resent.code == "ACQ.TRADE_NOT_ALLOW_REFUND"
    assert sim.ledger.count(payout_key) == 1


async def test_query_of_an_unknown_refund_number_is_not_found(
    sim: AlipaySimulator, gw: AlipayGateway
) -> None:
    assert (await gw.query(ins(trade(sim), key(), 100))).status is NOT_FOUND
    assert (await gw.query(ins("2026999", key(), 100))).status is NOT_FOUND


# ---------------------------------------------------------------------------- signatures
class Tamper(httpx.AsyncBaseTransport):
    """Passes requests through and edits the answer on its way back."""

    def __init__(self, edit: Callable[[bytes], bytes]) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.edit = edit

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        body = await response.aread()
        await response.aclose()
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
        return httpx.Response(response.status_code, headers=headers, content=self.edit(body))

    async def aclose(self) -> None:
        await self.inner.aclose()


def _strip_sign(body: bytes) -> bytes:
    return body[: body.rindex(b',"sign"')] + b"}"


async def test_a_tampered_answer_is_rejected(sim: AlipaySimulator, config: AlipayConfig) -> None:
    trade_no, payout_key = trade(sim), key()
    forged = AlipayGateway(
        config, transport=Tamper(lambda b: b.replace(b'"fund_change":"N"', b'"fund_change":"Y"'))
    )
    try:
        with pytest.raises(AlipaySignatureError):
            await forged.refund(ins(trade_no, payout_key, 100))
    finally:
        await forged.aclose()
    unsigned = AlipayGateway(config, transport=Tamper(lambda b: b[: b.rindex(b',"sign"')] + b"}"))
    try:
        with pytest.raises(AlipaySignatureError):
            await unsigned.query(ins(trade_no, payout_key, 100))
    finally:
        await unsigned.aclose()


async def test_an_answer_signed_by_someone_else_is_rejected(
    sim: AlipaySimulator, config: AlipayConfig
) -> None:
    other = config.model_copy(update={"alipay_public_key": generate("fake").public_pem})
    gateway = AlipayGateway(other)
    try:
        with pytest.raises(GatewayTimeout):
            await gateway.refund(ins(trade(sim), key(), 100))
    finally:
        await gateway.aclose()


# ---------------------------------------------------------------------------- notifications
async def test_a_settled_refund_is_notified_and_verified_into_an_event(
    sim: AlipaySimulator, receiver: Receiver, gw: AlipayGateway
) -> None:
    trade_no = trade(sim, notify_url=receiver.url)
    payout_key = key()
    await gw.refund(ins(trade_no, payout_key, 4_000))
    sim.ledger.settle(payout_key)
    await eventually(lambda: len(receiver.bodies_for(payout_key)) == 1)
    [(headers, body)] = [
        (h, b) for h, b in receiver.received if b in receiver.bodies_for(payout_key)
    ]
    event = gw.verify_webhook(headers, body)
    assert event.payout_key == payout_key and event.status is SETTLED
    assert event.provider_ref == trade_no and event.event_id
    fields = dict(parse_qsl(body.decode()))
    assert fields["refund_fee"] == "40.00" and fields["trade_status"] == "TRADE_SUCCESS"


async def test_twice_means_the_same_notification_twice_and_never_means_none(
    sim: AlipaySimulator, receiver: Receiver, gw: AlipayGateway
) -> None:
    trade_no = trade(sim, notify_url=receiver.url)
    twice, never = key(1), key(2)
    sim.ledger.script_webhooks(twice, ["twice"])
    sim.ledger.script_webhooks(never, ["never"])
    for payout_key in (twice, never):
        await gw.refund(ins(trade_no, payout_key, 5_000))
        sim.ledger.settle(payout_key)
    await eventually(lambda: len(receiver.bodies_for(twice)) == 2)
    events = [gw.verify_webhook({}, b) for b in receiver.bodies_for(twice)]
    assert events[0].event_id == events[1].event_id and events[0].payout_key == twice
    await asyncio.sleep(0.5)
    assert receiver.bodies_for(never) == []
    assert dict(parse_qsl(receiver.bodies_for(twice)[0].decode()))["trade_status"] in (
        "TRADE_SUCCESS",
        "TRADE_CLOSED",
    )


async def test_a_failed_or_stale_refund_sends_no_notification(
    sim: AlipaySimulator, receiver: Receiver, gw: AlipayGateway
) -> None:
    trade_no = trade(sim, notify_url=receiver.url)
    failing, reordered = key(1), key(2)
    sim.ledger.script_webhooks(reordered, ["out_of_order"])
    for payout_key in (failing, reordered):
        await gw.refund(ins(trade_no, payout_key, 1_000))
    sim.ledger.fail(failing, "ACQ.TRADE_NOT_ALLOW_REFUND")
    sim.ledger.settle(reordered)
    await eventually(lambda: len(receiver.bodies_for(reordered)) == 1)
    await asyncio.sleep(0.3)
    # The stale PROCESSING snapshot has no Alipay notification; neither has a failure.
    assert len(receiver.bodies_for(reordered)) == 1
    assert receiver.bodies_for(failing) == []


async def test_forged_notifications_are_rejected(
    sim: AlipaySimulator, receiver: Receiver, gw: AlipayGateway
) -> None:
    trade_no = trade(sim, notify_url=receiver.url)
    payout_key = key()
    await gw.refund(ins(trade_no, payout_key, 100))
    sim.ledger.settle(payout_key)
    await eventually(lambda: len(receiver.bodies_for(payout_key)) == 1)
    [body] = receiver.bodies_for(payout_key)
    fields = dict(parse_qsl(body.decode()))
    with pytest.raises(ValueError):
        gw.verify_webhook({}, urlencode(fields | {"out_biz_no": key()}).encode())
    with pytest.raises(ValueError):
        gw.verify_webhook({}, urlencode({k: v for k, v in fields.items() if k != "sign"}).encode())
    stranger = generate("mallory").private_key
    resigned = {k: v for k, v in fields.items() if k not in ("sign", "sign_type")}
    forged = fields | {"sign": sign(stranger, sign_content(resigned))}
    with pytest.raises(ValueError):
        gw.verify_webhook({}, urlencode(forged).encode())


# ---------------------------------------------------------------------------- dev stack
async def test_the_dev_simulator_keeps_its_keys_and_takes_any_trade(tmp_path: Path) -> None:
    first = dev_simulator(tmp_path, notify_url="http://127.0.0.1:9/hooks/alipay")
    again = dev_simulator(tmp_path, notify_url="http://127.0.0.1:9/hooks/alipay")
    assert first.app_keys == again.app_keys and first.alipay_keys == again.alipay_keys
    assert (tmp_path / "simulators" / "alipay" / "keys" / "alipay_platform.crt.pem").exists()
    host = SimulatorHost([again])
    host.start()
    gateway = AlipayGateway(again.adapter_config(host.base_url("alipay")))
    try:
        instruction = ins("2026000011112222", key(), 4_321)
        assert (await gateway.refund(instruction)).status is ACCEPTED
        assert (await gateway.query(instruction)).status is ACCEPTED
    finally:
        await gateway.aclose()
        host.stop()


def _signed(sim: AlipaySimulator, params: dict[str, str]) -> bytes:
    """A notification with these fields, correctly signed by Alipay."""
    signed = {k: v for k, v in params.items() if k not in ("sign", "sign_type")}
    return urlencode(
        params | {"sign": sign(sim.alipay_keys.private_key, sign_content(signed))}
    ).encode()


async def test_a_notification_outside_the_clock_window_is_refused(
    sim: AlipaySimulator, gw: AlipayGateway
) -> None:
    payout_key = key()
    await gw.refund(ins(trade(sim), payout_key, 100))
    refund = sim.ledger.settle(payout_key)
    now = time.time()

    def sent_at(at: float) -> bytes:
        return sim.event_request(refund, event_id="notify-1", at=at)[2]

    assert gw.verify_webhook({}, sent_at(now - 60)).payout_key == payout_key
    for at in (now - 3600, now + 3600):  # a replayed old notice; a clock far ahead
        with pytest.raises(ValueError, match="tolerance"):
            gw.verify_webhook({}, sent_at(at))
    fields = dict(parse_qsl(sent_at(now).decode()))
    undated = {k: v for k, v in fields.items() if k != "notify_time"}
    with pytest.raises(ValueError, match="notify_time"):
        gw.verify_webhook({}, _signed(sim, undated))
