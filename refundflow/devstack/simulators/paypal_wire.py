"""PayPal's Payments v2 refunds on the wire, as the simulator (``paypal.py``) speaks it: the
refund resource with its HATEOAS links, webhook events and their transmission signature
(SHA256withRSA over ``transmission_id|transmission_time|webhook_id|crc32(body)``), and the
error bodies (``name``, ``message``, ``debug_id``, ``details`` with the issue)."""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
import zlib
from datetime import UTC, datetime
from typing import Any

from starlette.responses import JSONResponse, Response

from refundflow.devstack.simulators.core import FAILED, SUCCESS, SimRefund
from refundflow.devstack.simulators.keys import KeyPair
from refundflow.gateways.paypal import AUTH_ALGO, paypal_value

_STATUS = {SUCCESS: "COMPLETED", FAILED: "FAILED"}
_EVENT = {
    SUCCESS: ("PAYMENT.CAPTURE.REFUNDED", "completed"),
    FAILED: ("PAYMENT.REFUND.FAILED", "failed"),
}
_ISSUES = {
    "REFUND_AMOUNT_EXCEEDED": "The refund amount must be less than or equal to the capture"
    " amount that has not yet been refunded.",
    "CAPTURE_FULLY_REFUNDED": "The capture has already been fully refunded.",
    "REFUND_TIME_LIMIT_EXCEEDED": "You are over the time limit to perform a refund on this"
    " capture.",
    "REFUND_CAPTURE_CURRENCY_MISMATCH": "Refund must be in the same currency as the capture.",
    "DECIMALS_NOT_SUPPORTED": "Currency does not support decimals.",
    "DECIMAL_PRECISION": "The value of the field should not be more than two decimals.",
    "INVALID_PARAMETER_VALUE": "The value of a field is invalid.",
}


# ---------------------------------------------------------------------- resources
def refund_resource(refund: SimRefund, base_url: str) -> dict[str, Any]:
    """The refund as PayPal shows it, its links under ``base_url``."""
    money = {
        "currency_code": refund.currency,
        "value": paypal_value(refund.amount, refund.currency),
    }
    zero = {"currency_code": refund.currency, "value": paypal_value(0, refund.currency)}
    obj: dict[str, Any] = {
        "id": refund.provider_ref,
        "amount": money,
        "seller_payable_breakdown": {
            "gross_amount": money,
            "paypal_fee": zero,
            "net_amount": money,
        },
        "invoice_id": refund.extra.get("invoice_id"),
        "custom_id": refund.extra.get("custom_id"),
        "note_to_payer": refund.extra.get("note_to_payer"),
        "status": _STATUS.get(refund.status, "PENDING"),
        "create_time": iso(refund.created_at),
        "update_time": iso(refund.settled_at or refund.created_at),
        "links": _links(refund, base_url),
    }
    if refund.status == FAILED and refund.code:
        obj["status_details"] = {"reason": refund.code}
    return {k: v for k, v in obj.items() if v is not None}


def _links(refund: SimRefund, base_url: str) -> list[dict[str, str]]:
    capture = refund.extra.get("capture_id", refund.payment_id)
    return [
        {
            "href": f"{base_url}/v2/payments/refunds/{refund.provider_ref}",
            "rel": "self",
            "method": "GET",
        },
        {
            "href": f"{base_url}/v2/payments/captures/{capture}",
            "rel": "up",
            "method": "GET",
        },
    ]


# ---------------------------------------------------------------------- webhooks
def webhook_body(refund: SimRefund, resource: dict[str, Any], *, event_id: str, when: str) -> bytes:
    """The webhook event about ``refund`` (shown as ``resource``), created at ``when``."""
    kind, word = _EVENT.get(refund.status, ("PAYMENT.REFUND.PENDING", "pending"))
    amount = paypal_value(refund.amount, refund.currency)
    event = {
        "id": _webhook_event_id(event_id),
        "event_version": "1.0",
        "create_time": when,
        "resource_type": "refund",
        "resource_version": "2.0",
        "event_type": kind,
        "summary": f"A {amount} {refund.currency} refund is {word}",
        "resource": resource,
        "links": [],
    }
    return json.dumps(event).encode()


def transmission_headers(
    identity: KeyPair, body: bytes, *, when: str, webhook_id: str, cert_url: str
) -> dict[str, str]:
    """The headers PayPal sends a webhook with: its transmission signed by ``identity``,
    whose certificate is served at ``cert_url``."""
    transmission_id = str(uuid.uuid4())
    message = f"{transmission_id}|{when}|{webhook_id}|{zlib.crc32(body)}"
    return {
        "Content-Type": "application/json",
        "PAYPAL-TRANSMISSION-ID": transmission_id,
        "PAYPAL-TRANSMISSION-TIME": when,
        "PAYPAL-TRANSMISSION-SIG": identity.sign(message.encode()),
        "PAYPAL-CERT-URL": cert_url,
        "PAYPAL-AUTH-ALGO": AUTH_ALGO,
    }


def _webhook_event_id(ledger_event_id: str) -> str:
    digest = hashlib.sha256(ledger_event_id.encode()).hexdigest().upper()
    return f"WH-{digest[:17]}-{digest[17:34]}"


# ---------------------------------------------------------------------- errors
def problem(status: int, name: str, message: str, issue: str = "") -> Response:
    body: dict[str, Any] = {"name": name, "message": message, "debug_id": debug_id()}
    if issue:
        body["details"] = [{"issue": issue, "description": _ISSUES.get(issue, message)}]
        body["links"] = [
            {
                "href": f"https://developer.paypal.com/docs/api/payments/v2/#error-{issue}",
                "rel": "information_link",
            }
        ]
    return JSONResponse(body, status_code=status)


def unprocessable(issue: str) -> Response:
    return problem(
        422,
        "UNPROCESSABLE_ENTITY",
        "The requested action could not be performed, semantically incorrect, or failed"
        " business validation.",
        issue,
    )


def not_found(resource_id: str) -> Response:
    return problem(
        404,
        "RESOURCE_NOT_FOUND",
        f"The specified resource ({resource_id}) does not exist.",
        "INVALID_RESOURCE_ID",
    )


def debug_id() -> str:
    return secrets.token_hex(7)


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
