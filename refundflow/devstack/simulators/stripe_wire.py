"""Stripe's refunds on the wire, as the simulator (``stripe.py``) speaks it: the refund object
(its card ARN in ``destination_details``), the webhook event and its ``Stripe-Signature``
(HMAC-SHA256 over ``timestamp.body`` with the endpoint's signing secret), and the error bodies
(``type``, ``message``, ``code`` with its ``doc_url``, ``param``) with a ``Request-Id`` on every
answer."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from typing import Any

from starlette.responses import JSONResponse, Response

from refundflow.devstack.simulators.core import FAILED, SUCCESS, SimRefund
from refundflow.gateways.stripe_card import SIGNATURE_HEADER

_STATUS = {SUCCESS: "succeeded", FAILED: "failed"}
_REFERENCE_STATUS = {"succeeded": "available", "failed": "unavailable"}


# ---------------------------------------------------------------------- resources
def refund_object(refund: SimRefund, *, as_created: bool = False) -> dict[str, Any]:
    """The refund object; ``as_created`` gives the first answer (what a replay returns)."""
    status = "pending" if as_created else _STATUS.get(refund.status, "pending")
    card = {
        "reference": refund.trace_ref if status == "succeeded" else None,
        "reference_status": _REFERENCE_STATUS.get(status, "pending"),
        "reference_type": "acquirer_reference_number",
        "type": "refund",
    }
    obj: dict[str, Any] = {
        "id": refund.provider_ref,
        "object": "refund",
        "amount": refund.amount,
        "balance_transaction": "txn_" + refund.provider_ref[3:],
        "charge": refund.extra.get("charge"),
        "created": int(refund.created_at),
        "currency": refund.currency.lower(),
        "destination_details": {"type": "card", "card": card},
        "metadata": refund.extra.get("metadata", {}),
        "payment_intent": refund.extra.get("payment_intent"),
        "reason": refund.extra.get("reason"),
        "receipt_number": None,
        "source_transfer_reversal": None,
        "status": status,
        "transfer_reversal": None,
    }
    if status == "failed":
        obj["failure_reason"] = refund.code or "unknown"
        obj["failure_balance_transaction"] = "txn_f" + refund.provider_ref[4:]
    return obj


# ---------------------------------------------------------------------- webhooks
def event_body(
    refund: SimRefund, resource: dict[str, Any], *, event_id: str, created: int
) -> bytes:
    """The ``refund.updated`` (or ``refund.failed``) event about ``refund``, shown as
    ``resource``."""
    event = {
        "id": event_id,
        "object": "event",
        "api_version": "2024-06-20",
        "created": created,
        "data": {"object": resource},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": "refund.failed" if refund.status == FAILED else "refund.updated",
    }
    return json.dumps(event, indent=2).encode()


def signature_headers(webhook_secret: str, body: bytes, *, timestamp: int) -> dict[str, str]:
    """The headers Stripe sends a webhook with, ``body`` signed at ``timestamp``."""
    # Stripe signs with a shared secret (HMAC), not a key pair, so keys.KeyPair has no part
    # here; written from the provider's side, apart from the adapter's SDK check.
    signature = hmac.new(
        webhook_secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256
    ).hexdigest()
    return {
        SIGNATURE_HEADER: f"t={timestamp},v1={signature}",
        "Content-Type": "application/json",
    }


# ---------------------------------------------------------------------- answers and errors
def refusal(code: str, param: str, given: str, amount: int) -> Response:
    """The error for a refund the ledger check refused with ``code``."""
    if code == "resource_missing":
        return no_such(param, given)
    messages = {
        "charge_already_refunded": f"Charge {given} has already been refunded.",
        "amount_too_large": f"Refund amount ({amount}) is greater than unrefunded amount on"
        " charge.",
        "amount_too_small": "Amount must be at least 1.",
    }
    return api_error(
        400,
        "invalid_request_error",
        messages.get(code, f"The refund could not be made ({code})."),
        code=code,
        param="amount" if code.startswith("amount") else None,
    )


def no_such(param: str, given: str) -> Response:
    """Stripe's ``resource_missing`` for the object ``given`` as ``param``."""
    return api_error(
        400 if param != "id" else 404,
        "invalid_request_error",
        f"No such {param}: '{given}'",
        code="resource_missing",
        param=param,
    )


def api_error(
    status: int,
    kind: str,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    error: dict[str, Any] = {"type": kind, "message": message}
    if code:
        error["code"] = code
        error["doc_url"] = f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"
    if param:
        error["param"] = param
    return api_answer({"error": error}, headers, status=status)


def api_answer(
    body: dict[str, Any], headers: dict[str, str] | None = None, *, status: int = 200
) -> Response:
    """A JSON answer with the ``Request-Id`` Stripe puts on every response."""
    base = {"Request-Id": "req_" + secrets.token_hex(7)}
    return JSONResponse(body, status_code=status, headers=base | (headers or {}))
