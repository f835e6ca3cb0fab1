"""``refundflow codec-server``: the Temporal UI's remote codec, so people allowed to see customer
data read decrypted payloads in the UI and everyone else sees ciphertext.

The UI POSTs ``{"payloads": [{"metadata": {<key>: <base64>}, "data": <base64>}]}`` (protobuf
``Payloads`` as JSON) to ``<endpoint>/decode`` and ``<endpoint>/encode`` and gets the same shape
back. Only the last path segment names the operation, so the endpoint may sit at any depth.

Who may decode (or encode): the holder of a refundflow API key with the ``ops`` or ``admin``
role, sent as ``Authorization: Bearer <key>`` (the UI's "pass access token" option, over HTTPS)
or, for the dev stack's UI which has no login, as the path segment before the operation
(``<endpoint>`` = ``http://127.0.0.1:8234/ui-key/<key>``). No key: 401; another role: 403; the
UI then shows the payloads still encrypted. The keys are checked against the refunds database
on every request, so a revoked key stops decoding at once. docs/privacy.md has the reasoning.

CORS answers only the configured UI origin (``REFUNDFLOW_CODEC_UI_ORIGIN``), with the headers
the UI sends (``Content-Type``, ``X-Namespace``, ``Authorization``), credentials allowed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from google.protobuf import json_format
from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from temporalio.api.common.v1 import Payload, Payloads

from refundflow.api.errors import problem
from refundflow.db.engine import session_scope
from refundflow.db.repository import verify_api_key
from refundflow.payload_codec import EncryptionCodec, PayloadKeyError

log = logging.getLogger("refundflow.codec_server")

ROLES = ("ops", "admin")
"""The roles that may read customer data in the UI."""
UI_HEADERS = ["Authorization", "Authorization-Extras", "Content-Type", "X-Namespace"]
KEY_SEGMENT = "ui-key"
MAX_BODY_BYTES = 4 * 1024 * 1024
"""A history page's payloads: Temporal caps a payload at 2 MB by default."""


def create_codec_app(codec: EncryptionCodec, engine: Engine, *, ui_origin: str) -> Starlette:
    """The codec server's ASGI app: ``codec`` holds the payload keys, ``engine`` the API keys."""

    def authorized(request: Request) -> Response | None:
        """None when the caller may use the codec; else the problem to answer."""
        token = _bearer(request) or _path_key(request)
        if not token:
            return problem(
                401, "unauthorized", "send 'Authorization: Bearer <ops or admin API key>'"
            )
        with session_scope(engine, readonly=True) as session:
            row = verify_api_key(session, token=token)
            holder = None if row is None else (row.role, row.name)
        if holder is None:
            return problem(401, "unauthorized", "unknown or revoked API key")
        role, name = holder
        if role not in ROLES:
            return problem(403, "forbidden", f"role {role} may not read customer data")
        log.info("codec %s for %s (%s)", request.url.path.rsplit("/", 1)[-1], name, role)
        return None

    def endpoint(transform: Callable[[Payload], Payload]) -> Callable[..., Any]:
        async def handle(request: Request) -> Response:
            refusal = await run_in_threadpool(authorized, request)
            if refusal is not None:
                return refusal
            body = await request.body()
            if len(body) > MAX_BODY_BYTES:
                return problem(413, "body_too_large", f"at most {MAX_BODY_BYTES} bytes")
            try:
                payloads = json_format.Parse(body, Payloads())
            except (json_format.ParseError, UnicodeDecodeError, RecursionError) as exc:
                return problem(400, "invalid_payloads", f"not Payloads JSON: {exc}"[:300])
            answer = Payloads(payloads=_each(transform, payloads.payloads))
            return JSONResponse(json_format.MessageToDict(answer))

        return handle

    def decode_one(payload: Payload) -> Payload:
        try:
            return codec.decrypt(payload)
        except PayloadKeyError:
            return payload  # its key is gone (rotated out): it stays encrypted in the UI

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    routes = [Route("/healthz", health, methods=["GET"])]
    for name, transform in (("decode", decode_one), ("encode", codec.encrypt)):
        handler = endpoint(transform)
        routes.append(Route(f"/{name}", handler, methods=["POST"]))
        routes.append(Route(f"/{{prefix:path}}/{name}", handler, methods=["POST"]))
    cors = Middleware(
        CORSMiddleware,
        allow_origins=[ui_origin.rstrip("/")],
        allow_methods=["POST"],
        allow_headers=UI_HEADERS,
        allow_credentials=True,
        max_age=600,
    )
    return Starlette(routes=routes, middleware=[cors])


def _each(transform: Callable[[Payload], Payload], payloads: Sequence[Payload]) -> list[Payload]:
    return [transform(p) for p in payloads]


def _bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _path_key(request: Request) -> str:
    """``.../ui-key/<key>/decode``: for a UI that cannot send headers (the dev server's)."""
    parts = request.url.path.strip("/").split("/")
    if len(parts) >= 3 and parts[-3] == KEY_SEGMENT:
        return parts[-2]
    return ""
