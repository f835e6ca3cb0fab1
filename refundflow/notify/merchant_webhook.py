"""Signed webhooks to the merchant: every notice of the merchant's refunds, as JSON.

For merchants
-------------
Each notification is a ``POST`` of a JSON event to the URL you configured::

    {"id": "evt_…", "type": "notification.payout_sent", "created": 1791446400,
     "data": {"refund_id": "…", "order_id": "…", "channel": "customer",
              "template": "payout_sent", "locale": "zh-CN", "params": {…},
              "notice": {"subject": "…", "text": "…"}}}

(``notice`` only for customer notices: the text we sent, so you can show it too.) Headers:

- ``Refundflow-Event-Id``: the event id; a redelivery carries the same id, so process each
  id once.
- ``Refundflow-Signature: t=<unix seconds>,v1=<hex>``, where ``v1`` is
  ``HMAC-SHA256(key=<your webhook secret>, message="<t>.<raw request body>")``. During a
  secret rotation several ``v1=`` entries may appear; one matching entry is enough.

To verify: take the raw body bytes (before any JSON parsing), recompute the HMAC with ``t``
from the header, compare in constant time, and refuse a ``t`` more than 5 minutes from your
clock (replays). ``verify_merchant_signature`` below does exactly that. Answer any 2xx within
10 seconds; anything else, or no answer, is retried with backoff for a while, then given up.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from refundflow.notify.errors import DeliveryError

SIGNATURE_HEADER = "Refundflow-Signature"
EVENT_ID_HEADER = "Refundflow-Event-Id"
DEFAULT_TOLERANCE_S = 300


class InvalidSignature(ValueError):
    """The request is not a genuine, recent refundflow webhook."""


def _mac(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(secret: str, body: bytes, timestamp: int) -> str:
    return f"t={timestamp},v1={_mac(secret, timestamp, body)}"


def verify_merchant_signature(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    tolerance: int = DEFAULT_TOLERANCE_S,
    *,
    now: float | None = None,
) -> dict[str, Any]:
    """The event of a genuine webhook request, or :class:`InvalidSignature`.

    ``headers`` may be any mapping (header names are matched case-insensitively); ``body`` is
    the raw request body.
    """
    header = next((v for k, v in headers.items() if k.lower() == SIGNATURE_HEADER.lower()), None)
    if not header:
        raise InvalidSignature(f"no {SIGNATURE_HEADER} header")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        raise InvalidSignature(f"malformed {SIGNATURE_HEADER} header")
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        raise InvalidSignature("timestamp outside the tolerance: a replay or a skewed clock")
    expected = _mac(secret, timestamp, body)
    if not any(hmac.compare_digest(expected, c) for c in candidates):
        raise InvalidSignature("signature does not match the body")
    try:
        event = json.loads(body)
    except ValueError as exc:
        raise InvalidSignature("body is not JSON") from exc
    if not isinstance(event, dict):
        raise InvalidSignature("body is not a JSON object")
    return event


def encode_event(event: Mapping[str, Any]) -> bytes:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


class MerchantWebhookSender:
    def __init__(
        self,
        *,
        timeout_s: float = 10.0,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(timeout=timeout_s)
        self._clock = clock

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

    async def send(self, url: str, secret: str, event: Mapping[str, Any]) -> int:
        """POST ``event`` (it must carry its ``id``) signed with ``secret``; the HTTP status.

        Every failure is retryable: the merchant can fix the endpoint, and the event id lets
        them drop a duplicate."""
        body = encode_event(event)
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "refundflow-webhooks/1",
            EVENT_ID_HEADER: str(event["id"]),
            # Signed at sending time, so a redelivery hours later is not refused as stale.
            SIGNATURE_HEADER: signature_header(secret, body, int(self._clock())),
        }
        try:
            resp = await self._client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryError(
                f"merchant webhook unreachable: {type(exc).__name__}: {exc}",
                retryable=True,
                code="network",
            ) from exc
        if not 200 <= resp.status_code < 300:
            raise DeliveryError(
                f"merchant webhook answered HTTP {resp.status_code}",
                retryable=True,
                code=str(resp.status_code),
            )
        return resp.status_code
