"""The console over the API's own test stack (tests/api/conftest.py): the app with a worker on
the session's Temporal test server, plus encryption keys for its sessions; people sign in with
their API keys like a browser does (a cookie jar per person)."""

from __future__ import annotations

import asyncio
import base64
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from temporalio.testing import WorkflowEnvironment

from refundflow.domain.states import RefundStatus
from tests.api.conftest import Api, serve_api
from tests.db.conftest import db_url, postgres_problem  # noqa: F401  (fixtures)

TEMPORAL_UI = "http://temporal-ui.test:8233"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
BIG = [{"line_id": "l1", "sku": "TV", "quantity": 1, "unit_price": 900000}]
"""An order line of 9,000.00 CNY: above one approver's limit (5,000.00), so two decide."""
MEDIUM = [{"line_id": "l1", "sku": "LAMP", "quantity": 1, "unit_price": 50000}]
"""500.00 CNY: above automatic approval, one approver decides."""


def with_console_keys(api: Api) -> None:
    key = base64.b64encode(os.urandom(32)).decode()
    settings = api.app.state.settings.model_copy(
        update={"encryption_keys": SecretStr(f"console-test:{key}"), "temporal_ui_url": TEMPORAL_UI}
    )
    api.app.state.settings = settings


@asynccontextmanager
async def console_stack(
    env: WorkflowEnvironment, database_url: str, tmp_path: Path
) -> AsyncIterator[Api]:
    async with serve_api(env, database_url, tmp_path) as api:
        with_console_keys(api)
        yield api


@pytest.fixture
async def console(fresh_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Api]:
    """The console on SQLite (the database behind it is the API's, tested on both), with a
    Temporal test server of its own: the runs these tests leave (terminated at the end, some
    after Updates, some refused) must not stall the clock of the session's shared server, which
    later tests skip through."""
    url = f"sqlite:///{tmp_path / 'db' / 'refundflow.db'}"
    from refundflow.db.migrate import upgrade

    upgrade(url)
    async with console_stack(fresh_env, url, tmp_path) as api:
        yield api


@pytest.fixture
async def console_db(
    fresh_env: WorkflowEnvironment,
    db_url: str,  # noqa: F811
    tmp_path: Path,
) -> AsyncIterator[Api]:
    """The console on each database (SQLite and PostgreSQL), for the queries of its own."""
    async with console_stack(fresh_env, db_url, tmp_path) as api:
        yield api


class Person:
    """One person's browser, without the browser: a cookie jar and the page's CSRF token."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=api.app), base_url="http://test"
        )
        self.csrf = ""

    async def get(self, url: str, **kw: Any) -> httpx.Response:
        response = await self.http.get(url, **kw)
        found = CSRF.search(response.text)
        if found:
            self.csrf = found.group(1)
        return response

    async def post(self, url: str, data: dict[str, str], **kw: Any) -> httpx.Response:
        return await self.http.post(url, data={"csrf": self.csrf, **data}, **kw)

    async def sign_in(self, who: str) -> httpx.Response:
        await self.get("/console/sign-in")
        response = await self.post("/console/sign-in", {"api_key": self.api.keys[who]})
        assert response.status_code == 303, response.text
        return response

    async def aclose(self) -> None:
        await self.http.aclose()


@asynccontextmanager
async def person(api: Api, who: str | None = None) -> AsyncIterator[Person]:
    someone = Person(api)
    try:
        if who is not None:
            await someone.sign_in(who)
        yield someone
    finally:
        await someone.aclose()


async def refund_waiting(
    api: Api,
    key: str,
    lines: list[dict[str, Any]] = BIG,
    requester: str = "client",
    reason: str = "DAMAGED",
    **order: Any,
) -> str:
    """A refund of its own order that waits for approval; its id."""
    refund_id = await start_refund(api, key, lines, requester=requester, reason=reason, **order)
    await wait_status(api, refund_id, RefundStatus.AWAITING_APPROVAL)
    return refund_id


async def start_refund(
    api: Api,
    key: str,
    lines: list[dict[str, Any]],
    *,
    requester: str = "client",
    reason: str = "DAMAGED",
    request: dict[str, Any] | None = None,
    **order: Any,
) -> str:
    """A refund of a new order of ``lines`` (with ``order``'s fields and ``request``'s); its
    id."""
    order_id = f"o-{key}"
    price = sum(line["unit_price"] * line["quantity"] for line in lines)
    pay = (await api.put_order(order_id)).json()["order"]["payments"]
    pay[0]["captured"] = (
        price + order.get("shipping_fee", 0) - sum(d["amount"] for d in order.get("discounts", []))
    )
    put = await api.put_order(order_id, lines=lines, payments=pay, **order)
    assert put.status_code == 200, put.text
    body = {"order_id": order_id, "items": [{"line_id": "l1", "quantity": 1}], "reason": reason}
    body |= request or {}
    created = await api.call(
        requester, "POST", "/v1/refunds", json=body, headers={"Idempotency-Key": key}
    )
    assert created.status_code == 202, created.text
    return str(created.json()["refund_id"])


async def wait_status(api: Api, refund_id: str, status: RefundStatus) -> None:
    """Until the refund reaches ``status``, polling in real time: every status these tests
    wait for comes without a timer, so the shared test server's clock is left alone (skipping
    it waits for every other run's activities, and a busy machine can time that out)."""
    view: dict[str, Any] = {}
    for _ in range(600):
        view = (await api.call("ops", "GET", f"/v1/refunds/{refund_id}")).json()
        if view["status"] == status.value:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{refund_id} is {view.get('status')}, not {status.value}")
