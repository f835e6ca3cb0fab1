"""Property-based fuzzing of the HTTP API against its own OpenAPI document (schemathesis): the
app served over real HTTP by uvicorn, on SQLite, connected to a Temporal test server of its
own. No input may cause a 5xx, and every answer must match the documented status codes,
content types and schemas. Examples are bounded and derandomized, so a run is repeatable and
stays within a minute."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import checks
from schemathesis.core.result import Ok
from temporalio.testing import WorkflowEnvironment

from refundflow.api.app import create_app
from refundflow.db.engine import make_engine, session_scope
from refundflow.db.migrate import upgrade
from refundflow.db.repository import create_api_key, upsert_merchant
from refundflow.devstack.ports import free_port
from refundflow.settings import Settings
from tests.api.conftest import terminate_open_runs
from tests.payload_keys import DB_KEYRING

pytestmark = pytest.mark.fuzz

EXAMPLES_PER_OPERATION = 50
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]
"""What the API promises of every answer."""


@dataclass
class Served:
    url: str
    token: str
    cases: int = 0


@pytest.fixture
async def served(fresh_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Served]:
    # A Temporal test server of its own: the runs the fuzzer starts wait on a queue no worker
    # polls, and what it asks of them left the session's server unable to skip time for the
    # tests after it (their env.sleep timed out).
    env = fresh_env
    database_url = f"sqlite:///{tmp_path / 'fuzz.db'}"
    upgrade(database_url)
    engine = make_engine(database_url)
    merchant = f"fuzz-{uuid.uuid4().hex[:6]}"
    with session_scope(engine) as s:
        upsert_merchant(s, merchant_id=merchant)
        _, token = create_api_key(s, merchant_id=merchant, name="fuzzer", role="admin")
    settings = Settings(
        database_url=database_url,
        data_dir=tmp_path,
        task_queue=f"fuzz-{uuid.uuid4().hex[:8]}",  # no worker: runs start and wait
        temporal_address=env.client.service_client.config.target_host,
        strict_problem_codes=True,
        sandbox=True,  # routes without a provider pay through the simulator
    )
    # The app connects to Temporal in its own lifespan, on the server thread's event loop.
    app = create_app(settings, engine=engine, temporal=None, keyring=DB_KEYRING)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started or app.state.temporal is None:  # it connects in the background
        assert time.monotonic() < deadline, "the API did not start, or never reached Temporal"
        time.sleep(0.05)
    try:
        yield Served(url=f"http://127.0.0.1:{port}", token=token)
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        await terminate_open_runs(env, engine)
        engine.dispose()


def test_no_input_breaks_the_api_or_its_documented_contract(served: Served) -> None:
    # Not positive_data_acceptance: a schema cannot say every business rule (a discount larger
    # than its lines, a refund of nothing); those answer documented 422 problems.
    config = schemathesis.Config.from_dict(
        {"checks": {"positive_data_acceptance": {"enabled": False}}}
    )
    schema = schemathesis.openapi.from_url(f"{served.url}/openapi.json", config=config)
    failures: list[str] = []
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"an operation of the document does not load: {result}"
        operations.append(result.ok())
    for operation in operations:
        strategy = operation.as_strategy()

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            derandomize=True,  # a fixed seed: the same cases every run
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def check(case: schemathesis.Case) -> None:
            served.cases += 1
            case.call_and_validate(headers={"Authorization": f"Bearer {served.token}"}, timeout=30)

        try:
            check()
        except Exception as exc:  # gather every operation's failure, not only the first
            failures.append(f"{operation.label}: {exc}")
    print(f"schemathesis: {served.cases} cases over {len(operations)} operations")
    assert not failures, "\n\n".join(failures)
