"""A real Temporal dev server per test (worker deployments and visibility queries are what these
tests are about, and the time-skipping test server has neither), and a refund stack on it."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
from temporalio.testing import WorkflowEnvironment

from refundflow.domain.states import RefundStatus
from refundflow.workflows.refund import RefundWorkflow
from tests.conftest import dev_server
from tests.workflows.conftest import Stack

BIN = Path(sys.executable).parent
T = TypeVar("T")


@pytest.fixture
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    async with dev_server() as env:
        yield env


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
