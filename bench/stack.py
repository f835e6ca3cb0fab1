"""The stack the bench measures, as plain processes on this machine: a Temporal dev server of its
own, ``refundflow worker`` and ``refundflow api`` configured only through ``REFUNDFLOW_*``
variables (as tests/prod runs them; the sandbox pays every route), and the baseline's worker
(``bench.baseline``). Each is a process of its own so its CPU and memory can be read apart."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from sqlalchemy import Engine
from temporalio.client import Client

from bench.figures import Usage, usage
from refundflow.crypto import Keyring, new_key_entry
from refundflow.db.engine import make_engine, session_scope
from refundflow.db.migrate import upgrade
from refundflow.db.repository import create_api_key, upsert_merchant
from refundflow.devstack.ports import free_ports
from refundflow.devstack.processes import (
    Processes,
    temporal_dev_server_args,
    wait_for_temporal,
)
from refundflow.devstack.sandbox import SandboxGateway
from refundflow.payload_codec import encrypted_data_converter
from refundflow.settings import Settings
from refundflow.workflows.search_attributes import dev_server_flags

BIN = Path(sys.executable).parent
_REPO = Path(__file__).resolve().parent.parent
"""So ``python -m bench.baseline`` finds this package with no other variable set."""
MERCHANT = "bench"
MEASURED = ("worker", "api", "temporal", "baseline")
_READY_S = 120.0


class BenchStack:
    def __init__(self, root: Path, database_url: str) -> None:
        self.root = root
        self.database_url = database_url
        self.processes = Processes(root / "logs")
        self.temporal_port, self.temporal_http_port, self.api_port, self.metrics_port = free_ports(
            4
        )
        self.payload_keys = new_key_entry("bench-payload-1")
        self.encryption_keys = new_key_entry("bench-1")
        self.engine: Engine = make_engine(database_url)
        self.keys: dict[str, str] = {}
        self.task_queue = Settings().task_queue
        self._client: Client | None = None
        self.sandbox: SandboxGateway | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def metrics_url(self) -> str:
        """The refund worker's Prometheus endpoint."""
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def temporal_address(self) -> str:
        return f"127.0.0.1:{self.temporal_port}"

    def env(self) -> dict[str, str]:
        """All the worker and the API get: no variable of this process's environment."""
        return {
            "REFUNDFLOW_DATABASE_URL": self.database_url,
            "REFUNDFLOW_DATA_DIR": str(self.root / "data"),
            "REFUNDFLOW_TEMPORAL_ADDRESS": self.temporal_address,
            "REFUNDFLOW_SANDBOX": "true",
            "REFUNDFLOW_ENCRYPTION_KEYS": self.encryption_keys,
            "REFUNDFLOW_PAYLOAD_KEYS": self.payload_keys,
            "REFUNDFLOW_LOG_LEVEL": "WARNING",
        }

    async def start(self) -> None:
        args = temporal_dev_server_args(
            str(BIN / "temporal"),
            port=self.temporal_port,
            http_port=self.temporal_http_port,
            db_file=self.root / "temporal.db",
            flags=dev_server_flags(),
        )
        self.processes.start("temporal", args)
        upgrade(self.database_url)
        with session_scope(self.engine) as session:
            upsert_merchant(session, merchant_id=MERCHANT, name="Bench shop")
            for role in ("client", "approver"):
                _, self.keys[role] = create_api_key(
                    session, merchant_id=MERCHANT, name=f"bench-{role}", role=role
                )
        # The worker's sandbox ledger: the bench scripts each payout it expects to settle at once.
        self.sandbox = SandboxGateway(path=self.root / "data" / "sandbox-ledger.db")
        await wait_for_temporal(self.processes, self.temporal_address)
        refundflow = str(BIN / "refundflow")
        self.processes.start("api", [refundflow, "api", "--port", str(self.api_port)], self.env())
        worker_env = self.env() | {"REFUNDFLOW_METRICS_PORT": str(self.metrics_port)}
        self.processes.start("worker", [refundflow, "worker"], worker_env)
        baseline = [str(BIN / "python"), "-m", "bench.baseline"]
        self.processes.start("baseline", baseline, self.env() | {"PYTHONPATH": str(_REPO)})
        await self._wait_api()

    async def close(self) -> None:
        try:
            self.processes.stop_all()
        finally:
            self.engine.dispose()

    def usage(self) -> dict[str, Usage]:
        return {name: usage(self.processes.pid(name)) for name in MEASURED}

    async def client(self) -> Client:
        if self._client is None:
            keyring = Keyring.parse(self.payload_keys, source="bench")
            self._client = await Client.connect(
                self.temporal_address, data_converter=encrypted_data_converter(keyring)
            )
        return self._client

    @asynccontextmanager
    async def http(self, role: str = "client") -> AsyncIterator[httpx.AsyncClient]:
        headers = {"Authorization": f"Bearer {self.keys[role]}"}
        # Enough connections for every concurrent client the bench runs.
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(
            base_url=self.api_url, headers=headers, timeout=120, limits=limits
        ) as http:
            yield http

    async def _wait_api(self) -> None:
        deadline = time.monotonic() + _READY_S
        async with httpx.AsyncClient(base_url=self.api_url, timeout=5) as http:
            while time.monotonic() < deadline:
                for name in ("api", "worker", "baseline"):
                    assert self.processes.alive(name), self.processes.log_tail(name)
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
        raise RuntimeError(f"the API did not get ready:\n{self.processes.log_tail('api')}")
