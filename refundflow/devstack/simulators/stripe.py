"""A local Stripe for card refunds: ``/v1/refunds`` as the official SDK calls it.

What it reproduces: form-encoded bodies, secret-key auth (Bearer or Basic, 401 otherwise),
``Idempotency-Key`` semantics (same key and parameters replay the first answer with
``Idempotent-Replayed: true``; same key, other parameters: 400 ``idempotency_error``), refusals
with Stripe's codes (``charge_already_refunded``, ``amount_too_large``, ``resource_missing``,
``parameter_missing``), refunds that stay ``pending`` and later turn ``succeeded`` or ``failed``
with a ``failure_reason``, the card ARN in ``destination_details.card.reference`` once it is
available, lists by ``payment_intent``/``charge`` with cursor paging, and webhooks
(``refund.updated``/``refund.failed``) signed with ``Stripe-Signature: t=...,v1=...``.

A refund is in its payment's currency, as Stripe's are (the API takes no currency for a
charge's refund). The dev stack's simulator takes an unknown PaymentIntent as paid, in the
currency the refund's ``metadata[currency]`` names (USD without one).

What it does not: other resources (a payment is registered in the ledger, its charge is
``ch_<suffix>`` for ``pi_<suffix>``), key expiry after 24 hours, replay of error answers for a
key (a refused request is evaluated again), ``requires_action`` and ``canceled`` refunds,
Connect headers, API versions.
"""

from __future__ import annotations

import asyncio
import base64
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
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from refundflow.devstack.simulators import keys
from refundflow.devstack.simulators.core import (
    SimLedger,
    SimPayment,
    SimRefund,
    WebhookDue,
    digits_ref,
)
from refundflow.devstack.simulators.records import refunded_total
from refundflow.devstack.simulators.stripe_wire import (
    api_answer,
    api_error,
    event_body,
    no_such,
    refund_object,
    refusal,
    signature_headers,
)
from refundflow.gateways.stripe_card import StripeConfig


class StripeSimulator:
    name = "stripe"

    def __init__(
        self,
        ledger: SimLedger,
        *,
        notify_url: str = "",
        data_dir: Path | None = None,
    ) -> None:
        """Keys are generated once under ``data_dir`` (default: the ledger's folder)."""
        self.ledger = ledger
        self.notify_url = notify_url
        stored = keys.load_or_create_secrets(
            (data_dir or ledger.path.parent) / "stripe_keys.json",
            {"secret_key": "sk_test_", "webhook_secret": "whsec_"},
        )
        self.secret_key = stored["secret_key"]
        self.webhook_secret = stored["webhook_secret"]
        self.base_url = ""
        self._lock = threading.Lock()
        self._throttled = 0

    # ------------------------------------------------------------------ Simulator protocol
    def app(self) -> ASGIApp:
        return Starlette(
            routes=[
                Route("/v1/refunds", self._refunds, methods=["GET", "POST"]),
                Route("/v1/refunds/{refund_id}", self._retrieve, methods=["GET"]),
            ]
        )

    def bind(self, base_url: str) -> None:
        self.base_url = base_url

    def webhook_request(self, due: WebhookDue) -> tuple[str, dict[str, str], bytes] | None:
        if not self.notify_url:
            return None
        return self.event_request(due.refund, event_id=due.event_id)

    def adapter_config(self, base_url: str) -> StripeConfig:
        return StripeConfig(
            api_base=base_url,
            secret_key=SecretStr(self.secret_key),
            webhook_secret=SecretStr(self.webhook_secret),
        )

    # ------------------------------------------------------------------ test controls
    def throttle(self, requests: int) -> None:
        """The next ``requests`` refund creations meet 429 ``rate_limit``."""
        with self._lock:
            self._throttled = requests

    def event_request(
        self, refund: SimRefund, *, event_id: str, at: float | None = None
    ) -> tuple[str, dict[str, str], bytes]:
        """The webhook Stripe sends about ``refund``, signed at ``at`` (default: now)."""
        now = int(self.ledger.clock() if at is None else at)
        body = event_body(refund, self.render(refund), event_id=event_id, created=now)
        headers = signature_headers(self.webhook_secret, body, timestamp=now)
        return self.notify_url, headers, body

    def render(self, refund: SimRefund, *, as_created: bool = False) -> dict[str, Any]:
        """The refund object; ``as_created`` gives the first answer (what a replay returns)."""
        return refund_object(refund, as_created=as_created)

    # ------------------------------------------------------------------ endpoints
    async def _refunds(self, request: Request) -> Response:
        denied = self._authenticate(request)
        if denied is not None:
            return denied
        if request.method == "GET":
            return await self._list(request)
        return await self._create(request)

    async def _create(self, request: Request) -> Response:
        with self._lock:
            throttled, self._throttled = self._throttled > 0, max(self._throttled - 1, 0)
        if throttled:
            return api_error(429, "invalid_request_error", "Too many requests.", code="rate_limit")
        form = parse_qsl((await request.body()).decode(), keep_blank_values=True)
        params = dict(form)
        pi, ch = params.get("payment_intent", ""), params.get("charge", "")
        if not pi and not ch:
            return api_error(
                400,
                "invalid_request_error",
                "One of the following params should be provided for this request:"
                " payment_intent or charge.",
                code="parameter_missing",
                param="payment_intent",
            )
        payment_id, payment = await asyncio.to_thread(self._payment, pi or ch)
        param = "payment_intent" if pi else "charge"
        if payment is None and not self.ledger.auto_payments:
            return no_such(param, pi or ch)
        amount_text = params.get("amount")
        if amount_text is not None and not amount_text.isdigit():
            return api_error(
                400,
                "invalid_request_error",
                "Invalid integer: " + amount_text,
                code="parameter_invalid_integer",
                param="amount",
            )
        refunds = await asyncio.to_thread(self.ledger.refunds_of, payment_id)
        if amount_text is not None:
            amount = int(amount_text)
        else:
            amount = (payment.amount if payment else 0) - refunded_total(refunds)
        key = request.headers.get("idempotency-key") or "noidem_" + secrets.token_hex(12)
        digest = hashlib.sha256(json.dumps(sorted(form)).encode()).hexdigest()
        metadata = {k[9:-1]: v for k, v in form if k.startswith("metadata[") and k.endswith("]")}
        suffix = payment_id.split("_", 1)[-1]
        extra = {
            "params_digest": digest,
            "payment_intent": payment_id if payment_id.startswith("pi_") else None,
            "charge": "ch_" + suffix,
            "metadata": metadata,
            "reason": params.get("reason") or None,
        }
        outcome = await asyncio.to_thread(
            self.ledger.create_refund,
            refund_no=key,
            payment_id=payment_id,
            amount=amount,
            currency=payment.currency if payment else _invented_currency(metadata),
            check=lambda p, rs: _check(p, rs, amount),
            make_refs=_make_refs,
            extra=extra,
        )
        if outcome.kind == "transient":
            return api_error(
                500,
                "api_error",
                "An unknown error occurred",
                headers={"Stripe-Should-Retry": "true"},
            )
        if outcome.kind == "refused":
            return refusal(outcome.code, param, pi or ch, amount)
        refund = outcome.refund
        assert refund is not None
        if outcome.kind == "existing":
            if refund.extra.get("params_digest") != digest:
                return api_error(
                    400,
                    "idempotency_error",
                    "Keys for idempotent requests can only be used with the same parameters"
                    f" they were first used with. Try using a key other than '{key}' if you"
                    " meant to execute a different request.",
                )
            return api_answer(self.render(refund, as_created=True), {"Idempotent-Replayed": "true"})
        if outcome.hold:
            await self.ledger.hold()
        return api_answer(self.render(refund, as_created=True))

    async def _retrieve(self, request: Request) -> Response:
        denied = self._authenticate(request)
        if denied is not None:
            return denied
        ref = request.path_params["refund_id"]
        refund_no = await asyncio.to_thread(self.ledger.refund_no_by_ref, ref)
        refund = (
            None if refund_no is None else await asyncio.to_thread(self.ledger.query, refund_no)
        )
        if refund is None:
            return api_error(
                404,
                "invalid_request_error",
                f"No such refund: '{ref}'",
                code="resource_missing",
                param="id",
            )
        return api_answer(self.render(refund))

    async def _list(self, request: Request) -> Response:
        q = request.query_params
        pi, ch = q.get("payment_intent", ""), q.get("charge", "")
        limit_text = q.get("limit", "10")
        if not limit_text.isdigit():
            return api_error(
                400, "invalid_request_error", "Invalid integer: " + limit_text, param="limit"
            )
        limit = min(max(int(limit_text), 1), 100)
        refunds: list[SimRefund]
        if pi or ch:
            payment_id, payment = await asyncio.to_thread(self._payment, pi or ch)
            if payment is None:
                return no_such("payment_intent" if pi else "charge", pi or ch)
            refunds = await asyncio.to_thread(self.ledger.refunds_of, payment_id)
        else:
            refunds = await asyncio.to_thread(self.ledger.refunds)
        refunds.reverse()  # newest first, as Stripe lists
        after = q.get("starting_after")
        if after:
            ids = [r.provider_ref for r in refunds]
            refunds = refunds[ids.index(after) + 1 :] if after in ids else []
        page = refunds[:limit]
        # Listing is a look at each refund: it applies settlements that have come due.
        fresh = [await asyncio.to_thread(self.ledger.query, r.refund_no) for r in page]
        return api_answer(
            {
                "object": "list",
                "data": [self.render(r) for r in fresh if r is not None],
                "has_more": len(refunds) > limit,
                "url": "/v1/refunds",
            }
        )

    # ------------------------------------------------------------------ internals
    def _authenticate(self, request: Request) -> Response | None:
        auth = request.headers.get("authorization", "")
        scheme, _, value = auth.partition(" ")
        given = ""
        if scheme.lower() == "bearer":
            given = value.strip()
        elif scheme.lower() == "basic":
            with contextlib.suppress(ValueError):
                given = base64.b64decode(value).decode().partition(":")[0]
        if given and hmac.compare_digest(given, self.secret_key):
            return None
        shown = f"{given[:8]}****{given[-4:]}" if len(given) > 12 else "****"
        return api_error(401, "invalid_request_error", f"Invalid API Key provided: {shown}")

    def _payment(self, given: str) -> tuple[str, SimPayment | None]:
        """A charge ``ch_X`` belongs to the payment ``pi_X`` when no ``ch_X`` is registered."""
        candidates = [given]
        if given.startswith("ch_"):
            candidates.append("pi_" + given[3:])
        for candidate in candidates:
            payment = self.ledger.payment(candidate)
            if payment is not None:
                return candidate, payment
        return given, None


def dev_simulator(
    data_dir: Path, *, notify_url: str, settlement: str = "seconds:3"
) -> StripeSimulator:
    folder = data_dir / "simulators" / "stripe"
    ledger = SimLedger(folder / "ledger.db", settlement=settlement, auto_payments=True)
    return StripeSimulator(ledger, notify_url=notify_url, data_dir=folder)


def _make_refs(refund_no: str) -> tuple[str, str]:
    digest = hashlib.sha256(f"stripe|{refund_no}".encode()).hexdigest()
    return "re_" + digest[:24], digits_ref(refund_no, "stripe-arn", 23)


def _invented_currency(metadata: dict[str, str]) -> str:
    """The currency of a payment the dev stack takes as paid without knowing it: the one the
    merchant records in the refund's metadata (ours does), else the account's default."""
    named = metadata.get("currency", "").upper()
    return named if len(named) == 3 and named.isalpha() else "USD"


def _check(payment: SimPayment | None, refunds: list[SimRefund], amount: int) -> str | None:
    if payment is None:
        return "resource_missing"
    remaining = payment.amount - refunded_total(refunds)
    if remaining <= 0:
        return "charge_already_refunded"
    if amount <= 0:
        return "amount_too_small"
    if amount > remaining:
        return "amount_too_large"
    return None
