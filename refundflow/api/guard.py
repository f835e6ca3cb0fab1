"""The outermost layer of the app: every response carries an ``X-Request-ID``, request bodies
are bounded before anything parses them, and an error nothing else handled becomes a
problem+json 500 that names the request id and nothing of the internals."""

from __future__ import annotations

import json
import logging
import re
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from refundflow import logs
from refundflow.api.errors import problem_body

log = logging.getLogger("refundflow.api")

REQUEST_ID_HEADER = "x-request-id"
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
"""A caller's own request id is kept (it ties their logs to ours) when it is this plain."""


class BodyTooLarge(Exception):
    pass


class RequestGuard:
    """Pure ASGI middleware (a ``BaseHTTPMiddleware`` would buffer responses and lose the
    exception): request ids, the body limit and the last-resort error answer."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        # Every log line of this request carries its id (refundflow.logs).
        logs.request_id.set(request_id)
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"x-request-id"]
                message = {**message, "headers": [*headers, (b"x-request-id", request_id.encode())]}
            await send(message)

        try:
            body = await self._read_body(scope, receive)
        except BodyTooLarge:
            await _send_problem(
                send_with_id,
                problem_body(
                    413,
                    "body_too_large",
                    f"request bodies are limited to {self.max_body_bytes} bytes",
                ),
            )
            return
        try:
            await self.app(scope, _replay(body, receive), send_with_id)
        except Exception:
            log.exception("unhandled error in request %s", request_id)
            if started:
                raise  # the client has a partial answer already; the server closes it
            await _send_problem(
                send_with_id,
                problem_body(
                    500,
                    "internal_error",
                    "the server failed to answer this request; quote the request id when"
                    " reporting it",
                    request_id=request_id,
                ),
            )

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        """The whole body, refused as soon as it is known to be too large: at once from a
        ``Content-Length`` past the limit, otherwise as the chunks arrive."""
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body_bytes:
                raise BodyTooLarge
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client went away; the app sees an empty body and its own receive
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise BodyTooLarge
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            given = value.decode("latin-1")
            if _CLIENT_REQUEST_ID.fullmatch(given):
                return given
    return uuid.uuid4().hex


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: the disconnect, when it comes

    return replay


async def _send_problem(send: Send, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": body["status"],
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
