"""PayPal refunds over the Payments v2 REST API (gateway ``paypal``).

Plain httpx rather than ``paypal-server-sdk``: that SDK is synchronous (requests underneath),
untyped, and only knows PayPal's two hosts, so it could neither run in our event loop nor talk
to the local simulator without patching its internals. The wire format is small: an OAuth2
client-credentials token, ``POST /v2/payments/captures/{id}/refund`` and
``GET /v2/payments/refunds/{id}``.

Idempotency: our payout key is the ``PayPal-Request-Id``. PayPal answers a repeated request id
with the refund that id created (its latest status) and never makes a second one.

Webhooks are verified here, without calling PayPal: the signature is SHA256withRSA over
``transmission_id|transmission_time|webhook_id|crc32(body)`` by the certificate behind
``PAYPAL-CERT-URL``. That certificate is fetched only from under the configured API base (or an
extra base given in the config), so a forged notification cannot bring its own key.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pydantic import BaseModel, ConfigDict, SecretStr

from refundflow.domain.errors import DomainError
from refundflow.domain.money import exponent
from refundflow.domain.states import PayoutEvent, PayoutStatus
from refundflow.gateways.base import (
    WEBHOOK_TOLERANCE_S,
    GatewayError,
    GatewayTimeout,
    PayoutInstruction,
    PayoutResult,
    check_sent_time,
)

API_BASE = "https://api-m.paypal.com"
CERTS_PATH = "/v1/notifications/certs/"
AUTH_ALGO = "SHA256withRSA"
REFUND_EVENTS = frozenset(
    {
        "PAYMENT.CAPTURE.REFUNDED",
        "PAYMENT.REFUND.PENDING",
        "PAYMENT.REFUND.COMPLETED",
        "PAYMENT.REFUND.FAILED",
        "PAYMENT.REFUND.CANCELLED",
    }
)
ZERO_DECIMAL = frozenset({"JPY", "HUF", "TWD"})
"""Currencies PayPal takes in whole units only (HUF and TWD have two ISO digits)."""
# PayPal issues that say "not now" rather than "never".
_RETRY_ISSUES = frozenset({"PREVIOUS_REQUEST_IN_PROGRESS", "INTERNAL_SERVICE_ERROR"})
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_TOKEN_MARGIN_S = 60.0
_VALUE = re.compile(r"^(\d{1,10})(?:\.(\d{1,3}))?$")


class PayPalConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    api_base: str = API_BASE
    client_id: str
    client_secret: SecretStr
    webhook_id: str
    """The id PayPal gave the webhook subscription; part of every signed message."""
    timeout_s: float = 10.0
    webhook_tolerance_s: float = WEBHOOK_TOLERANCE_S
    cert_url_bases: tuple[str, ...] = ()
    """More origins trusted to serve webhook certificates under ``/v1/notifications/certs/``
    (live PayPal serves them from ``https://api.paypal.com``); ``api_base`` always is."""
    webhook_certificates: dict[str, str] = {}
    """Certificates known ahead (cert URL -> PEM), used without a fetch. verify_webhook is
    synchronous, so a fetch blocks its caller; pinning avoids that where PayPal (or the
    simulator) runs in the caller's own event loop."""


def paypal_value(amount: int, currency: str) -> str:
    """Minor units to PayPal's ``value`` string, exactly (``1234`` USD -> ``"12.34"``)."""
    digits = exponent(currency)
    if currency.upper() in ZERO_DECIMAL:
        whole, rest = divmod(amount, 10**digits)
        if rest:
            raise DomainError(
                f"PayPal takes {currency} in whole units only", code="DECIMALS_NOT_SUPPORTED"
            )
        return str(whole)
    if digits == 0:
        return str(amount)
    whole, rest = divmod(amount, 10**digits)
    return f"{whole}.{rest:0{digits}d}"


def minor_from_value(value: str, currency: str) -> int:
    """PayPal's ``value`` string to minor units; DomainError with PayPal's issue if invalid."""
    match = _VALUE.match(value)
    if match is None:
        raise DomainError(f"{value!r} is not an amount", code="INVALID_PARAMETER_VALUE")
    whole, fraction = match.group(1), match.group(2) or ""
    digits = exponent(currency)
    if fraction and currency.upper() in ZERO_DECIMAL:
        raise DomainError(f"{currency} takes no decimals", code="DECIMALS_NOT_SUPPORTED")
    if len(fraction) > digits:
        raise DomainError(f"{currency} has {digits} decimals", code="DECIMAL_PRECISION")
    scale: int = 10**digits
    return int(whole) * scale + int(fraction.ljust(digits, "0") or "0")


class PayPalGateway:
    name = "paypal"

    def __init__(
        self,
        config: PayPalConfig,
        *,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self._base = config.api_base.rstrip("/")
        self._client = httpx.AsyncClient(
            base_url=self._base, timeout=httpx.Timeout(config.timeout_s), transport=transport
        )
        self._token = ""
        self._token_expires = 0.0
        self._token_lock = asyncio.Lock()
        self._certs: dict[str, x509.Certificate] = {
            url: x509.load_pem_x509_certificate(pem.encode())
            for url, pem in config.webhook_certificates.items()
        }
        self._certs_lock = threading.Lock()

    async def aclose(self) -> None:
        await self._client.aclose()

    # ------------------------------------------------------------------ Gateway protocol
    async def refund(self, instruction: PayoutInstruction) -> PayoutResult:
        return await self._post_refund(instruction, lookup=False)

    async def query(self, instruction: PayoutInstruction) -> PayoutResult:
        if instruction.provider_ref:
            path = "/v2/payments/refunds/" + quote(instruction.provider_ref, safe="")
            response = await self._send("GET", path, lookup=True)
            if response.status_code == 404:
                return PayoutResult(
                    status=PayoutStatus.NOT_FOUND,
                    code=_issue(response)[0] or "RESOURCE_NOT_FOUND",
                    message="paypal knows no refund with this id",
                )
            if response.is_success:
                return _result(response.json())
            raise GatewayError(
                f"paypal refund lookup {response.status_code}: {_describe(response)}"
            )
        # Payments v2 has no lookup by our key (custom_id/invoice_id are not searchable, and the
        # transaction search API lags by hours). PayPal's idempotency is the lookup: the same
        # PayPal-Request-Id returns the refund it created, at its latest status, and never a
        # second one. If the first request never arrived, this creates the refund, which is
        # what the caller does next with the same key and amount anyway.
        return await self._post_refund(instruction, lookup=True)

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> PayoutEvent:
        h = {k.lower(): v for k, v in headers.items()}
        transmission_id = h.get("paypal-transmission-id", "")
        transmission_time = h.get("paypal-transmission-time", "")
        signature = h.get("paypal-transmission-sig", "")
        cert_url = h.get("paypal-cert-url", "")
        if not (transmission_id and transmission_time and signature and cert_url):
            raise ValueError("paypal webhook without its transmission headers")
        if h.get("paypal-auth-algo", "") != AUTH_ALGO:
            raise ValueError(f"paypal webhook auth algorithm is not {AUTH_ALGO}")
        try:
            sent = datetime.fromisoformat(transmission_time)
        except ValueError as exc:
            raise ValueError("paypal webhook transmission time is not ISO 8601") from exc
        if sent.tzinfo is None:
            raise ValueError("paypal webhook transmission time has no zone")
        check_sent_time("paypal", sent.timestamp(), self.clock(), self.config.webhook_tolerance_s)
        certificate = self._certificate(cert_url)
        message = (
            f"{transmission_id}|{transmission_time}|{self.config.webhook_id}|{zlib.crc32(body)}"
        )
        key = certificate.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise ValueError("paypal webhook certificate does not hold an RSA key")
        try:
            key.verify(
                base64.b64decode(signature, validate=True),
                message.encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except (InvalidSignature, binascii.Error) as exc:
            raise ValueError("paypal webhook signature does not verify") from exc
        return _event(body)

    # ------------------------------------------------------------------ refunds
    async def _post_refund(self, instruction: PayoutInstruction, *, lookup: bool) -> PayoutResult:
        if not instruction.original_txn_id:
            return PayoutResult(
                status=PayoutStatus.FAILED_PERMANENT,
                code="MISSING_CAPTURE",
                message="a PayPal refund needs the capture id of the original payment",
            )
        try:
            value = paypal_value(instruction.amount, instruction.currency)
        except DomainError as exc:
            return PayoutResult(
                status=PayoutStatus.FAILED_PERMANENT, code=exc.code, message=str(exc)
            )
        body = {
            "amount": {"value": value, "currency_code": instruction.currency.upper()},
            "custom_id": instruction.payout_key,
            "invoice_id": instruction.payout_key,
            "note_to_payer": f"Refund {instruction.refund_id}"[:255],
        }
        path = f"/v2/payments/captures/{quote(instruction.original_txn_id, safe='')}/refund"
        response = await self._send(
            "POST",
            path,
            json_body=body,
            headers={
                "PayPal-Request-Id": instruction.payout_key,
                "Prefer": "return=representation",
            },
            lookup=lookup,
        )
        if response.is_success:
            return _checked(response.json(), instruction)
        name, issue, text = _issue(response)
        status = response.status_code
        if status == 429 or status >= 500 or issue in _RETRY_ISSUES or status in (401, 403, 409):
            # 401/403 after a fresh token: our credentials, not the refund, need fixing.
            raise GatewayError(f"paypal {status} {issue or name}: {text}")
        return PayoutResult(
            status=PayoutStatus.FAILED_PERMANENT,
            code=issue or name or f"HTTP_{status}",
            message=text,
        )

    async def _send(
        self,
        method: str,
        path: str,
        *,
        lookup: bool,
        json_body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """One API call with a bearer token; a 401 renews the token and tries once more (a
        rejected token means PayPal did nothing with the request)."""
        token = await self._access_token()
        for attempt in (1, 2):
            try:
                response = await self._client.request(
                    method,
                    path,
                    json=json_body,
                    headers={"Authorization": f"Bearer {token}", **(headers or {})},
                )
            except _NOT_SENT as exc:
                raise GatewayError(f"paypal unreachable: {exc!r}") from exc
            except httpx.TransportError as exc:
                if lookup or method == "GET":
                    raise GatewayError(f"paypal lookup cut short: {exc!r}") from exc
                # Sent and not answered: PayPal may have made the refund.
                raise GatewayTimeout(f"paypal did not answer: {exc!r}") from exc
            if response.status_code != 401 or attempt == 2:
                return response
            token = await self._access_token(stale=token)
        raise AssertionError("unreachable")

    async def _access_token(self, *, stale: str = "") -> str:
        async with self._token_lock:
            fresh = self._token and self._token != stale and self.clock() < self._token_expires
            if fresh:
                return self._token
            try:
                response = await self._client.post(
                    "/v1/oauth2/token",
                    data={"grant_type": "client_credentials"},
                    auth=(self.config.client_id, self.config.client_secret.get_secret_value()),
                    headers={"Accept": "application/json"},
                )
            except httpx.HTTPError as exc:
                raise GatewayError(f"paypal token request failed: {exc!r}") from exc
            if response.status_code != 200:
                raise GatewayError(f"paypal token {response.status_code}: {_describe(response)}")
            data = response.json()
            self._token = str(data["access_token"])
            lifetime = float(data.get("expires_in", 0))
            self._token_expires = self.clock() + max(lifetime - _TOKEN_MARGIN_S, 0.0)
            return self._token

    # ------------------------------------------------------------------ webhook certificates
    def _certificate(self, url: str) -> x509.Certificate:
        if url not in self.config.webhook_certificates and not self._trusted(url):
            raise ValueError(f"paypal webhook certificate URL {url!r} is not PayPal's")
        with self._certs_lock:
            cached = self._certs.get(url)
        if cached is None:
            # verify_webhook is synchronous; this fetch happens once per certificate URL.
            try:
                response = httpx.get(url, timeout=self.config.timeout_s)
                response.raise_for_status()
                cached = x509.load_pem_x509_certificate(response.content)
            except (httpx.HTTPError, ValueError) as exc:
                raise ValueError(f"paypal webhook certificate unavailable: {exc}") from exc
            with self._certs_lock:
                self._certs[url] = cached
        now = datetime.fromtimestamp(self.clock(), UTC)
        if not cached.not_valid_before_utc <= now <= cached.not_valid_after_utc:
            raise ValueError("paypal webhook certificate is not valid now")
        return cached

    def _trusted(self, url: str) -> bool:
        given = urlsplit(url)
        if given.query or given.fragment or given.username or given.password:
            return False
        if "%" in given.path or "/../" in given.path + "/" or "/./" in given.path + "/":
            return False
        for base in (self._base, *self.config.cert_url_bases):
            trusted = urlsplit(base.rstrip("/"))
            same_origin = (given.scheme, given.netloc.lower()) == (
                trusted.scheme,
                trusted.netloc.lower(),
            )
            if same_origin and given.path.startswith(trusted.path + CERTS_PATH):
                return True
        return False


def _result(obj: Mapping[str, Any]) -> PayoutResult:
    status = str(obj.get("status") or "")
    ref = str(obj.get("id") or "")
    reason = str((obj.get("status_details") or {}).get("reason") or "")
    if status == "COMPLETED":
        return PayoutResult(
            status=PayoutStatus.SETTLED,
            provider_ref=ref,
            trace_ref=ref,
            code=status,
            settled_at=_time(obj.get("update_time")),
        )
    if status == "PENDING":
        return PayoutResult(
            status=PayoutStatus.ACCEPTED, provider_ref=ref, trace_ref=ref, code=reason or status
        )
    if status in ("FAILED", "CANCELLED"):
        return PayoutResult(
            status=PayoutStatus.FAILED_PERMANENT, provider_ref=ref, code=reason or status
        )
    return PayoutResult(status=PayoutStatus.UNKNOWN, provider_ref=ref, code=status)


def _checked(obj: Mapping[str, Any], instruction: PayoutInstruction) -> PayoutResult:
    """A replayed PayPal-Request-Id returns the first refund whatever we sent this time."""
    amount = obj.get("amount") or {}
    if amount:
        currency = str(amount.get("currency_code") or "").upper()
        try:
            same = currency == instruction.currency.upper() and minor_from_value(
                str(amount.get("value") or ""), currency
            ) == (instruction.amount)
        except DomainError:
            same = False
        if not same:
            return PayoutResult(
                status=PayoutStatus.FAILED_PERMANENT,
                code="REQUEST_ID_REUSED",
                message=f"paypal answered with a refund of {amount} under this request id",
            )
    return _result(obj)


def _event(body: bytes) -> PayoutEvent:
    try:
        event = json.loads(body)
    except ValueError as exc:
        raise ValueError("paypal webhook body is not JSON") from exc
    kind = str(event.get("event_type") or "") if isinstance(event, dict) else ""
    if kind not in REFUND_EVENTS:
        raise ValueError(f"paypal event {kind!r} carries no refund")
    resource = event.get("resource") or {}
    key = str(resource.get("custom_id") or resource.get("invoice_id") or "")
    if not key:
        raise ValueError("paypal refund without custom_id: not one of ours")
    result = _result(resource)
    amount = resource.get("amount") or {}
    currency = str(amount.get("currency_code") or "")
    try:
        minor: int | None = minor_from_value(str(amount.get("value")), currency)
    except (DomainError, ValueError):
        minor, currency = None, ""
    return PayoutEvent(
        payout_key=key,
        status=result.status,
        provider_ref=result.provider_ref,
        trace_ref=result.trace_ref,
        code=result.code,
        event_id=str(event.get("id") or ""),
        amount=minor,
        currency=currency,
    )


def _issue(response: httpx.Response) -> tuple[str, str, str]:
    """(name, first issue, text) of a PayPal error answer."""
    try:
        data = response.json()
    except ValueError:
        return "", "", response.text[:200]
    if not isinstance(data, dict):
        return "", "", response.text[:200]
    details = data.get("details") or [{}]
    first = details[0] if isinstance(details, list) and details else {}
    issue = str(first.get("issue") or "") if isinstance(first, dict) else ""
    text = str(first.get("description") or "") if isinstance(first, dict) else ""
    name = str(data.get("name") or data.get("error") or "")
    return name, issue, text or str(data.get("message") or data.get("error_description") or "")


def _describe(response: httpx.Response) -> str:
    name, issue, text = _issue(response)
    return " ".join(part for part in (name, issue, text) if part)


def _time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
