"""A local stand-in for Twilio's Messages API, for tests and the dev stack.

It speaks the same wire format as the real endpoint (form-encoded create, JSON resource or
JSON error with Twilio's codes, HTTP Basic auth) and keeps what it was sent in memory:

- ``POST /2010-04-01/Accounts/{sid}/Messages.json``: 201 + Message resource, or 400 with 21604
  (no To), 21603 (no From), 21602 (no Body), 21211 (To not E.164), 21606 (From not one of the
  account's numbers), 21617 (over 1600 characters), 21610 (recipient unsubscribed);
  401/20003 for bad credentials, 404/20404 for another account's URL;
- ``GET .../Messages/{MessageSid}.json``: the stored resource;
- ``fail_next(n, status=500 | 429)``: the next ``n`` creates fail as Twilio does when busy
  (20500 / 20429 with Retry-After), storing nothing.

Not reproduced: delivery receipts and status callbacks (messages stay "queued"), prices,
MMS, Messaging Services, API-key auth, pagination of the list.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import secrets
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qs

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

API = "/2010-04-01"
MAX_BODY = 1600
_E164 = re.compile(r"^\+[1-9]\d{1,14}$")
# GSM 03.38 basic set: a body made of these travels 160 characters a segment, otherwise UCS-2
# with 70 (Chinese text always is UCS-2).
_GSM = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "ÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)


def segments(body: str) -> int:
    single, multi = (160, 153) if set(body) <= _GSM else (70, 67)
    return 1 if len(body) <= single else -(-len(body) // multi)


@dataclass
class SimMessage:
    sid: str
    to: str
    from_: str
    body: str
    created_at: datetime
    status: str = "queued"
    extra: dict[str, Any] = field(default_factory=dict)


class TwilioSimulator:
    name = "twilio"

    def __init__(
        self,
        *,
        account_sid: str | None = None,
        auth_token: str | None = None,
        numbers: tuple[str, ...] = ("+15005550006",),
    ) -> None:
        self.account_sid = account_sid or "AC" + secrets.token_hex(16)
        self.auth_token = auth_token or secrets.token_hex(16)
        self.numbers = numbers
        self.unsubscribed: set[str] = set()
        self.requests = 0
        self._messages: dict[str, SimMessage] = {}
        self._failures: list[int] = []
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ test control
    @property
    def messages(self) -> list[SimMessage]:
        with self._lock:
            return list(self._messages.values())

    def fail_next(self, n: int = 1, *, status: int = 500) -> None:
        if status not in (429, 500, 503):
            raise ValueError("Twilio answers busy with 429, 500 or 503")
        with self._lock:
            self._failures.extend([status] * n)

    # ---------------------------------------------------------------------- the API
    def app(self) -> ASGIApp:
        base = f"{API}/Accounts/{{account}}"
        return Starlette(
            routes=[
                Route(f"{base}/Messages.json", self._create, methods=["POST"]),
                Route(f"{base}/Messages/{{sid}}.json", self._fetch, methods=["GET"]),
            ]
        )

    async def _create(self, request: Request) -> Response:
        refused = self._authorize(request)
        if refused is not None:
            return refused
        with self._lock:
            self.requests += 1
            failure = self._failures.pop(0) if self._failures else None
        if failure == 429:
            return _error(429, 20429, "Too Many Requests", headers={"Retry-After": "1"})
        if failure is not None:
            return _error(failure, 20500, "Internal Server Error")
        # Twilio takes application/x-www-form-urlencoded; parsed here without python-multipart.
        form = parse_qs((await request.body()).decode(), keep_blank_values=True)
        to, from_, body = (form.get(k, [""])[0] for k in ("To", "From", "Body"))
        problem = self._validate(to, from_, body)
        if problem is not None:
            return problem
        msg = SimMessage(
            sid="SM" + secrets.token_hex(16),
            to=to,
            from_=from_,
            body=body,
            created_at=datetime.now(UTC),
        )
        with self._lock:
            self._messages[msg.sid] = msg
        return JSONResponse(self._resource(msg), status_code=201)

    async def _fetch(self, request: Request) -> Response:
        refused = self._authorize(request)
        if refused is not None:
            return refused
        with self._lock:
            msg = self._messages.get(request.path_params["sid"])
        if msg is None:
            return _error(404, 20404, f"The requested resource {request.url.path} was not found")
        return JSONResponse(self._resource(msg))

    def _authorize(self, request: Request) -> Response | None:
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            user = password = ""
        ok = scheme.lower() == "basic" and user == self.account_sid
        if not ok or not secrets.compare_digest(password, self.auth_token):
            return _error(401, 20003, "Authenticate", headers={"WWW-Authenticate": "Basic"})
        if request.path_params["account"] != self.account_sid:
            return _error(404, 20404, f"The requested resource {request.url.path} was not found")
        return None

    def _validate(self, to: str, from_: str, body: str) -> Response | None:
        if not to:
            return _error(400, 21604, "A 'To' phone number is required.")
        if not from_:
            return _error(400, 21603, "A 'From' phone number is required.")
        if not body:
            return _error(400, 21602, "Message body is required.")
        if not _E164.match(to):
            return _error(400, 21211, f"Invalid 'To' Phone Number: {to}")
        if from_ not in self.numbers:
            return _error(
                400,
                21606,
                f"The From phone number {from_} is not a valid, SMS-capable inbound phone "
                "number or short code for your account.",
            )
        if len(body) > MAX_BODY:
            return _error(
                400, 21617, "The concatenated message body exceeds the 1600 character limit."
            )
        if to in self.unsubscribed:
            return _error(400, 21610, "Attempt to send to unsubscribed recipient")
        return None

    def _resource(self, msg: SimMessage) -> dict[str, Any]:
        uri = f"{API}/Accounts/{self.account_sid}/Messages/{msg.sid}.json"
        stamp = format_datetime(msg.created_at, usegmt=True)
        return {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": msg.body,
            "date_created": stamp,
            "date_sent": None,
            "date_updated": stamp,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": msg.from_,
            "messaging_service_sid": None,
            "num_media": "0",
            "num_segments": str(segments(msg.body)),
            "price": None,
            "price_unit": "USD",
            "sid": msg.sid,
            "status": msg.status,
            "subresource_uris": {"media": uri.replace(".json", "/Media.json")},
            "to": msg.to,
            "uri": uri,
        }


def _error(
    status: int, code: int, message: str, *, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return JSONResponse(body, status_code=status, headers=headers)


class ThreadServer:
    """Serves an ASGI app on 127.0.0.1 from a background thread (tests, the dev stack)."""

    def __init__(self, app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        config = uvicorn.Config(
            app, host=host, port=port, log_level="warning", lifespan="off", access_log=False
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None
        self._started = threading.Event()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ThreadServer:
        self._thread = threading.Thread(target=self._run, name="thread-server", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout=15) or not self._server.started:
            raise RuntimeError(f"server on {self.host}:{self.port} did not start")
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        task = asyncio.create_task(self._server.serve())
        try:
            while not self._server.started and not task.done():
                await asyncio.sleep(0.01)
            if self._server.started and self.port == 0:
                sockets = [s for server in self._server.servers for s in server.sockets]
                self.port = int(sockets[0].getsockname()[1])
        finally:
            self._started.set()
        await task
