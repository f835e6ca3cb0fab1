"""Approver and ops commands as people type them: the installed ``refundflow`` script against
the API served over real HTTP, with a worker on the Temporal test server."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from temporalio.testing import WorkflowEnvironment

from refundflow.db.migrate import upgrade
from refundflow.devstack.ports import free_port
from tests.api.conftest import Api, serve_api

BIN = Path(sys.executable).parent / "refundflow"
REFUND = {"items": [{"line_id": "l1", "quantity": 1}], "reason": "LATE_DELIVERY"}
# Above the default auto-approve limit: the refund waits for an approver.
TV = [{"line_id": "l1", "sku": "TV", "quantity": 1, "unit_price": 300000}]


@dataclass
class Served:
    api: Api
    url: str


@dataclass
class Ran:
    code: int
    out: str
    err: str


@pytest.fixture
async def served(env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Served]:
    url = f"sqlite:///{tmp_path / 'refundflow.db'}"
    upgrade(url)
    async with serve_api(env, url, tmp_path) as api:
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(
                api.app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"
            )
        )
        serving = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.05)
        try:
            yield Served(api, f"http://127.0.0.1:{port}")
        finally:
            server.should_exit = True
            await serving


async def cli(*args: str, env: dict[str, str] | None = None) -> Ran:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REFUNDFLOW_")}
    process = await asyncio.create_subprocess_exec(
        str(BIN),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**clean, **(env or {})},
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(), err.decode())


async def waiting_refund(s: Served, key: str) -> str:
    order_id = f"o-{key}"
    payments = (await s.api.put_order(order_id)).json()["order"]["payments"]
    payments[0]["captured"] = 300000
    assert (await s.api.put_order(order_id, lines=TV, payments=payments)).status_code == 200
    started = await s.api.call(
        "client",
        "POST",
        "/v1/refunds",
        json={**REFUND, "order_id": order_id},
        headers={"Idempotency-Key": key},
    )
    assert started.status_code == 202, started.text
    refund_id = str(started.json()["refund_id"])
    for _ in range(100):
        got = await s.api.call("client", "GET", f"/v1/refunds/{refund_id}")
        if got.json()["status"] == "AWAITING_APPROVAL":
            return refund_id
        await s.api.env.sleep(60)
    raise AssertionError(f"{refund_id} never waited for approval")


async def test_approve_and_reject_print_one_readable_line(served: Served) -> None:
    remote = ("--api-url", served.url)
    approved = await waiting_refund(served, "cli-approve")
    ran = await cli("approve", approved, "--key", served.api.keys["approver"], *remote)
    assert ran.code == 0, ran.err
    assert re.fullmatch(rf"approved {approved}: status [A-Z_]+ \(1/1 approvals\)\n", ran.out), (
        ran.out
    )

    # The same approver again: the run refuses it, and the command says so in one line.
    again = await cli("approve", approved, "--key", served.api.keys["approver"], *remote)
    assert again.code == 2
    assert re.fullmatch(r"error [a-z_]+: \S.*\n", again.err), again.err
    assert again.out == "", again.err

    rejected = await waiting_refund(served, "cli-reject")
    ran = await cli(
        "reject", rejected, "--comment", "[photos] show no damage",
        "--key", served.api.keys["approver"], *remote,
    )  # fmt: skip
    assert ran.code == 0, ran.err
    assert ran.out == f"rejected {rejected}: status REJECTED\n"


async def test_list_and_show_find_the_dev_admin_key(served: Served, tmp_path: Path) -> None:
    refund_id = await waiting_refund(served, "cli-list")
    data = tmp_path / "dev-data"
    data.mkdir()
    (data / "admin.key").write_text(served.api.keys["admin"] + "\n")
    remote = ("--api-url", served.url)
    listed = await cli("refunds", "list", *remote, env={"REFUNDFLOW_DATA_DIR": str(data)})
    assert listed.code == 0, listed.err
    assert refund_id in listed.out
    shown = await cli("refunds", "show", refund_id, "--data-dir", str(data), *remote)
    assert shown.code == 0, shown.err
    assert refund_id in shown.out and "AWAITING_APPROVAL" in shown.out

    missing = await cli("refunds", "list", "--data-dir", str(tmp_path / "nowhere"), *remote)
    assert missing.code == 2
    assert missing.err.startswith("error missing_key: ") and missing.err.count("\n") == 1
