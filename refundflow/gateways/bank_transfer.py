"""Refunds paid as credit transfers from the merchant's bank account (gateway ``bank_transfer``).

The bank's JSON API (our design, after ISO 20022 credit transfers):

``POST /v1/credit-transfers/batches`` takes ``{"batch_id", "debtor_account", "transfers": [...]}``;
each transfer carries ``end_to_end_id`` (our payout key: the bank's idempotency handle),
``amount`` ``{"value": "12.34", "currency": "EUR"}`` in major units, the ``creditor``
(name, account number, bank code, bank name, country) and ``remittance_information``. The answer
lists each transfer with ``status``: ``ACCEPTED`` (in clearing), ``SETTLED`` (credited;
``bank_reference`` is the clearing reference), ``RETURNED`` (bounced back by the receiving bank)
or ``REJECTED`` (refused at intake), with an ISO 20022 ``reason_code`` (AC01 invalid account,
AC04 closed account, AC06 blocked, AM04 insufficient funds, AM05 duplicate, RC01 bad bank code).
``GET /v1/credit-transfers/{end_to_end_id}`` answers the same object, or 404.

Requests are signed with the shared API secret: ``X-Bank-Client: <client_id>``,
``X-Bank-Timestamp: <unix seconds>`` and ``X-Bank-Signature: v1=<hex>``, the hex being
HMAC-SHA256 over ``timestamp \\n METHOD \\n path?query \\n sha256hex(body)``. The bank refuses a
timestamp more than 300 s away from its clock. Its notifications (``credit_transfer.settled``,
``credit_transfer.returned``...) carry ``X-Bank-Signature: t=<unix seconds>,v1=<hex>`` with
HMAC-SHA256 of ``"{t}." + body`` under the webhook secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, SecretStr

from refundflow.domain.errors import DomainError
from refundflow.domain.money import exponent, from_major
from refundflow.domain.states import PayoutEvent, PayoutStatus
from refundflow.gateways.base import (
    WEBHOOK_TOLERANCE_S,
    GatewayError,
    GatewayTimeout,
    PayoutInstruction,
    PayoutResult,
    check_sent_time,
)

CLIENT_HEADER = "X-Bank-Client"
TIMESTAMP_HEADER = "X-Bank-Timestamp"
SIGNATURE_HEADER = "X-Bank-Signature"
BATCHES_PATH = "/v1/credit-transfers/batches"
TRANSFERS_PATH = "/v1/credit-transfers/"
EVENTS = frozenset(
    {"credit_transfer.accepted", "credit_transfer.settled", "credit_transfer.returned"}
)
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class BankTransferConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    api_base: str
    client_id: str
    api_secret: SecretStr
    """Signs our requests (shared with the bank)."""
    webhook_secret: SecretStr
    """Signs the bank's notifications to us."""
    debtor_account: str
    """The merchant's account at the bank that refunds are paid from."""
    timeout_s: float = 10.0
    webhook_tolerance_s: float = WEBHOOK_TOLERANCE_S


def request_signature(secret: str, timestamp: str, method: str, target: str, body: bytes) -> str:
    """``target`` is the request path with its query string, exactly as sent."""
    canonical = "\n".join((timestamp, method.upper(), target, hashlib.sha256(body).hexdigest()))
    return hmac.new(secret.encode(), canonical.encode(), hashlib.sha256).hexdigest()


def webhook_signature(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def major(amount: int, currency: str) -> str:
    """Minor units to the ISO 20022 decimal amount, exactly (``1234`` EUR -> ``"12.34"``)."""
    digits = exponent(currency)
    if digits == 0:
        return str(amount)
    whole, rest = divmod(amount, 10**digits)
    return f"{whole}.{rest:0{digits}d}"


class BankTransferGateway:
    name = "bank_transfer"

    def __init__(
        self,
        config: BankTransferConfig,
        *,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self._base = config.api_base.rstrip("/")
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(config.timeout_s), transport=transport
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    # ------------------------------------------------------------------ Gateway protocol
    async def refund(self, instruction: PayoutInstruction) -> PayoutResult:
        account = instruction.bank_account
        if account is None:
            return PayoutResult(
                status=PayoutStatus.FAILED_PERMANENT,
                code="MISSING_ACCOUNT",
                message="a bank transfer needs the customer's bank account",
            )
        transfer = {
            "end_to_end_id": instruction.payout_key,
            "amount": {
                "value": major(instruction.amount, instruction.currency),
                "currency": instruction.currency.upper(),
            },
            "creditor": {
                "name": account.holder_name,
                "account_number": account.account_number,
                "bank_code": account.bank_code,
                "bank_name": account.bank_name,
                "country": account.country,
            },
            "remittance_information": f"Refund {instruction.refund_id}"[:140],
        }
        batch = {
            "batch_id": instruction.payout_key,
            "debtor_account": self.config.debtor_account,
            "transfers": [transfer],
        }
        response = await self._send("POST", BATCHES_PATH, batch)
        if response.is_success:
            answered = response.json().get("transfers") or []
            mine = [t for t in answered if t.get("end_to_end_id") == instruction.payout_key]
            if not mine:
                raise GatewayTimeout("bank answered the batch without our transfer")
            return _result(mine[0])
        code, text = _error(response)
        if response.status_code in (400, 422):
            return PayoutResult(status=PayoutStatus.FAILED_PERMANENT, code=code, message=text)
        raise GatewayError(f"bank {response.status_code} {code}: {text}")

    async def query(self, instruction: PayoutInstruction) -> PayoutResult:
        response = await self._send(
            "GET", TRANSFERS_PATH + quote(instruction.payout_key, safe=""), None
        )
        if response.status_code == 404:
            return PayoutResult(
                status=PayoutStatus.NOT_FOUND,
                message="the bank has no transfer with this reference",
            )
        if response.is_success:
            return _result(response.json())
        code, text = _error(response)
        raise GatewayError(f"bank lookup {response.status_code} {code}: {text}")

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> PayoutEvent:
        header = next((v for k, v in headers.items() if k.lower() == SIGNATURE_HEADER.lower()), "")
        fields: dict[str, list[str]] = {}
        for item in header.split(","):
            key, _, value = item.strip().partition("=")
            fields.setdefault(key, []).append(value)
        stamps, given = fields.get("t", []), fields.get("v1", [])
        if len(stamps) != 1 or not stamps[0].isdigit() or not given:
            raise ValueError(f"bank webhook without a well-formed {SIGNATURE_HEADER} header")
        stamp = int(stamps[0])
        expected = webhook_signature(self.config.webhook_secret.get_secret_value(), stamp, body)
        # Any matching v1 passes, so the bank can rotate the secret without a gap.
        if not any(hmac.compare_digest(expected, g) for g in given):
            raise ValueError("bank webhook signature does not verify")
        check_sent_time("bank", stamp, self.clock(), self.config.webhook_tolerance_s)
        try:
            event = json.loads(body)
        except ValueError as exc:
            raise ValueError("bank webhook body is not JSON") from exc
        kind = event.get("type", "") if isinstance(event, dict) else ""
        transfer = event.get("transfer") if isinstance(event, dict) else None
        if kind not in EVENTS or not isinstance(transfer, dict):
            raise ValueError(f"bank event {kind!r} carries no credit transfer")
        key = str(transfer.get("end_to_end_id") or "")
        if not key:
            raise ValueError("bank transfer without end_to_end_id")
        result = _result(transfer)
        amount = transfer.get("amount") or {}
        currency = str(amount.get("currency") or "")
        try:
            minor: int | None = from_major(str(amount.get("value")), currency)
        except (DomainError, ArithmeticError, ValueError, KeyError):
            minor, currency = None, ""
        return PayoutEvent(
            payout_key=key,
            status=result.status,
            provider_ref=result.provider_ref,
            trace_ref=result.trace_ref,
            code=result.code,
            event_id=str(event.get("event_id") or ""),
            amount=minor,
            currency=currency,
        )

    # ------------------------------------------------------------------ wire
    async def _send(self, method: str, path: str, payload: dict[str, Any] | None) -> httpx.Response:
        url = self._base + path
        body = b"" if payload is None else json.dumps(payload, separators=(",", ":")).encode()
        split = urlsplit(url)
        target = split.path + (f"?{split.query}" if split.query else "")
        stamp = str(int(self.clock()))
        secret = self.config.api_secret.get_secret_value()
        headers = {
            CLIENT_HEADER: self.config.client_id,
            TIMESTAMP_HEADER: stamp,
            SIGNATURE_HEADER: "v1=" + request_signature(secret, stamp, method, target, body),
        }
        if payload is not None:
            headers["Content-Type"] = "application/json"
        try:
            return await self._client.request(method, url, content=body, headers=headers)
        except _NOT_SENT as exc:
            raise GatewayError(f"bank unreachable: {exc!r}") from exc
        except httpx.TransportError as exc:
            if method == "GET":
                raise GatewayError(f"bank lookup cut short: {exc!r}") from exc
            # The instruction went out unanswered: the bank may have booked it.
            raise GatewayTimeout(f"bank did not answer: {exc!r}") from exc


def _result(transfer: Mapping[str, Any]) -> PayoutResult:
    status = str(transfer.get("status") or "")
    ref = str(transfer.get("transfer_id") or "")
    reason = str(transfer.get("reason_code") or "")
    if status == "SETTLED":
        return PayoutResult(
            status=PayoutStatus.SETTLED,
            provider_ref=ref,
            trace_ref=str(transfer.get("bank_reference") or ""),
            code=status,
            settled_at=_time(transfer.get("settled_at")),
        )
    if status == "ACCEPTED":
        return PayoutResult(status=PayoutStatus.ACCEPTED, provider_ref=ref, code=status)
    if status in ("RETURNED", "REJECTED"):
        return PayoutResult(
            status=PayoutStatus.FAILED_PERMANENT,
            provider_ref=ref,
            code=reason or status,
            message=str(transfer.get("reason") or status.lower()),
        )
    return PayoutResult(status=PayoutStatus.UNKNOWN, provider_ref=ref, code=status)


def _error(response: httpx.Response) -> tuple[str, str]:
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        return f"HTTP_{response.status_code}", response.text[:200]
    return str(error.get("code") or f"HTTP_{response.status_code}"), str(error.get("message") or "")


def _time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
