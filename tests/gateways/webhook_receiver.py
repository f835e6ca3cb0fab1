"""A merchant's webhook endpoint for the simulators' notifications: a real HTTP server on a
free port, in its own thread, that keeps every call for the test to verify."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from refundflow.domain.states import PayoutEvent


class Receiver:
    """The merchant's webhook endpoint: a real HTTP server on a free port, in its own thread."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, str], bytes]] = []
        app = Starlette(routes=[Route("/hook", self._hook, methods=["POST"])])
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = ""

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "webhook receiver did not start"
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/hook"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    async def _hook(self, request: Request) -> Response:
        self.calls.append((dict(request.headers), await request.body()))
        return Response(status_code=200)

    async def events(
        self, verify: Callable[[dict[str, str], bytes], PayoutEvent], key: str, count: int
    ) -> list[PayoutEvent]:
        """The verified events about ``key``, once at least ``count`` have arrived."""
        deadline = time.monotonic() + 5
        while True:
            # verify_webhook may fetch the certificate (blocking): keep the loop free.
            verified = [await asyncio.to_thread(verify, h, b) for h, b in list(self.calls)]
            found = [e for e in verified if e.payout_key == key]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.05)
