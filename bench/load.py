"""Load the bench puts on the stack: orders, then refunds started by a fixed number of clients
through the API's own start service with a Temporal client (``via_client``) or over HTTP
(``via_http``), and the watch for each to reach the state the bench stops the clock at."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel import col, select

from bench.stack import MERCHANT, BenchStack
from refundflow.api.refund_start import RefundStart, start_once
from refundflow.db.engine import session_scope
from refundflow.db.models import RefundRow
from refundflow.db.repository import upsert_order
from refundflow.domain.orders import OrderSnapshot, RefundRequest
from refundflow.workflows.client import refund_id_for

CONCURRENCY = 20
SMALL = 5_000
"""CNY 50.00: under the default policy's auto-approval limit (CNY 200), so paid at once."""
LARGE = 100_000
"""CNY 1,000.00: waits for one approver."""
SETTLED = ("AWAITING_FUNDS", "COMPLETED")
"""Paid, and the payout settled: the run now only waits for the customer's word."""
STUCK = ("NEEDS_ATTENTION", "REJECTED", "CANCELLED")
_POLL_S = 0.1


@dataclass
class Batch:
    """Refunds of one round: their names (order id and Idempotency-Key) and what was timed."""

    names: list[str]
    started_at: dict[str, float] = field(default_factory=dict)
    """``time.monotonic()`` just before each start call."""
    call_s: list[float] = field(default_factory=list)
    """How long each start call took (POST /v1/refunds, or the start service)."""
    reached_s: list[float] = field(default_factory=list)
    """From each start to the state waited for, as the bench saw it (polled every 0.1 s)."""
    stuck: int = 0
    arrived: dict[str, asyncio.Event] = field(default_factory=dict)
    """Set when the refund has reached the state waited for (or one it will not leave)."""

    def arrival(self, name: str) -> asyncio.Event:
        return self.arrived.setdefault(name, asyncio.Event())

    def refund_ids(self) -> list[str]:
        return [refund_id_for(MERCHANT, name) for name in self.names]


def new_batch(stack: BenchStack, count: int, *, amount: int) -> Batch:
    """``count`` orders in the database, one refundable line of ``amount`` each; the payouts
    the sandbox will be asked for scripted to settle while it answers."""
    tag = uuid.uuid4().hex[:8]
    names = [f"b{tag}-{n}" for n in range(count)]
    now = datetime.now(UTC)
    with session_scope(stack.engine) as session:
        for name in names:
            upsert_order(session, order=_order(name, amount, now))
    assert stack.sandbox is not None
    for name in names:
        # Tranche 1, generation 1: the only payout of a refund paid in one go.
        stack.sandbox.script(f"{refund_id_for(MERCHANT, name)}:1:1", [("ok", "seconds:0")])
    return Batch(names)


def _order(name: str, amount: int, now: datetime) -> OrderSnapshot:
    return OrderSnapshot.parse(
        {
            "merchant_id": MERCHANT,
            "order_id": name,
            "channel": "own_store",
            "customer_id": f"c-{name}",
            "country": "CN",
            "currency": "CNY",
            "placed_at": (now - timedelta(days=2)).isoformat(),
            "status": "DELIVERED",
            "delivered_at": (now - timedelta(days=1)).isoformat(),
            "lines": [{"line_id": "l1", "sku": "MUG", "quantity": 1, "unit_price": amount}],
            "payments": [
                {
                    "payment_id": "p1",
                    "method": "card",
                    "provider_txn_id": f"pi_{name.replace('-', '')}",
                    "captured": amount,
                    "currency": "CNY",
                    "paid_at": (now - timedelta(days=2)).isoformat(),
                }
            ],
        }
    )


def request_body(name: str) -> dict[str, Any]:
    return {
        "order_id": name,
        "items": [{"line_id": "l1", "quantity": 1}],
        "reason": "LATE_DELIVERY",
        "contact": {"email": f"{name}@example.com", "locale": "zh-CN"},
    }


async def at_concurrency(
    items: Sequence[str], call: Callable[[str], Awaitable[None]], concurrency: int = CONCURRENCY
) -> None:
    """``call`` on every item, ``concurrency`` at a time, in order."""
    queue = list(reversed(items))

    async def client() -> None:
        while queue:
            await call(queue.pop())

    await asyncio.gather(*(client() for _ in range(min(concurrency, len(items)))))


async def via_client(stack: BenchStack, batch: Batch, *, closed_loop: bool = True) -> None:
    """Each refund started as POST /v1/refunds starts it, in this process: the idempotency
    claim and the quote in the database, then ``client.start_workflow``. In a closed loop
    each client waits for its refund to arrive (``wait_for``) before starting the next."""
    client = await stack.client()

    async def start(name: str) -> None:
        request = RefundRequest.parse(request_body(name) | {"requested_by": "bench-client"})
        batch.started_at[name] = began = time.monotonic()
        await start_once(
            RefundStart(merchant_id=MERCHANT, key=name, request=request),
            engine=stack.engine,
            temporal=client,
            task_queue=stack.task_queue,
        )
        batch.call_s.append(time.monotonic() - began)
        if closed_loop:
            await batch.arrival(name).wait()

    await at_concurrency(batch.names, start)


async def via_http(stack: BenchStack, batch: Batch, *, closed_loop: bool = True) -> None:
    async with stack.http() as http:

        async def start(name: str) -> None:
            batch.started_at[name] = began = time.monotonic()
            made = await http.post(
                "/v1/refunds", json=request_body(name), headers={"Idempotency-Key": name}
            )
            batch.call_s.append(time.monotonic() - began)
            assert made.status_code == 202, made.text
            if closed_loop:
                await batch.arrival(name).wait()

        await at_concurrency(batch.names, start)


async def wait_for(
    stack: BenchStack, batch: Batch, statuses: Sequence[str], *, patience_s: float
) -> None:
    """Until every refund of ``batch`` is in one of ``statuses`` (or stuck in a state it will
    not leave by itself), noting when the bench first saw it there."""
    pending = dict(zip(batch.refund_ids(), batch.names, strict=True))
    deadline = time.monotonic() + patience_s
    while pending:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(pending)} refunds did not reach {statuses} in time")
        await asyncio.sleep(_POLL_S)
        seen = time.monotonic()
        with session_scope(stack.engine, readonly=True) as session:
            rows = session.exec(
                select(RefundRow.refund_id, RefundRow.status).where(
                    col(RefundRow.refund_id).in_(list(pending))
                )
            ).all()
        for refund_id, status in rows:
            if status in statuses:
                name = pending.pop(refund_id)
                batch.reached_s.append(seen - batch.started_at[name])
                batch.arrival(name).set()
            elif status in STUCK:
                batch.stuck += 1
                batch.arrival(pending.pop(refund_id)).set()
