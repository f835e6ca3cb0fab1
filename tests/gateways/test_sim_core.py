"""The simulator ledger and host that every provider simulator stands on."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from refundflow.devstack.simulators.core import (
    FAILED,
    PROCESSING,
    SUCCESS,
    RefundOutcome,
    SimLedger,
    SimPayment,
    SimRefund,
    WebhookDue,
)
from refundflow.devstack.simulators.gates import AFTER_COMMIT, BEFORE_COMMIT
from refundflow.devstack.simulators.host import SimulatorHost


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _no_more_than_paid(payment: SimPayment | None, refunds: list[SimRefund]) -> str | None:
    if payment is None:
        return "NO_SUCH_PAYMENT"
    return None


def _refs(refund_no: str) -> tuple[str, str]:
    return f"ref-{refund_no}", f"trace-{refund_no}"


def _create(ledger: SimLedger, no: str, amount: int = 100, payment: str = "p1") -> RefundOutcome:
    return ledger.create_refund(
        refund_no=no,
        payment_id=payment,
        amount=amount,
        currency="CNY",
        check=_no_more_than_paid,
        make_refs=_refs,
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ledger(tmp_path: Path, clock: Clock) -> SimLedger:
    book = SimLedger(tmp_path / "sim.db", clock=clock, settlement="queries:2")
    book.add_payment("p1", amount=1000, currency="CNY")
    return book


def test_a_refund_number_pays_once_and_settles_by_its_rule(ledger: SimLedger) -> None:
    first = _create(ledger, "k:1:1")
    again = _create(ledger, "k:1:1", amount=999)
    assert first.kind == "created" and first.refund and first.refund.status == PROCESSING
    assert again.kind == "existing" and again.refund == first.refund
    assert ledger.query("k:1:1").status == PROCESSING  # type: ignore[union-attr]
    assert ledger.query("k:1:1").status == SUCCESS  # type: ignore[union-attr]
    assert ledger.query("nope") is None
    assert ledger.count("k:") == 1


def test_scripts_speak_in_order_most_specific_prefix_first(ledger: SimLedger) -> None:
    ledger.script("k", ["transient", ("permanent", "CLOSED")])
    ledger.script("k:2", [("timeout_after_commit", "never")])
    assert _create(ledger, "k:1:1").kind == "transient"
    held = _create(ledger, "k:2:1")
    assert held.kind == "created" and held.hold
    refused = _create(ledger, "k:1:1")
    assert (refused.kind, refused.code) == ("refused", "CLOSED")
    assert _create(ledger, "k:1:1").kind == "created"
    assert ledger.count() == 2
    with pytest.raises(ValueError):
        ledger.script("k", [("permanent", "")])


def test_a_declined_refund_is_kept_failed_and_found_again(ledger: SimLedger) -> None:
    ledger.script("k:1", [("declined", "CARD_CLOSED")])
    declined = _create(ledger, "k:1:1")
    assert declined.kind == "created" and declined.refund is not None
    refund = declined.refund
    assert (refund.status, refund.code, refund.trace_ref) == (FAILED, "CARD_CLOSED", "")
    assert _create(ledger, "k:1:1").refund == refund  # the same failed refund, not a new one
    assert [ledger.query("k:1:1").status for _ in range(3)] == [FAILED] * 3  # type: ignore[union-attr]
    assert ledger.due_webhooks() == []  # no transition, nothing to notify
    with pytest.raises(ValueError, match="already failed"):
        ledger.settle("k:1:1")
    with pytest.raises(ValueError):
        ledger.script("k", [("declined", "")])


def test_queries_are_counted_on_the_refund(ledger: SimLedger) -> None:
    _create(ledger, "k:1:1")
    for _ in range(3):
        ledger.query("k:1:1")
    [refund] = ledger.refunds("k:")
    assert refund.queries == 3


def test_the_check_refuses_before_anything_is_stored(ledger: SimLedger) -> None:
    refused = _create(ledger, "k:1:1", payment="unknown")
    assert (refused.kind, refused.code) == ("refused", "NO_SUCH_PAYMENT")
    assert ledger.count() == 0


def test_auto_payments_take_any_payment(tmp_path: Path) -> None:
    book = SimLedger(tmp_path / "auto.db", auto_payments=True)
    assert _create(book, "k:1:1", payment="whatever").kind == "created"
    assert book.payment("whatever") is not None


def test_fail_later_and_time_based_settlement_by_sweep(tmp_path: Path, clock: Clock) -> None:
    book = SimLedger(tmp_path / "t.db", clock=clock, settlement="seconds:5")
    book.add_payment("p1", amount=1000, currency="CNY")
    book.script("bad", [("fail_later", "ABNORMAL")])
    _create(book, "bad:1:1")
    _create(book, "good:1:1")
    assert book.sweep() == []
    clock.now += 5
    changed = {r.refund_no: (r.status, r.code) for r in book.sweep()}
    assert changed == {"bad:1:1": (FAILED, "ABNORMAL"), "good:1:1": (SUCCESS, "")}
    reversed_ = book.fail("good:1:1", "REVERSED")
    assert (reversed_.status, reversed_.code, reversed_.settled_at) == (FAILED, "REVERSED", None)
    with pytest.raises(ValueError):
        book.fail("good:1:1", "AGAIN")


def test_webhook_modes(ledger: SimLedger, clock: Clock) -> None:
    ledger.script_webhooks("twice", ["twice"])
    ledger.script_webhooks("never", ["never"])
    ledger.script_webhooks("late", [("late", "30")])
    ledger.script_webhooks("ooo", ["out_of_order"])
    for no in ("twice", "never", "late", "ooo", "once"):
        _create(ledger, no)
        ledger.settle(no)
    due = ledger.due_webhooks()
    assert [d.refund.refund_no for d in due].count("twice") == 2
    assert len({d.event_id for d in due if d.refund.refund_no == "twice"}) == 1
    assert not [d for d in due if d.refund.refund_no in ("never", "late")]
    assert [d.refund.status for d in due if d.refund.refund_no == "once"] == [SUCCESS]
    assert ledger.due_webhooks() == []  # claimed once
    for delivered in due:
        ledger.webhook_delivered(delivered)
    clock.now += 1
    stale = ledger.due_webhooks()
    assert [(d.refund.refund_no, d.refund.status) for d in stale] == [("ooo", PROCESSING)]
    ledger.webhook_delivered(stale[0])
    clock.now += 30
    assert [d.refund.refund_no for d in ledger.due_webhooks()] == ["late"]


def test_an_unacknowledged_webhook_comes_again_with_backoff(
    ledger: SimLedger, clock: Clock
) -> None:
    _create(ledger, "k")
    ledger.settle("k")
    (due,) = ledger.due_webhooks()
    ledger.webhook_failed(due)
    assert ledger.due_webhooks() == []
    clock.now += 2
    (again,) = ledger.due_webhooks()
    assert (again.event_id, again.attempt) == (due.event_id, 2)


def test_a_webhook_whose_delivery_was_cut_short_comes_again(
    ledger: SimLedger, clock: Clock
) -> None:
    """At least once: a host that dies between taking a webhook and the merchant's answer
    (killed, or the machine lost) has acknowledged nothing, so the webhook is still owed."""
    _create(ledger, "k")
    ledger.settle("k")
    (claimed,) = ledger.due_webhooks()
    assert ledger.due_webhooks() == []  # one delivery at a time
    clock.now += 60  # the host died holding it
    (again,) = ledger.due_webhooks()
    assert (again.event_id, again.refund, again.attempt) == (claimed.event_id, claimed.refund, 2)
    ledger.webhook_delivered(again)
    clock.now += 3600
    assert ledger.due_webhooks() == []


async def test_a_gate_holds_a_request_where_the_test_asked_and_says_so(tmp_path: Path) -> None:
    book = SimLedger(tmp_path / "gated.db")
    book.add_payment("p1", amount=500, currency="CNY")

    async def arrival(refund_no: str) -> None:
        while not book.gates.arrived(refund_no):
            await asyncio.sleep(0.02)

    book.gates.arm("lost", BEFORE_COMMIT)
    held = asyncio.create_task(asyncio.to_thread(_create, book, "lost"))
    await asyncio.wait_for(arrival("lost"), timeout=10)
    assert book.count("lost") == 0  # arrived, nothing stored yet
    book.gates.release("lost", drop=True)
    assert (await held).kind == "transient" and book.count("lost") == 0
    assert _create(book, "lost").kind == "created"  # a gate catches one request

    book.gates.arm("stored", AFTER_COMMIT)
    held = asyncio.create_task(asyncio.to_thread(_create, book, "stored"))
    await asyncio.wait_for(arrival("stored"), timeout=10)
    assert book.count("stored") == 1  # stored, the answer not given yet
    book.gates.release("stored")
    assert (await held).kind == "created"


class EchoSim:
    """A toy protocol: POST /refunds {"no", "payment", "amount"}; webhooks are plain JSON."""

    name = "echo"

    def __init__(self, ledger: SimLedger, notify_url: str) -> None:
        self.ledger = ledger
        self.notify_url = notify_url
        self.bound = ""

    def app(self) -> ASGIApp:
        async def create(request: Request) -> Response:
            body = await request.json()
            outcome = _create(self.ledger, body["no"], body["amount"], body["payment"])
            if outcome.hold:
                await self.ledger.hold()
            assert outcome.refund is not None
            return JSONResponse({"status": outcome.refund.status})

        return Starlette(routes=[Route("/refunds", create, methods=["POST"])])

    def bind(self, base_url: str) -> None:
        self.bound = base_url

    def webhook_request(self, due: WebhookDue) -> tuple[str, dict[str, str], bytes]:
        body = json.dumps({"no": due.refund.refund_no, "status": due.refund.status})
        return self.notify_url, {"content-type": "application/json"}, body.encode()


class Receiver:
    """A merchant endpoint that fails its first call."""

    name = "merchant"

    def __init__(self, tmp_path: Path) -> None:
        self.ledger = SimLedger(tmp_path / "unused.db")
        self.received: list[dict[str, str]] = []
        self.calls = 0

    def app(self) -> ASGIApp:
        async def hook(request: Request) -> Response:
            self.calls += 1
            if self.calls == 1:
                return Response(status_code=500)
            self.received.append(await request.json())
            return Response(status_code=204)

        return Starlette(routes=[Route("/hook", hook, methods=["POST"])])

    def bind(self, base_url: str) -> None:
        pass

    def webhook_request(self, due: WebhookDue) -> None:
        return None


async def test_the_host_serves_settles_and_redelivers(tmp_path: Path) -> None:
    receiver = Receiver(tmp_path)
    sink = SimulatorHost([receiver], tick=0.05)
    sink.start()
    book = SimLedger(tmp_path / "echo.db", settlement="seconds:0.2", hold_seconds=5)
    book.add_payment("p1", amount=500, currency="CNY")
    sim = EchoSim(book, f"{sink.base_url('merchant')}/hook")
    host = SimulatorHost([sim], tick=0.05)
    host.start()
    try:
        assert sim.bound == host.base_url("echo") and host.port != 0
        async with httpx.AsyncClient(base_url=sim.bound) as client:
            made = await client.post("/refunds", json={"no": "a", "payment": "p1", "amount": 5})
            assert made.json() == {"status": PROCESSING}
            book.script("b", ["timeout_after_commit"])
            with pytest.raises(httpx.ReadTimeout):
                await client.post(
                    "/refunds", json={"no": "b", "payment": "p1", "amount": 5}, timeout=0.3
                )
        assert book.count() == 2  # committed although the caller timed out
        deadline = time.monotonic() + 10
        while len(receiver.received) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        # The first delivery was refused with a 500 and came again.
        assert sorted(r["no"] for r in receiver.received) == ["a", "b"]
        assert receiver.calls == 3
    finally:
        host.stop()
        sink.stop()
