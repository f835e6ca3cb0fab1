"""A local PayPal for capture refunds (Payments v2) and signed webhooks.

What it reproduces: ``POST /v1/oauth2/token`` (Basic auth, client credentials, expiring bearer
tokens; 401 ``invalid_token`` for unknown or expired ones), ``POST
/v2/payments/captures/{id}/refund`` with PayPal's JSON shapes and HATEOAS links,
``PayPal-Request-Id`` idempotency (a repeated id answers the refund it made, at its latest
status, whatever the new body says), ``Prefer: return=minimal|representation``, the 422
``UNPROCESSABLE_ENTITY`` issues ``REFUND_AMOUNT_EXCEEDED``, ``CAPTURE_FULLY_REFUNDED``,
``REFUND_TIME_LIMIT_EXCEEDED`` (180 days after the capture), ``DECIMALS_NOT_SUPPORTED``,
``DECIMAL_PRECISION``, ``REFUND_CAPTURE_CURRENCY_MISMATCH``, 404 ``INVALID_RESOURCE_ID``, 429
``RATE_LIMIT_REACHED`` (``throttle``), 500 ``INTERNAL_SERVER_ERROR`` (scripted ``transient``),
refunds ``PENDING`` that turn ``COMPLETED`` or ``FAILED``, ``GET /v2/payments/refunds/{id}``,
and webhooks (``PAYMENT.CAPTURE.REFUNDED``, ``PAYMENT.REFUND.PENDING``,
``PAYMENT.REFUND.FAILED``) signed SHA256withRSA over
``transmission_id|transmission_time|webhook_id|crc32(body)`` with a self-signed certificate it
serves under ``/v1/notifications/certs/``.

What it does not: orders, captures and the rest of the API (a capture is a ledger payment),
scopes, the 45-day expiry of request ids, PayPal's certificate chain (its certificate signs
itself), platform fees and ``PayPal-Auth-Assertion``. A repeat answers 200 (the first 201).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import secrets
import threading
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from refundflow.devstack.simulators import keys
from refundflow.devstack.simulators.core import (
    SimLedger,
    SimPayment,
    SimRefund,
    WebhookDue,
)
from refundflow.devstack.simulators.paypal_wire import (
    debug_id,
    iso,
    not_found,
    problem,
    refund_resource,
    transmission_headers,
    unprocessable,
    webhook_body,
)
from refundflow.devstack.simulators.records import refunded_total
from refundflow.domain.errors import DomainError
from refundflow.gateways.paypal import CERTS_PATH, PayPalConfig, minor_from_value

REFUND_WINDOW_S = 180 * 86400


class PayPalSimulator:
    name = "paypal"

    def __init__(
        self,
        ledger: SimLedger,
        *,
        notify_url: str = "",
        data_dir: Path | None = None,
        token_ttl_s: int = 32400,
    ) -> None:
        """Credentials and the webhook signing certificate are generated once under
        ``data_dir`` (default: the ledger's folder)."""
        self.ledger = ledger
        self.notify_url = notify_url
        self.token_ttl_s = token_ttl_s
        folder = data_dir or ledger.path.parent
        creds = keys.load_or_create_secrets(
            folder / "paypal_credentials.json",
            {"client_id": "AZsim", "client_secret": "EKsim", "webhook_id": "WH"},
        )
        self.client_id = creds["client_id"]
        self.client_secret = creds["client_secret"]
        self.webhook_id = creds["webhook_id"][:20].upper()
        self.identity = keys.load_or_create(folder, "paypal_webhook", common_name="paypal-sim")
        self.cert_id = "CERT-" + hashlib.sha256(self.identity.serial_no.encode()).hexdigest()[:24]
        self.base_url = ""
        self._tokens: dict[str, float] = {}
        self._lock = threading.Lock()
        self._throttled = 0

    # ------------------------------------------------------------------ Simulator protocol
    def app(self) -> ASGIApp:
        return Starlette(
            routes=[
                Route("/v1/oauth2/token", self._token, methods=["POST"]),
                Route("/v2/payments/captures/{capture_id}/refund", self._refund, methods=["POST"]),
                Route("/v2/payments/refunds/{refund_id}", self._show, methods=["GET"]),
                Route(CERTS_PATH + "{cert_id}", self._cert, methods=["GET"]),
            ]
        )

    def bind(self, base_url: str) -> None:
        self.base_url = base_url

    def webhook_request(self, due: WebhookDue) -> tuple[str, dict[str, str], bytes] | None:
        if not self.notify_url:
            return None
        return self.event_request(due.refund, event_id=due.event_id)

    def adapter_config(self, base_url: str, *, pin_certificate: bool = True) -> PayPalConfig:
        """``pin_certificate`` hands the adapter the webhook certificate up front, so it
        never fetches it (the dev stack may serve this simulator in the API's own loop)."""
        pinned = {}
        if pin_certificate:
            pinned = {base_url + CERTS_PATH + self.cert_id: self.identity.certificate_pem}
        return PayPalConfig(
            api_base=base_url,
            client_id=self.client_id,
            client_secret=SecretStr(self.client_secret),
            webhook_id=self.webhook_id,
            webhook_certificates=pinned,
        )

    # ------------------------------------------------------------------ test controls
    def throttle(self, requests: int) -> None:
        """The next ``requests`` refund calls meet 429 ``RATE_LIMIT_REACHED``."""
        with self._lock:
            self._throttled = requests

    def revoke_tokens(self) -> None:
        """Every access token issued so far stops working (as after a credential rotation)."""
        with self._lock:
            self._tokens.clear()

    @property
    def cert_url(self) -> str:
        return self.base_url + CERTS_PATH + self.cert_id

    def event_request(
        self, refund: SimRefund, *, event_id: str, at: float | None = None
    ) -> tuple[str, dict[str, str], bytes]:
        """The webhook PayPal sends about ``refund``, transmitted at ``at`` (default: now)."""
        when = iso(self.ledger.clock() if at is None else at)
        body = webhook_body(refund, self.render(refund), event_id=event_id, when=when)
        headers = transmission_headers(
            self.identity,
            body,
            when=when,
            webhook_id=self.webhook_id,
            cert_url=self.cert_url,
        )
        return self.notify_url, headers, body

    def render(self, refund: SimRefund) -> dict[str, Any]:
        return refund_resource(refund, self.base_url)

    # ------------------------------------------------------------------ endpoints
    async def _token(self, request: Request) -> Response:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        given_id, given_secret = "", ""
        if scheme.lower() == "basic":
            with contextlib.suppress(ValueError, binascii.Error):
                given_id, _, given_secret = base64.b64decode(value).decode().partition(":")
        form = dict(parse_qsl((await request.body()).decode()))
        ok = hmac.compare_digest(given_id, self.client_id) and hmac.compare_digest(
            given_secret, self.client_secret
        )
        if not ok:
            return JSONResponse(
                {"error": "invalid_client", "error_description": "Client Authentication failed"},
                status_code=401,
            )
        if form.get("grant_type") != "client_credentials":
            return JSONResponse(
                {"error": "unsupported_grant_type", "error_description": "Grant Type is NULL"},
                status_code=400,
            )
        token = "A21AA" + secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = self.ledger.clock() + self.token_ttl_s
        return JSONResponse(
            {
                "scope": "https://uri.paypal.com/services/payments/refund",
                "access_token": token,
                "token_type": "Bearer",
                "app_id": "APP-SIM" + self.client_id[-8:].upper(),
                "expires_in": self.token_ttl_s,
                "nonce": iso(self.ledger.clock()) + secrets.token_hex(8),
            }
        )

    async def _refund(self, request: Request) -> Response:
        denied = self._authorize(request)
        if denied is not None:
            return denied
        with self._lock:
            throttled, self._throttled = self._throttled > 0, max(self._throttled - 1, 0)
        if throttled:
            return problem(
                429, "RATE_LIMIT_REACHED", "Too many requests. Blocked due to rate limiting."
            )
        capture_id = request.path_params["capture_id"]
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return problem(
                400, "INVALID_REQUEST", "Request is not well-formed.", "MALFORMED_REQUEST_JSON"
            )
        payment = await asyncio.to_thread(self.ledger.payment, capture_id)
        if payment is None and not self.ledger.auto_payments:
            return not_found(capture_id)
        refunds = await asyncio.to_thread(self.ledger.refunds_of, capture_id)
        requested = body.get("amount")
        currency = payment.currency if payment else "USD"
        if isinstance(requested, dict):
            currency = str(requested.get("currency_code", "")).upper() or currency
            try:
                amount = minor_from_value(str(requested.get("value", "")), currency)
            except DomainError as exc:
                return unprocessable(exc.code)
        else:
            # No amount: the rest of the capture.
            amount = (payment.amount if payment else 0) - refunded_total(refunds)
        request_id = request.headers.get("paypal-request-id") or "noid-" + secrets.token_hex(12)
        extra = {
            "capture_id": capture_id,
            "custom_id": body.get("custom_id"),
            "invoice_id": body.get("invoice_id"),
            "note_to_payer": body.get("note_to_payer"),
        }
        now = self.ledger.clock()
        outcome = await asyncio.to_thread(
            self.ledger.create_refund,
            refund_no=request_id,
            payment_id=capture_id,
            amount=amount,
            currency=currency,
            check=lambda p, rs: _check(p, rs, amount, currency, now),
            make_refs=_make_refs,
            extra=extra,
        )
        if outcome.kind == "transient":
            return problem(500, "INTERNAL_SERVER_ERROR", "An internal server error occurred.")
        if outcome.kind == "refused":
            if outcome.code == "INVALID_RESOURCE_ID":
                return not_found(capture_id)
            return unprocessable(outcome.code)
        refund = outcome.refund
        assert refund is not None
        minimal = request.headers.get("prefer", "") != "return=representation"
        if outcome.kind == "existing":
            # PayPal answers a repeated request id with the latest state of what it made.
            latest = await asyncio.to_thread(self.ledger.query, refund.refund_no)
            return self._answer(latest or refund, 200, minimal=minimal)
        if outcome.hold:
            await self.ledger.hold()
        return self._answer(refund, 201, minimal=minimal)

    async def _show(self, request: Request) -> Response:
        denied = self._authorize(request)
        if denied is not None:
            return denied
        ref = request.path_params["refund_id"]
        refund_no = await asyncio.to_thread(self.ledger.refund_no_by_ref, ref)
        refund = None
        if refund_no is not None:
            refund = await asyncio.to_thread(self.ledger.query, refund_no)
        if refund is None:
            return not_found(ref)
        return JSONResponse(self.render(refund))

    async def _cert(self, request: Request) -> Response:
        if request.path_params["cert_id"] != self.cert_id:
            return not_found(request.path_params["cert_id"])
        return Response(self.identity.certificate_pem, media_type="application/x-pem-file")

    # ------------------------------------------------------------------ internals
    def _authorize(self, request: Request) -> Response | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        with self._lock:
            expires = self._tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if expires is not None and self.ledger.clock() < expires:
            return None
        return JSONResponse(
            {"error": "invalid_token", "error_description": "Token signature verification failed"},
            status_code=401,
        )

    def _answer(self, refund: SimRefund, status: int, *, minimal: bool) -> Response:
        full = self.render(refund)
        body = {k: full[k] for k in ("id", "status", "links")} if minimal else full
        return JSONResponse(body, status_code=status, headers={"Paypal-Debug-Id": debug_id()})


def dev_simulator(
    data_dir: Path, *, notify_url: str, settlement: str = "seconds:3"
) -> PayPalSimulator:
    folder = data_dir / "simulators" / "paypal"
    ledger = SimLedger(folder / "ledger.db", settlement=settlement, auto_payments=True)
    return PayPalSimulator(ledger, notify_url=notify_url, data_dir=folder)


def _check(
    payment: SimPayment | None,
    refunds: list[SimRefund],
    amount: int,
    currency: str,
    now: float,
) -> str | None:
    if payment is None:
        return "INVALID_RESOURCE_ID"
    if currency != payment.currency:
        return "REFUND_CAPTURE_CURRENCY_MISMATCH"
    if now - payment.paid_at > REFUND_WINDOW_S:
        return "REFUND_TIME_LIMIT_EXCEEDED"
    remaining = payment.amount - refunded_total(refunds)
    if remaining <= 0:
        return "CAPTURE_FULLY_REFUNDED"
    if amount <= 0 or amount > remaining:
        return "REFUND_AMOUNT_EXCEEDED"
    return None


def _make_refs(refund_no: str) -> tuple[str, str]:
    digest = int(hashlib.sha256(f"paypal|{refund_no}".encode()).hexdigest(), 16)
    alphabet = "0123456789ABCDEFGHJKLMNPRSTUVWXY"
    ref = "".join(alphabet[(digest >> (5 * i)) & 31] for i in range(17))
    return ref, ref
