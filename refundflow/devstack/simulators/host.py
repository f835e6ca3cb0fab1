"""One HTTP host for the provider simulators: each under ``/{name}`` on one port, with the
provider's back office (settling refunds as they come due, delivering their webhooks at least
once)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Sequence
from typing import Protocol

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import ASGIApp

from refundflow.devstack.simulators.core import SimLedger, WebhookDue

log = logging.getLogger(__name__)


class Simulator(Protocol):
    name: str
    ledger: SimLedger

    def app(self) -> ASGIApp: ...

    def bind(self, base_url: str) -> None: ...

    def webhook_request(self, due: WebhookDue) -> tuple[str, dict[str, str], bytes] | None: ...


class SimulatorHost:
    """Serves simulators on one port (each under ``/{name}``) and plays the provider's back
    office: settles refunds as they come due and delivers their notifications, retrying a
    webhook the merchant did not acknowledge."""

    def __init__(
        self,
        sims: Sequence[Simulator],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tick: float = 0.2,
    ) -> None:
        self.sims = list(sims)
        self.host = host
        self.port = port
        self.tick = tick
        app = Starlette(routes=[Mount(f"/{sim.name}", app=sim.app()) for sim in self.sims])
        # A held (commit-then-timeout) request must not keep a stopping host alive.
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def base_url(self, name: str) -> str:
        return f"{self.url}/{name}"

    @property
    def ready(self) -> bool:
        """Listening, with every simulator told its URL."""
        return self._ready.is_set() and self._failure is None

    def start(self) -> None:
        """Serve in a background thread (tests); returns once the port is listening."""
        self._thread = threading.Thread(target=self._run_thread, name="simulators", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout=30) or self._failure is not None:
            raise RuntimeError(f"simulator host did not start: {self._failure}")

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    async def serve(self) -> None:
        """Serve in the caller's loop until cancelled or ``stop()``."""
        server = asyncio.create_task(self._server.serve())
        try:
            while not self._server.started:
                if server.done():
                    await server  # surfaces why it could not start (port taken...)
                    return
                await asyncio.sleep(0.02)
            self._bind()
            async with httpx.AsyncClient(timeout=5.0) as client:
                while not server.done():
                    await self._round(client)
                    await asyncio.sleep(self.tick)
        finally:
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await server

    def _run_thread(self) -> None:
        try:
            asyncio.run(self.serve())
        except BaseException as exc:  # reported by start()
            self._failure = exc
        finally:
            self._ready.set()

    def _bind(self) -> None:
        if self.port == 0:
            sockets = [s for server in self._server.servers for s in server.sockets]
            self.port = int(sockets[0].getsockname()[1])
        for sim in self.sims:
            sim.bind(self.base_url(sim.name))
        self._ready.set()

    async def _round(self, client: httpx.AsyncClient) -> None:
        for sim in self.sims:
            try:
                await asyncio.to_thread(sim.ledger.sweep)
                for due in await asyncio.to_thread(sim.ledger.due_webhooks):
                    await self._deliver(client, sim, due)
            except Exception:
                log.exception("simulator %s: back-office round failed", sim.name)

    async def _deliver(self, client: httpx.AsyncClient, sim: Simulator, due: WebhookDue) -> None:
        request = sim.webhook_request(due)
        if request is None:  # this provider sends nothing for this change
            await asyncio.to_thread(sim.ledger.webhook_delivered, due)
            return
        url, headers, body = request
        try:
            response = await client.post(url, headers=headers, content=body)
            ok = response.is_success
        except httpx.HTTPError as exc:
            log.info("simulator %s: webhook to %s failed: %s", sim.name, url, exc)
            ok = False
        settle = sim.ledger.webhook_delivered if ok else sim.ledger.webhook_failed
        await asyncio.to_thread(settle, due)
