"""A real Temporal dev server per test (worker deployments and visibility queries are what these
tests are about, and the time-skipping test server has neither), and a refund stack on it."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import WorkerDeploymentConfig

from refundflow.activities.refund import RefundActivities
from refundflow.db.engine import make_engine, session_scope
from refundflow.db.migrate import upgrade
from refundflow.db.repository import upsert_merchant
from refundflow.domain.orders import PaymentMethod
from refundflow.domain.states import RefundStatus
from refundflow.gateways.balance import BalanceGateway
from refundflow.gateways.sandbox import SandboxGateway
from refundflow.worker import build_worker
from refundflow.workflows import search_attributes as sa
from refundflow.workflows.refund import RefundWorkflow
from tests.workflows.conftest import MERCHANT, Stack

BIN = Path(sys.executable).parent
T = TypeVar("T")


@pytest.fixture
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(BIN / "temporal"),
        data_converter=pydantic_data_converter,
        search_attributes=sa.ALL,
        ui=False,
    )
    try:
        yield env
    finally:
        await env.shutdown()


@asynccontextmanager
async def refund_stack(
    env: WorkflowEnvironment, tmp_path: Path, deployment: WorkerDeploymentConfig | None = None
) -> AsyncIterator[Stack]:
    """A migrated SQLite database, the sandbox provider and a worker with the real activities
    on a task queue of its own; ``deployment`` makes the worker versioned. Runs still open at
    the end are terminated."""
    url = f"sqlite:///{tmp_path / 'refundflow.db'}"
    upgrade(url)
    engine = make_engine(url)
    with session_scope(engine) as s:
        upsert_merchant(s, merchant_id=MERCHANT)
    sandbox = SandboxGateway(path=tmp_path / "sandbox.db", settle_after_queries=1)
    gateways = {m: sandbox for m in PaymentMethod} | {PaymentMethod.BALANCE: BalanceGateway(engine)}
    queue = f"deploy-{uuid.uuid4().hex[:6]}"
    activities = RefundActivities(engine, gateways)
    try:
        async with build_worker(env.client, activities, task_queue=queue, deployment=deployment):
            stack = Stack(env=env, engine=engine, sandbox=sandbox, task_queue=queue)
            try:
                yield stack
            finally:
                await stack.terminate_open_runs()
    finally:
        engine.dispose()


async def eventually(
    read: Callable[[], Awaitable[T]], done: Callable[[T], bool], what: str, tries: int = 150
) -> T:
    """Read until ``done`` holds: for what the server does in its own time (visibility,
    deployment registration), not a timed assertion."""
    for _ in range(tries):
        value = await read()
        if done(value):
            return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"never: {what} (last: {value!r})")


async def until_status(stack: Stack, refund_id: str, status: RefundStatus) -> None:
    handle = stack.client.get_workflow_handle(f"refund-{refund_id}")
    await eventually(
        lambda: handle.query(RefundWorkflow.view),
        lambda state: state.status is status,
        f"{refund_id} {status}",
    )


async def run_cli(env: WorkflowEnvironment, *args: str) -> tuple[int, str, str]:
    """The installed ``refundflow`` command against ``env``'s server, without blocking the
    event loop the test's worker runs on."""
    environ = {
        key: value
        for key, value in os.environ.items()
        if key not in ("REFUNDFLOW_BUILD_ID", "REFUNDFLOW_DEPLOYMENT_NAME")
    }
    environ["REFUNDFLOW_TEMPORAL_ADDRESS"] = env.client.service_client.config.target_host
    environ["COLUMNS"] = "250"  # one table row per run, whatever the terminal
    process = await asyncio.create_subprocess_exec(
        str(BIN / "refundflow"),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environ,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()
