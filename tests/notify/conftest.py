"""Real servers for the notification tests: an SMTP server (aiosmtpd), the Twilio simulator
and a merchant's webhook receiver that checks signatures, all on 127.0.0.1.

The database fixtures (``db_url``, ``engine``: SQLite and PostgreSQL) come from tests/db.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from refundflow.devstack.ports import free_port
from refundflow.devstack.sms_simulator import ThreadServer, TwilioSimulator
from refundflow.notify.email import EmailSender
from refundflow.notify.merchant_webhook import InvalidSignature, verify_merchant_signature
from refundflow.notify.sms import TwilioSms
from tests.db.conftest import db_url, engine, postgres_problem  # noqa: F401  (fixtures)
from tests.payload_keys import DB_KEYRING

UNKNOWN_MAILBOX = "nobody@shop.example"
WEBHOOK_SECRET = "rfwh_test-secret"
# Seals merchants' webhook secrets in the test databases.
KEYRING = DB_KEYRING  # the one the tests' workers hold: a row sealed here opens there


@dataclass
class Mailbox:
    """What the SMTP server accepted: (envelope recipients, parsed message)."""

    received: list[tuple[list[str], EmailMessage]] = field(default_factory=list)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address == UNKNOWN_MAILBOX:
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        message = BytesParser(policy=policy.default).parsebytes(raw)
        assert isinstance(message, EmailMessage)
        self.received.append((list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"


@dataclass
class SmtpServer:
    controller: Controller
    mailbox: Mailbox
    port: int
    running: bool = True

    def stop(self) -> None:
        self.controller.stop()
        self.running = False

    def start(self) -> None:
        """Back up on the same port (a stopped controller cannot be restarted)."""
        self.controller = Controller(self.mailbox, hostname="127.0.0.1", port=self.port)
        self.controller.start()
        self.running = True

    def sender(self, **overrides: Any) -> EmailSender:
        options: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.port,
            "from_address": "Refunds <refunds@shop.example>",
            "timeout_s": 3.0,
        }
        return EmailSender(**(options | overrides))


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    server = SmtpServer(controller, mailbox, port)
    yield server
    if server.running:
        server.stop()


@pytest.fixture(scope="session")
def twilio() -> Iterator[tuple[TwilioSimulator, str]]:
    sim = TwilioSimulator(numbers=("+15005550006",))
    server = ThreadServer(sim.app()).start()
    yield sim, server.url
    server.stop()


@pytest.fixture
async def sms(twilio: tuple[TwilioSimulator, str]) -> Any:
    sim, url = twilio
    provider = TwilioSms(
        account_sid=sim.account_sid,
        auth_token=sim.auth_token,
        from_number="+15005550006",
        base_url=url,
        timeout_s=3.0,
    )
    yield provider
    await provider.aclose()


@dataclass
class Receiver:
    """A merchant's endpoint: verifies each request and keeps the events it accepted."""

    secret: str = WEBHOOK_SECRET
    events: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    url: str = ""

    async def endpoint(self, request: Request) -> JSONResponse:
        body = await request.body()
        try:
            event = verify_merchant_signature(self.secret, request.headers, body)
        except InvalidSignature as exc:
            self.rejected.append(str(exc))
            return JSONResponse({"error": str(exc)}, status_code=400)
        self.events.append(event)
        self.event_ids.append(request.headers["refundflow-event-id"])
        return JSONResponse({"received": True})


@pytest.fixture(scope="session")
def receiver_server() -> Iterator[Receiver]:
    receiver = Receiver()
    app = Starlette(routes=[Route("/hooks/refundflow", receiver.endpoint, methods=["POST"])])
    server = ThreadServer(app).start()
    receiver.url = f"{server.url}/hooks/refundflow"
    yield receiver
    server.stop()


@pytest.fixture
def receiver(receiver_server: Receiver) -> Receiver:
    receiver_server.events.clear()
    receiver_server.rejected.clear()
    receiver_server.event_ids.clear()
    return receiver_server
