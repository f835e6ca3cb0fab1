"""The whole stack as separate processes, as it runs in production: a Temporal dev server (state
in a file, so it survives a kill), the provider simulators, ``refundflow api`` and one or more
``refundflow worker``, configured only through ``REFUNDFLOW_*`` variables, with the simulators
standing in for the providers behind the real adapters (``REFUNDFLOW_PROVIDERS``).

With ``production=True`` it is set up as a real cluster is (tests/prod): the Temporal server
knows nothing of refundflow (no ``Refund*`` search attributes; a namespace of its own, created
by the platform's tool with a month of retention), the database is empty, and ``refundflow
setup`` run as a subprocess is what migrates it and registers the attributes; the merchant's
keys come from ``refundflow keys create``; the API and the workers get the ``REFUNDFLOW_*``
variables and nothing else of this process's environment; email goes to a real SMTP server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import Engine
from temporalio.client import Client

from refundflow.crypto import new_key_entry
from refundflow.db.engine import make_engine, session_scope
from refundflow.db.migrate import upgrade
from refundflow.db.repository import create_api_key, upsert_merchant
from refundflow.devstack.ports import free_ports
from refundflow.devstack.processes import (
    Processes,
    temporal_dev_server_args,
    wait_for_temporal,
)
from refundflow.devstack.simulators.core import SimLedger
from refundflow.devstack.simulators.dev import SIMULATORS
from refundflow.gateways.wechat import out_refund_no
from refundflow.workflows.search_attributes import dev_server_flags
from tests.payload_keys import CONVERTER, PAYLOAD_KEYS

BIN = Path(sys.executable).parent
MERCHANT = "chaos"
PROVIDERS = tuple(SIMULATORS)
"""alipay, wechat, stripe, paypal, bank_transfer."""
ADAPTER_TIMEOUT_S = 2.0
"""The adapters' HTTP timeout here: a held answer (commit-then-timeout) is given up on fast."""
_READY_S = 120.0
PRODUCTION_NAMESPACE = "refunds"
_CLI_S = 300.0


class ChaosStack:
    def __init__(
        self, root: Path, database_url: str, *, workers: int = 1, production: bool = False
    ) -> None:
        self.root = root
        self.database_url = database_url
        self.workers = workers
        self.production = production
        self.processes = Processes(root / "logs")
        self.temporal_port, self.temporal_http_port, self.sim_port, self.api_port = free_ports(4)
        self.metrics_ports = free_ports(workers)
        """One Prometheus port per worker (production: they run side by side on one host)."""
        self.namespace = PRODUCTION_NAMESPACE if production else "default"
        self.mailbox = _Mailbox()
        self._smtp: Controller | None = None
        self.providers: dict[str, dict[str, Any]] = {}
        self.keys: dict[str, str] = {}
        self.engine: Engine = make_engine(database_url)
        self.ledgers: dict[str, SimLedger] = {}
        self.encryption_keys = new_key_entry("chaos-1")
        """Seal secrets at rest; the worker and the API refuse to start without them."""
        self._client: Client | None = None

    # ------------------------------------------------------------------ addresses
    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def temporal_address(self) -> str:
        return f"127.0.0.1:{self.temporal_port}"

    def env(self) -> dict[str, str]:
        """What the worker and the API get: the environment, and nothing else to go by (in
        production, not even this process's own environment)."""
        ours = {
            "REFUNDFLOW_DATABASE_URL": self.database_url,
            "REFUNDFLOW_DATA_DIR": str(self.root / "data"),
            "REFUNDFLOW_TEMPORAL_ADDRESS": self.temporal_address,
            "REFUNDFLOW_PROVIDERS": json.dumps(self.providers),
            "REFUNDFLOW_ENCRYPTION_KEYS": self.encryption_keys,
            "REFUNDFLOW_PAYLOAD_KEYS": PAYLOAD_KEYS,
        }
        if not self.production:
            return {**os.environ, "PYTHONUNBUFFERED": "1", **ours}
        assert self._smtp is not None, "start_backing() first"
        mail = {"smtp_host": "127.0.0.1", "smtp_port": self._smtp.port}
        return ours | {
            "REFUNDFLOW_TEMPORAL_NAMESPACE": self.namespace,
            "REFUNDFLOW_NOTIFY": json.dumps(mail | {"mail_from": "refunds@shop.example"}),
            "REFUNDFLOW_LOG_FORMAT": "json",
        }

    def worker_env(self, index: int) -> dict[str, str]:
        port = {"REFUNDFLOW_METRICS_PORT": str(self.metrics_ports[index - 1])}
        return self.env() | (port if self.production else {})

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``refundflow <args>`` as an operator runs it, with the stack's environment (and a
        terminal width, so its tables stay readable in the test's output)."""
        return subprocess.run(
            [str(BIN / "refundflow"), *args],
            env=self.env() | {"COLUMNS": "160"},
            capture_output=True,
            text=True,
            timeout=_CLI_S,
            check=False,
        )

    def refund_no(self, provider: str, payout_key: str) -> str:
        """Our payout key as the provider's ledger stores it."""
        return out_refund_no(payout_key) if provider == "wechat" else payout_key

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        await self.start_backing()
        self.set_up()
        await self.start_services()

    async def start_backing(self) -> None:
        """What refundflow runs on: the Temporal server (and, in production, its namespace),
        the providers (simulators) and the mail server."""
        if self.production:
            self._smtp = Controller(self.mailbox, hostname="127.0.0.1", port=free_ports(1)[0])
            self._smtp.start()
        self.start_temporal()
        await self._start_simulators()
        await self.wait_temporal()
        if self.production:
            self._create_namespace()

    def set_up(self) -> None:
        """The database migrated, the search attributes registered, the merchant and its keys:
        in production through the CLI, as an operator does it."""
        if not self.production:
            upgrade(self.database_url)
            with session_scope(self.engine) as session:
                upsert_merchant(session, merchant_id=MERCHANT, name="Chaos shop")
                for role in ("client", "ops"):
                    _, self.keys[role] = create_api_key(
                        session, merchant_id=MERCHANT, name=f"chaos-{role}", role=role
                    )
            return
        setup = self.cli("setup")
        assert setup.returncode == 0, setup.stdout + setup.stderr
        for role in ("client", "ops"):
            made = self.cli(
                *("keys", "create", "--merchant", MERCHANT, "--name", f"prod-{role}"),
                *("--role", role, "--create-merchant"),
            )
            assert made.returncode == 0, made.stdout + made.stderr
            self.keys[role] = made.stdout.strip()

    async def start_services(self) -> None:
        api = [str(BIN / "refundflow"), "api", "--port", str(self.api_port)]
        self.processes.start("api", api, self.env())
        for index in range(1, self.workers + 1):
            self.start_worker(index)
        await self._wait_api()

    def start_temporal(self) -> None:
        args = temporal_dev_server_args(
            str(BIN / "temporal"),
            port=self.temporal_port,
            http_port=self.temporal_http_port,
            db_file=self.root / "temporal.db",
            # A real cluster knows nothing of refundflow until `refundflow setup` has run.
            flags=[] if self.production else dev_server_flags(),
        )
        self.processes.start("temporal", args)

    def _create_namespace(self) -> None:
        """The platform team's step on a real cluster (docs: `temporal operator namespace
        create`); refundflow's own setup comes after it."""
        created = subprocess.run(
            [
                *(str(BIN / "temporal"), "operator", "namespace", "create"),
                *("--namespace", self.namespace, "--retention", "30d"),
                *("--address", self.temporal_address),
            ],
            capture_output=True,
            text=True,
            timeout=_CLI_S,
            check=False,
        )
        assert created.returncode == 0, created.stdout + created.stderr

    def start_worker(self, index: int = 1) -> None:
        args = [str(BIN / "refundflow"), "worker"]
        self.processes.start(f"worker-{index}", args, self.worker_env(index))

    def kill_worker(self, index: int = 1) -> None:
        self.processes.kill9(f"worker-{index}")

    @property
    def worker_kills(self) -> int:
        return sum(n for name, n in self.processes.kills.items() if name.startswith("worker-"))

    async def kill_temporal(self) -> None:
        """kill -9 the Temporal server, then start it again on its own state file."""
        self.processes.kill9("temporal")
        self.start_temporal()
        await self.wait_temporal()

    async def close(self) -> None:
        try:
            self.processes.stop_all()
        finally:
            self.engine.dispose()
            if self._smtp is not None:
                self._smtp.stop()

    # ------------------------------------------------------------------ clients
    async def client(self) -> Client:
        if self._client is None:
            self._client = await Client.connect(
                self.temporal_address, namespace=self.namespace, data_converter=CONVERTER
            )
        return self._client

    @asynccontextmanager
    async def http(self, role: str = "client") -> AsyncIterator[httpx.AsyncClient]:
        headers = {"Authorization": f"Bearer {self.keys[role]}"}
        async with httpx.AsyncClient(base_url=self.api_url, headers=headers, timeout=60) as http:
            yield http

    # ------------------------------------------------------------------ waiting for parts
    async def wait_temporal(self) -> None:
        await wait_for_temporal(self.processes, self.temporal_address, patience_s=_READY_S)

    async def _start_simulators(self) -> None:
        configs = self.root / "providers.json"
        args = [
            *(str(BIN / "python"), "-m", "refundflow.devstack.simulators.dev"),
            *("--data-dir", str(self.root / "sims"), "--port", str(self.sim_port)),
            *("--api-url", self.api_url, "--settlement", "seconds:1"),
            *("--configs", str(configs)),
        ]
        self.processes.start("simulators", args, {**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + _READY_S
        while not configs.exists():
            assert self.processes.alive("simulators"), self.processes.log_tail("simulators")
            assert time.monotonic() < deadline, "the simulators did not come up"
            await asyncio.sleep(0.1)
        self.providers = {
            name: config | {"timeout_s": ADAPTER_TIMEOUT_S}
            for name, config in json.loads(configs.read_text()).items()
        }
        for name in PROVIDERS:
            self.ledgers[name] = SimLedger(self.root / "sims" / "simulators" / name / "ledger.db")

    async def _wait_api(self) -> None:
        deadline = time.monotonic() + _READY_S
        async with httpx.AsyncClient(base_url=self.api_url, timeout=5) as http:
            while time.monotonic() < deadline:
                assert self.processes.alive("api"), self.processes.log_tail("api")
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
        raise AssertionError(f"the API did not get ready:\n{self.processes.log_tail('api')}")


class _Mailbox:
    """The SMTP server's handler: counts what it is given (the mail itself is not the point)."""

    def __init__(self) -> None:
        self.recipients: list[str] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.recipients += envelope.rcpt_tos
        return "250 OK"


@asynccontextmanager
async def chaos_stack(
    root: Path, database_url: str, *, workers: int = 1, production: bool = False, start: bool = True
) -> AsyncIterator[ChaosStack]:
    """The stack, stopped whatever happens; ``start=False`` leaves starting it to the test."""
    stack = ChaosStack(root, database_url, workers=workers, production=production)
    try:
        if start:
            await stack.start()
        yield stack
    finally:
        await stack.close()
