"""Every provider's webhooks at the real HTTP API, with every provider configured at once:
whatever is forged, unsigned, stale, from the future, about another provider's payout or about a
payout we never made is refused (4xx), and a replay is a ``duplicate``. Neither changes the
refund's run or the database."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest
from sqlmodel import func, select
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from refundflow.db.engine import session_scope
from refundflow.db.models import AuditEventRow, PayoutRow, RefundRow, WebhookEventRow
from refundflow.devstack.ports import free_port
from refundflow.devstack.simulators.core import SUCCESS, SimLedger, SimRefund
from refundflow.devstack.simulators.host import SimulatorHost
from refundflow.domain.orders import PaymentMethod
from refundflow.domain.states import PayoutStatus, RefundState, RefundStatus
from refundflow.gateways.base import Gateway
from refundflow.gateways.registry import build_provider
from refundflow.workflows.refund import RefundWorkflow
from tests.providers.conftest import PROVIDERS, Provider, serve_api
from tests.workflows.conftest import Stack, open_stack, payment

NAMES = sorted(PROVIDERS)
HOUR = 3600.0
Request = tuple[dict[str, str], bytes]
# What each refusal answers: the signature scheme refuses, or our records do.
REFUSED = {
    "forged": (401, "invalid_signature"),
    "unsigned": (401, "invalid_signature"),
    "stale": (401, "invalid_signature"),
    "future_dated": (401, "invalid_signature"),
    "other_providers_payout": (422, "webhook_mismatch"),
    "unknown_refund": (422, "webhook_mismatch"),
    "unknown_tranche": (422, "webhook_mismatch"),
}


RunHandle = WorkflowHandle[RefundWorkflow, RefundState]


@dataclass
class Paid:
    """A refund paid through one provider, accepted there and not settled."""

    handle: RunHandle
    key: str
    refund: SimRefund
    """The provider's record of it."""


@dataclass
class World:
    stack: Stack
    http: httpx.AsyncClient
    sims: dict[str, Any]
    strangers: dict[str, Any]
    """The same protocol, signed with keys that are not the provider's."""
    targets: dict[str, Paid]
    replays: dict[str, Paid]

    def event(
        self, name: str, refund: SimRefund, *, at: float | None = None, sim: Any = None
    ) -> Request:
        """The provider's own notification that ``refund`` settled, sent at ``at``."""
        settled = dataclasses.replace(refund, status=SUCCESS, settled_at=time.time())
        _, headers, body = (sim or self.sims[name]).event_request(
            settled, event_id=f"evt-{uuid.uuid4().hex[:12]}", at=at
        )
        return headers, body

    def naming(self, name: str, refund: SimRefund, key: str) -> SimRefund:
        """``refund`` as the provider's record of a refund under our payout ``key``."""
        spec = PROVIDERS[name]
        metadata = refund.extra.get("metadata", {}) | {"payout_key": key}
        extra = refund.extra | {"metadata": metadata, "custom_id": key, "invoice_id": key}
        return dataclasses.replace(refund, refund_no=spec.refund_no(key), extra=extra)

    async def post(self, name: str, request: Request) -> httpx.Response:
        headers, body = request
        return await self.http.post(f"/v1/webhooks/{name}", headers=headers, content=body)

    async def snapshot(self) -> tuple[Any, ...]:
        """Every refund's run and rows, and every webhook on record."""
        views = [
            (await paid.handle.query(RefundWorkflow.view)).model_dump(mode="json")
            for paid in [*self.targets.values(), *self.replays.values()]
        ]
        with session_scope(self.stack.engine, readonly=True) as s:
            refunds = [(r.refund_id, r.status) for r in s.exec(select(RefundRow)).all()]
            payouts = [(p.payout_key, p.status, p.provider_ref) for p in s.exec(select(PayoutRow))]
            events = s.exec(select(func.count()).select_from(WebhookEventRow)).one()
            audit = s.exec(select(func.count()).select_from(AuditEventRow)).one()
        return views, sorted(refunds), sorted(payouts), events, audit


def bad_webhook(world: World, name: str, case: str) -> Request:
    target = world.targets[name]
    now = time.time()
    if case == "forged":
        return world.event(name, target.refund, sim=world.strangers[name])
    if case == "unsigned":
        return _unsigned(name, world.event(name, target.refund))
    if case == "stale":
        return world.event(name, target.refund, at=now - HOUR)
    if case == "future_dated":
        return world.event(name, target.refund, at=now + HOUR)
    if case == "other_providers_payout":
        other = NAMES[(NAMES.index(name) + 1) % len(NAMES)]
        return world.event(name, world.naming(name, target.refund, world.targets[other].key))
    if case == "unknown_refund":
        return world.event(name, world.naming(name, target.refund, "rf_nobody00000000000:1:1"))
    assert case == "unknown_tranche"
    refund_id = target.key.rsplit(":", 2)[0]
    return world.event(name, world.naming(name, target.refund, f"{refund_id}:7:1"))


def _unsigned(name: str, request: Request) -> Request:
    headers, body = request
    if name == "alipay":  # signed in the form itself
        fields = {k: v for k, v in parse_qsl(body.decode()) if k not in ("sign", "sign_type")}
        return headers, urlencode(fields).encode()
    return {"Content-Type": headers.get("Content-Type", "application/json")}, body


@pytest.mark.parametrize("case", sorted(REFUSED))
@pytest.mark.parametrize("name", NAMES)
async def test_a_bad_webhook_is_refused_and_changes_nothing(
    world: World, name: str, case: str
) -> None:
    before = await world.snapshot()
    response = await world.post(name, bad_webhook(world, name, case))
    status, code = REFUSED[case]
    assert response.status_code == status, response.text
    assert response.json()["code"] == code
    assert await world.snapshot() == before


@pytest.mark.parametrize("name", NAMES)
async def test_a_replayed_webhook_is_a_duplicate_and_changes_nothing_more(
    world: World, name: str
) -> None:
    paid = world.replays[name]
    settled = world.event(name, paid.refund)
    first = await world.post(name, settled)
    assert (first.status_code, first.json()["status"]) == (202, "accepted"), first.text
    await _until(lambda: _settled(world, paid.key))
    state = await paid.handle.query(RefundWorkflow.view)
    assert [p.status for p in state.payouts] == [PayoutStatus.SETTLED]
    after_first = await world.snapshot()
    again = await world.post(name, settled)
    assert (again.status_code, again.json()["status"]) == (202, "duplicate"), again.text
    assert await world.snapshot() == after_first
    kinds = world.stack.audit_kinds(paid.key.rsplit(":", 2)[0])
    assert kinds.count("payout_settled") == 1


async def test_a_webhook_waiting_for_the_database_keeps_the_api_answering(world: World) -> None:
    """On SQLite one writer at a time: a webhook that has to wait for the write lock (another
    request, a worker's step) waits off the event loop, and every other request is answered
    meanwhile, including the one that would release the lock."""
    paid = await _paid(world, "wechat", "busy")
    settled = world.event("wechat", paid.refund)
    holder = world.stack.engine.raw_connection()
    try:
        holder.cursor().execute("BEGIN IMMEDIATE")  # the database's write lock, held
        webhook = asyncio.create_task(world.post("wechat", settled))
        while not (webhook.done() or await _signalled(paid)):
            await asyncio.sleep(0.05)
        health = await world.http.get("/healthz")
        assert health.status_code == 200
        assert not webhook.done(), webhook.result().text  # still waiting for the lock
    finally:
        holder.rollback()
        holder.close()
    response = await webhook
    assert (response.status_code, response.json()["status"]) == (202, "accepted"), response.text


async def _signalled(paid: Paid) -> bool:
    """The run has the event: the webhook's last step, recording it, is next."""
    history = await paid.handle.fetch_history()
    return any(e.HasField("workflow_execution_signaled_event_attributes") for e in history.events)


# ---------------------------------------------------------------------------- the world
@pytest.fixture(scope="module")
async def world(
    env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[World]:
    root = tmp_path_factory.mktemp("webhooks")
    port = free_port()
    sims: dict[str, Any] = {}
    strangers: dict[str, Any] = {}
    for name in NAMES:
        spec = PROVIDERS[name]
        # Never settles by itself: only a webhook the test sends can settle a refund.
        ledger = SimLedger(root / name / "ledger.db", settlement="never")
        notify_url = f"http://127.0.0.1:{port}/v1/webhooks/{name}"
        sims[name] = spec.make_sim(ledger, root / name / "keys", notify_url)
        strangers[name] = spec.make_sim(ledger, root / name / "stranger", notify_url)
    host = SimulatorHost(list(sims.values()), tick=0.05)
    host.start()
    gateways: dict[PaymentMethod, Gateway] = {}
    try:
        for name in NAMES:
            config = sims[name].adapter_config(host.base_url(name))
            gateway = build_provider(name, dict(config.model_copy(update={"timeout_s": 2.0})))
            gateways[PROVIDERS[name].method] = gateway
        gateways[PaymentMethod.STRIPE] = gateways[PaymentMethod.CARD]
        async with (
            open_stack(env, root, gateways) as stack,
            serve_api(stack, gateways, port),
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http,
        ):
            world = World(stack, http, sims, strangers, {}, {})
            for name in NAMES:
                world.targets[name] = await _paid(world, name, "target")
                world.replays[name] = await _paid(world, name, "replay")
            yield world
    finally:
        for gateway in {id(g): g for g in gateways.values()}.values():
            close = getattr(gateway, "aclose", None)
            if close is not None:
                await close()
        host.stop()


async def _paid(world: World, name: str, role: str) -> Paid:
    """A refund of 40.00 through ``name``, sent and accepted, waiting for the provider."""
    spec: Provider = PROVIDERS[name]
    stack = world.stack
    order_id = f"wh-{name}-{role}-{uuid.uuid4().hex[:6]}"
    txn = f"{spec.txn_prefix}{order_id}"
    spec.register(world.sims[name], txn, 10000, "CNY", time.time() - 2 * 86400)
    tender = payment("p1", spec.method.value, 10000, await stack.now())
    # A customer per order: the review limits how many refunds one customer gets a month.
    order = await stack.order(
        order_id, customer_id=f"c-{order_id}", payments=[{**tender, "provider_txn_id": txn}]
    )
    handle = await stack.start(order_id, order, **spec.request)
    for _ in range(120):
        state = await handle.query(RefundWorkflow.view)
        if state.status is RefundStatus.AWAITING_FUNDS:
            break
        await stack.env.sleep(timedelta(seconds=30))
    assert state.status is RefundStatus.AWAITING_FUNDS, state
    [record] = state.payouts
    assert record.status is PayoutStatus.ACCEPTED, record
    [refund] = world.sims[name].ledger.refunds(spec.refund_no(record.key))
    return Paid(handle, record.key, refund)


def _settled(world: World, key: str) -> bool:
    with session_scope(world.stack.engine, readonly=True) as s:
        row = s.exec(select(PayoutRow).where(PayoutRow.payout_key == key)).one()
        return row.status == "settled"


async def _until(check: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.05)
