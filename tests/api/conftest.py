"""The API through its ASGI app, against the session's Temporal test server, a worker with the
real activities, and each database (SQLite and PostgreSQL)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine
from sqlmodel import select
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from refundflow.activities.refund import RefundActivities
from refundflow.api.app import create_app, use_gateways
from refundflow.crypto import Keyring
from refundflow.db.engine import make_engine, session_scope
from refundflow.db.models import IdempotencyKeyRow
from refundflow.db.repository import create_api_key, upsert_merchant
from refundflow.devstack.sandbox import SandboxGateway
from refundflow.domain.orders import PaymentMethod
from refundflow.gateways.balance import BalanceGateway
from refundflow.settings import Settings
from refundflow.worker import build_worker
from refundflow.workflows.client import refund_id_for, workflow_id
from tests.db.conftest import db_url, postgres_problem  # noqa: F401  (fixtures)
from tests.payload_keys import DB_KEYRING

ROLES = ("client", "approver", "warehouse", "ops", "admin")


@dataclass
class Api:
    http: httpx.AsyncClient
    app: FastAPI
    env: WorkflowEnvironment
    engine: Engine
    sandbox: SandboxGateway
    worker: Worker
    """The only worker on this test's task queue: shut it down to leave runs unattended."""
    keys: dict[str, str] = field(default_factory=dict)
    merchant: str = "shop-a"
    """role -> token for merchant A ("client-b" for merchant B; "approver2" a second approver)."""

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}

    async def call(self, who: str | None, method: str, url: str, **kw: Any) -> httpx.Response:
        headers = {**kw.pop("headers", {}), **(self.auth(who) if who else {})}
        return await self.http.request(method, url, headers=headers, **kw)

    async def put_order(
        self, order_id: str = "o-1", who: str = "client", **overrides: Any
    ) -> httpx.Response:
        now = await self.env.get_current_time()
        body: dict[str, Any] = {
            "channel": "own_store",
            "customer_id": "cust-1",
            "country": "CN",
            "currency": "CNY",
            "placed_at": (now - timedelta(days=2)).isoformat(),
            "status": "DELIVERED",
            "delivered_at": (now - timedelta(days=1)).isoformat(),
            "lines": [{"line_id": "l1", "sku": "MUG", "quantity": 2, "unit_price": 4000}],
            "payments": [
                {
                    "payment_id": "p1",
                    "method": "alipay",
                    "provider_txn_id": "t1",
                    "captured": 8000,
                    "currency": "CNY",
                    "paid_at": (now - timedelta(days=2)).isoformat(),
                }
            ],
        }
        body.update(overrides)
        return await self.call(who, "PUT", f"/v1/orders/{order_id}", json=body)

    async def finish(self, refund_id: str) -> str:
        """Skip time until the refund's run ends; its final status."""
        handle = self.env.client.get_workflow_handle(workflow_id(refund_id))
        step = timedelta(minutes=1)
        for _ in range(60):  # about twelve days of workflow time
            described = await handle.describe()
            if described.status != WorkflowExecutionStatus.RUNNING:
                break
            await self.env.sleep(step)
            step = min(step * 2, timedelta(hours=6))
        response = await self.call("client", "GET", f"/v1/refunds/{refund_id}")
        return str(response.json()["status"])


@pytest.fixture
async def api(env: WorkflowEnvironment, db_url: str, tmp_path: Path) -> AsyncIterator[Api]:  # noqa: F811
    async with serve_api(env, db_url, tmp_path) as api:
        yield api


@pytest.fixture
async def api_own_server(
    fresh_env: WorkflowEnvironment,
    db_url: str,  # noqa: F811
    tmp_path: Path,
) -> AsyncIterator[Api]:
    """The API against a Temporal test server of its own, for a test that stops its clock for
    good: an update sent to a run no worker takes keeps the test server from skipping time,
    even after the run is terminated."""
    async with serve_api(fresh_env, db_url, tmp_path) as api:
        yield api


@asynccontextmanager
async def serve_api(
    env: WorkflowEnvironment,
    database_url: str,
    tmp_path: Path,
    *,
    temporal: Client | None = None,
    tracing: bool = False,
    keyring: Keyring | None = DB_KEYRING,
) -> AsyncIterator[Api]:
    """The app, a worker with the real activities and an HTTP client, on ``env``'s server
    (through ``temporal``, a client of that server, when given). ``keyring=None``: an app
    without encryption keys of its own (it looks for them where settings say)."""
    temporal = temporal or env.client
    engine = make_engine(database_url)
    keys: dict[str, str] = {}
    # Unique per test: refund ids derive from merchant and idempotency key, and the Temporal
    # server is shared by the whole session.
    merchant, other = f"shop-a-{uuid.uuid4().hex[:6]}", f"shop-b-{uuid.uuid4().hex[:6]}"
    with session_scope(engine) as s:
        upsert_merchant(s, merchant_id=merchant)
        upsert_merchant(s, merchant_id=other)
        for role in ROLES:
            _, keys[role] = create_api_key(s, merchant_id=merchant, name=f"{role}-1", role=role)
        _, keys["approver2"] = create_api_key(
            s, merchant_id=merchant, name="approver-2", role="approver"
        )
        _, keys["client-b"] = create_api_key(s, merchant_id=other, name="client-b", role="client")
        _, keys["approver-b"] = create_api_key(
            s, merchant_id=other, name="approver-b", role="approver"
        )
    sandbox = SandboxGateway(path=tmp_path / "sandbox.db", settle_after_queries=1)
    gateways: dict[PaymentMethod, Any] = {m: sandbox for m in PaymentMethod}
    gateways[PaymentMethod.BALANCE] = BalanceGateway(engine)
    queue = f"api-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        database_url=database_url,
        task_queue=queue,
        data_dir=tmp_path,
        tracing=tracing,
        strict_problem_codes=True,
    )
    app = create_app(settings, engine=engine, temporal=temporal, keyring=keyring)
    use_gateways(app, gateways)
    transport = httpx.ASGITransport(app=app)
    worker = build_worker(
        temporal, RefundActivities(engine, gateways, keyring=DB_KEYRING), task_queue=queue
    )
    async with worker, httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        try:
            yield Api(
                http=http,
                app=app,
                env=env,
                engine=engine,
                sandbox=sandbox,
                worker=worker,
                keys=keys,
                merchant=merchant,
            )
        finally:
            await terminate_open_runs(env, engine)
    engine.dispose()


async def terminate_open_runs(env: WorkflowEnvironment, engine: Engine) -> None:
    """A run left open by a failed test would stall the shared server's clock. The refund a
    key names is derived from the key: a claim whose answer was never recorded (a request cut
    off between starting the run and completing the key, as the fuzzer does) started one too."""
    with session_scope(engine, readonly=True) as s:
        keys = s.exec(select(IdempotencyKeyRow.merchant_id, IdempotencyKeyRow.key)).all()
    ids = {refund_id_for(merchant_id, key) for merchant_id, key in keys}
    for refund_id in ids:
        handle = env.client.get_workflow_handle(workflow_id(refund_id))
        try:
            if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
                await handle.terminate("test finished")
        except RPCError:
            continue
