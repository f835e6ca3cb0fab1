"""Card refunds through Stripe (gateway ``stripe``; it also serves the ``card`` route).

The official ``stripe`` SDK does the wire work: form-encoded ``POST /v1/refunds`` with our
payout key as the ``Idempotency-Key``, its async httpx client, and its webhook signature check.
The module is not called ``stripe.py`` so that it never shadows the SDK package.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx
import stripe
from pydantic import BaseModel, ConfigDict, SecretStr

from refundflow.domain.states import PayoutEvent, PayoutStatus
from refundflow.gateways.base import (
    WEBHOOK_TOLERANCE_S,
    GatewayError,
    GatewayMismatch,
    GatewayTimeout,
    PayoutInstruction,
    PayoutResult,
    check_sent_time,
)

API_BASE = "https://api.stripe.com"
SIGNATURE_HEADER = "Stripe-Signature"
REFUND_EVENTS = frozenset(
    {"charge.refund.updated", "refund.updated", "refund.failed", "refund.created"}
)
_ACCEPTED = frozenset({"pending", "requires_action"})
# Errors that say the request never took effect; connection-level failures are sorted apart
# by their httpx cause (see _connection_error).
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class StripeConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    api_base: str = API_BASE
    secret_key: SecretStr
    webhook_secret: SecretStr
    """The endpoint's signing secret (``whsec_...``)."""
    timeout_s: float = 10.0
    webhook_tolerance_s: float = WEBHOOK_TOLERANCE_S
    api_version: str | None = None
    """Pin an API version; None uses the SDK's own."""


class StripeGateway:
    name = "stripe"

    def __init__(self, config: StripeConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self._http = stripe.HTTPXClient(timeout=config.timeout_s)
        self._client = stripe.StripeClient(
            config.secret_key.get_secret_value(),
            base_addresses={"api": config.api_base.rstrip("/")},
            http_client=self._http,
            stripe_version=config.api_version,
            # The workflow owns retries (with the same key); SDK retries would hide timeouts.
            max_network_retries=0,
        )

    async def aclose(self) -> None:
        # The SDK leaves close_async unannotated; give it its (known) type.
        close: Callable[[], Awaitable[None]] = self._http.close_async
        await close()

    # ------------------------------------------------------------------ Gateway protocol
    async def refund(self, instruction: PayoutInstruction) -> PayoutResult:
        payment = _payment_param(instruction)
        if payment is None:
            return PayoutResult(
                status=PayoutStatus.FAILED_PERMANENT,
                code="MISSING_PAYMENT",
                message="a Stripe refund needs the original payment_intent (pi_) or charge (ch_)",
            )
        params: dict[str, Any] = {
            **payment,
            "amount": instruction.amount,
            # Stripe refunds in the charge's currency and takes none from us; the one we expect
            # is kept beside our key, for whoever reads the refund in Stripe's dashboard.
            "metadata": {
                "payout_key": instruction.payout_key,
                "refund_id": instruction.refund_id,
                "currency": instruction.currency,
            },
        }
        if instruction.reason.upper() == "DUPLICATE_PAYMENT":
            params["reason"] = "duplicate"
        elif instruction.reason:
            params["reason"] = "requested_by_customer"
        try:
            refund = await self._client.v1.refunds.create_async(
                params,  # type: ignore[arg-type]
                {"idempotency_key": instruction.payout_key},
            )
        except stripe.StripeError as exc:
            return _refused(exc)
        return _checked(refund.to_dict(), instruction)

    async def query(self, instruction: PayoutInstruction) -> PayoutResult:
        if instruction.provider_ref:
            try:
                refund = await self._client.v1.refunds.retrieve_async(instruction.provider_ref)
            except stripe.StripeError as exc:
                return _query_failed(exc)
            return _checked(refund.to_dict(), instruction)
        payment = _payment_param(instruction)
        if payment is None:
            # refund() never calls Stripe without a payment, so nothing can exist.
            return PayoutResult(status=PayoutStatus.NOT_FOUND, code="MISSING_PAYMENT")
        # Stripe has no lookup by idempotency key; the payment's refunds carry our key in
        # their metadata, so one of them is ours if the create ever took effect.
        starting_after: str | None = None
        while True:
            params: dict[str, Any] = {**payment, "limit": 100}
            if starting_after:
                params["starting_after"] = starting_after
            try:
                page = await self._client.v1.refunds.list_async(params)  # type: ignore[arg-type]
            except stripe.StripeError as exc:
                return _query_failed(exc)
            for refund in page.data:
                obj = refund.to_dict()
                if (obj.get("metadata") or {}).get("payout_key") == instruction.payout_key:
                    return _checked(obj, instruction)
            if not page.has_more or not page.data:
                return PayoutResult(
                    status=PayoutStatus.NOT_FOUND, message="no refund of the payment has this key"
                )
            starting_after = page.data[-1].id

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> PayoutEvent:
        header = _header(headers, SIGNATURE_HEADER)
        secret = self.config.webhook_secret.get_secret_value()
        try:
            # The SDK checks the HMAC (any of several v1 values, for secret rotation); the
            # time window is checked below against our clock, in both directions.
            stripe.WebhookSignature.verify_header(body.decode("utf-8"), header, secret)
        except (stripe.SignatureVerificationError, UnicodeDecodeError) as exc:
            raise ValueError(f"stripe webhook signature does not verify: {exc}") from exc
        check_sent_time("stripe", _timestamp(header), self.clock(), self.config.webhook_tolerance_s)
        try:
            event = json.loads(body)
        except ValueError as exc:
            raise ValueError("stripe webhook body is not JSON") from exc
        kind = event.get("type", "") if isinstance(event, dict) else ""
        if kind not in REFUND_EVENTS:
            raise ValueError(f"stripe event {kind!r} carries no refund")
        obj = event.get("data", {}).get("object", {})
        if not isinstance(obj, dict) or obj.get("object") != "refund":
            raise ValueError(f"stripe event {kind!r} has no refund object")
        key = (obj.get("metadata") or {}).get("payout_key", "")
        if not key:
            raise ValueError("stripe refund without metadata.payout_key: not one of ours")
        result = _result_from(obj)
        return PayoutEvent(
            payout_key=str(key),
            status=result.status,
            provider_ref=result.provider_ref,
            trace_ref=result.trace_ref,
            code=result.code,
            event_id=str(event.get("id") or ""),
            # Stripe's amount is in the currency's smallest unit, as ours.
            amount=obj["amount"] if isinstance(obj.get("amount"), int) else None,
            currency=str(obj.get("currency") or "").upper(),
        )


def _payment_param(instruction: PayoutInstruction) -> dict[str, str] | None:
    txn = instruction.original_txn_id
    if txn.startswith("ch_") or txn.startswith("py_"):
        return {"charge": txn}
    if txn.startswith("pi_"):
        return {"payment_intent": txn}
    return None


def _result_from(obj: Mapping[str, Any]) -> PayoutResult:
    status = str(obj.get("status") or "")
    ref = str(obj.get("id") or "")
    details = obj.get("destination_details") or {}
    card = details.get("card") or {} if isinstance(details, Mapping) else {}
    # The acquirer reference number appears once the card network has it.
    arn = str(card.get("reference") or "") if isinstance(card, Mapping) else ""
    if status == "succeeded":
        return PayoutResult(status=PayoutStatus.SETTLED, provider_ref=ref, trace_ref=arn)
    if status in _ACCEPTED:
        return PayoutResult(
            status=PayoutStatus.ACCEPTED, provider_ref=ref, trace_ref=arn, code=status
        )
    if status == "failed":
        reason = str(obj.get("failure_reason") or "unknown")
        return PayoutResult(
            status=PayoutStatus.FAILED_PERMANENT,
            provider_ref=ref,
            code=reason,
            message="the card network returned the refund",
        )
    if status == "canceled":
        return PayoutResult(status=PayoutStatus.FAILED_PERMANENT, provider_ref=ref, code=status)
    return PayoutResult(
        status=PayoutStatus.UNKNOWN, provider_ref=ref, code=status, message="unknown status"
    )


def _checked(obj: Mapping[str, Any], instruction: PayoutInstruction) -> PayoutResult:
    """Stripe's refund under our key, if it is the one we asked for. Stripe refuses a key reused
    with other parameters (``idempotency_error``), and refunds in the charge's currency: a refund
    of another amount or currency means the charge is not what our order says, and money may
    have moved. Neither a resend nor a fallback is safe then (GatewayMismatch)."""
    amount, currency = obj.get("amount"), str(obj.get("currency") or "").upper()
    if amount != instruction.amount or currency != instruction.currency.upper():
        raise GatewayMismatch(
            f"stripe refund {obj.get('id')} under key {instruction.payout_key} is"
            f" {amount} {obj.get('currency')}, we asked for {instruction.amount}"
            f" {instruction.currency}"
        )
    return _result_from(obj)


def _refused(exc: stripe.StripeError) -> PayoutResult:
    """A create that Stripe answered with an error: retryable, unknown, or refused for good."""
    if isinstance(exc, stripe.APIConnectionError):
        raise _connection_error(exc) from exc
    status = exc.http_status or 0
    if status == 0:
        raise GatewayTimeout(f"stripe gave no readable answer: {exc}") from exc
    if isinstance(exc, stripe.RateLimitError) or status == 409 or status >= 500:
        # 409 is another request with this key still in flight; 5xx and 429 made no refund.
        raise GatewayError(f"stripe {status}: {exc.user_message or exc}") from exc
    if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
        # Our configuration, not the customer's refund, is wrong: retry once it is fixed.
        raise GatewayError(f"stripe refused our credentials: {exc.user_message or exc}") from exc
    if isinstance(exc, stripe.IdempotencyError):
        code = "idempotency_error"
    else:
        code = str(exc.code or _error_field(exc, "type") or f"http_{status}")
    return PayoutResult(
        status=PayoutStatus.FAILED_PERMANENT, code=code, message=exc.user_message or str(exc)
    )


def _query_failed(exc: stripe.StripeError) -> PayoutResult:
    if isinstance(exc, stripe.APIConnectionError):
        # A lookup changes nothing, so a query cut short is simply worth repeating.
        raise GatewayError(f"stripe query failed: {exc.user_message or exc}") from exc
    if isinstance(exc, stripe.InvalidRequestError) and exc.code == "resource_missing":
        return PayoutResult(
            status=PayoutStatus.NOT_FOUND, code="resource_missing", message=str(exc.user_message)
        )
    raise GatewayError(f"stripe query failed ({exc.http_status}): {exc.user_message}") from exc


def _connection_error(exc: stripe.APIConnectionError) -> Exception:
    cause = exc.__cause__
    if isinstance(cause, _NOT_SENT):
        return GatewayError(f"stripe unreachable: {cause!r}")
    # A read timeout or a dropped connection after the request went out: Stripe may have
    # created the refund. The caller queries before sending again.
    return GatewayTimeout(f"stripe did not answer: {cause!r}")


def _error_field(exc: stripe.StripeError, name: str) -> str:
    body = exc.json_body if isinstance(exc.json_body, dict) else {}
    error = body.get("error") if isinstance(body.get("error"), dict) else {}
    return str((error or {}).get(name) or "")


def _header(headers: Mapping[str, str], name: str) -> str:
    wanted = name.lower()
    return next((v for k, v in headers.items() if k.lower() == wanted), "")


def _timestamp(header: str) -> int:
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and value.isdigit():
            return int(value)
    raise ValueError("stripe signature header without a timestamp")
