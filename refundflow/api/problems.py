"""Every problem code the API answers, once: its HTTP status and what it means.

Routes declare the codes they can answer (``responses=documented(...)``); the same declaration
is the OpenAPI documentation of their error responses and, when ``strict_problem_codes`` is
set (the test suite sets it), a check on every error actually answered: a route that answers a
code it did not declare answers 500 instead, so a missing declaration fails the tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from refundflow.domain.errors import STABLE_VALIDATION_CODES


@dataclass(frozen=True)
class ProblemCode:
    code: str
    status: int
    meaning: str


_CODES = [
    ProblemCode("idempotency_key_required", 400, "POST /v1/refunds needs an Idempotency-Key"),
    ProblemCode("unauthorized", 401, "no API key, or an unknown or revoked one"),
    ProblemCode("invalid_signature", 401, "a webhook's signature does not verify"),
    ProblemCode("forbidden", 403, "the key's role may not do this"),
    ProblemCode("self_approval", 403, "nobody approves a refund they requested"),
    ProblemCode("unknown_approver", 403, "the approver is not one of the merchant's"),
    ProblemCode("not_found", 404, "no such order, refund, merchant or provider for this key"),
    ProblemCode("personal_data_absent", 404, "the refund has no such customer detail"),
    ProblemCode("method_not_allowed", 405, "the path does not take this method (see Allow)"),
    ProblemCode("over_refund", 409, "more would be refunded than was captured"),
    ProblemCode("quantity_exceeds_remaining", 409, "more units than are left to refund"),
    ProblemCode("nothing_refundable", 409, "nothing of the order is left to refund"),
    ProblemCode("refund_closed", 409, "the refund has ended"),
    ProblemCode("order_in_use", 409, "refunds hold more than the new snapshot captured"),
    ProblemCode("idempotency_in_flight", 409, "a request with this key is still in progress"),
    ProblemCode("wrong_state", 409, "the refund does not take this message in its status"),
    ProblemCode("payout_already_sent", 409, "a payout exists; the refund can no longer cancel"),
    ProblemCode("repeated_approver", 409, "this approver already approved"),
    ProblemCode("outdated_quote", 409, "the decision names a quote that is no longer current"),
    ProblemCode("payout_outcome_unknown", 409, "a payout's outcome is unknown; retry it first"),
    ProblemCode("payout_needs_repair", 409, "a payout must be repaired before resuming"),
    ProblemCode("nothing_to_mark", 409, "no sent payout is waiting to settle"),
    ProblemCode("approval_conflict", 409, "the approval was recorded differently before"),
    ProblemCode("policy_version_exists", 409, "that policy version holds another document"),
    ProblemCode("personal_data_erased", 410, "retention erased the refund's customer data"),
    ProblemCode("body_too_large", 413, "the request body is past the size limit"),
    ProblemCode("validation_error", 422, "the request does not match its schema"),
    ProblemCode("unknown_field", 422, "the body has a field the API does not take"),
    ProblemCode("idempotency_key_reused", 422, "the key was used for another request"),
    ProblemCode("invalid_cursor", 422, "the cursor is not one this API returned"),
    ProblemCode("webhook_mismatch", 422, "the event names a payout of another provider"),
    ProblemCode("invalid_request", 422, "the refund request is invalid"),
    ProblemCode("invalid_order", 422, "the order snapshot is invalid"),
    ProblemCode("currency_mismatch", 422, "the currency is not the order's"),
    ProblemCode("fx_rate_missing", 422, "a cross-currency refund needs an exchange rate"),
    ProblemCode("destination_required", 422, "switch_destination needs a destination"),
    ProblemCode("policy_invalid", 422, "the policy document is invalid"),
    ProblemCode("unknown_merchant", 422, "the merchant does not exist"),
    ProblemCode("order_mismatch", 422, "the order changed in a way refunds cannot follow"),
    ProblemCode("unknown_payment", 422, "a payment the refunds hold is missing"),
    *(ProblemCode(code, 422, f"invalid input ({code})") for code in STABLE_VALIDATION_CODES),
    ProblemCode("internal_error", 500, "the server failed; quote the request id"),
    ProblemCode("temporal_error", 502, "the workflow service refused the call"),
    ProblemCode("temporal_unavailable", 503, "the workflow service is unreachable; retry"),
    ProblemCode("database_busy", 503, "the database is busy; retry"),
    ProblemCode("encryption_unavailable", 503, "the API has no encryption keys"),
    ProblemCode("not_ready", 503, "the database or the workflow service does not answer"),
    ProblemCode("update_timeout", 504, "the refund did not answer in time; read it first"),
]
PROBLEM_CODES: dict[str, ProblemCode] = {p.code: p for p in _CODES}


def status_for(code: str) -> int:
    """The HTTP status of ``code``; an unregistered domain code is invalid input (422)."""
    known = PROBLEM_CODES.get(code)
    return known.status if known else 422


# Codes every route of a kind can answer, declared by name in the routers.
AUTH = ("unauthorized", "forbidden")
BODY = ("validation_error", "unknown_field", "body_too_large")
TEMPORAL = ("temporal_unavailable", "temporal_error")
MESSAGE = (*AUTH, *BODY, *TEMPORAL, "not_found", "wrong_state", "update_timeout")
_LINES_AND_AMOUNTS = (
    "negative_quantity",
    "quantity_too_large",
    "negative_amount",
    "amount_too_large",
    "unknown_currency",
    "duplicate_line",
)
ORDER_INPUT = (
    *_LINES_AND_AMOUNTS,
    "duplicate_payment",
    "discount_exceeds_amount",
    "unknown_line",
    "invalid_order",
)
REQUEST_INPUT = (
    *_LINES_AND_AMOUNTS,
    "empty_request",
    "evidence_too_large",
    "destination_incomplete",
    "invalid_request",
)
QUOTE = (
    "not_found",
    "unknown_line",
    "currency_mismatch",
    "quantity_exceeds_remaining",
    "nothing_refundable",
    "over_refund",
    "fx_rate_missing",
)

DOCUMENTED = "x-problem-codes"
"""The key, in a route's OpenAPI response, that lists the codes answered with that status."""


def documented(
    *codes: str, answer: tuple[int, Any] | None = None
) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a route that can answer ``codes`` (and, like every route, 500):
    one problem+json response per status, listing its codes, with one example per code; and
    ``answer``, the example of its success response (status, body)."""
    by_status: dict[int, list[ProblemCode]] = {}
    for code in dict.fromkeys([*codes, "internal_error"]):
        problem = PROBLEM_CODES[code]  # a KeyError here is an unregistered code
        by_status.setdefault(problem.status, []).append(problem)
    responses: dict[int | str, dict[str, Any]] = {}
    for status, problems in sorted(by_status.items()):
        lines = "; ".join(f"`{p.code}`: {p.meaning}" for p in problems)
        responses[status] = {
            "description": f"Problem details (RFC 9457). Codes: {lines}.",
            "content": {
                "application/problem+json": {
                    "schema": {"$ref": "#/components/schemas/Problem"},
                    "examples": {p.code: {"value": _example(p)} for p in problems},
                }
            },
            DOCUMENTED: [p.code for p in problems],
        }
    if answer is not None:
        status, example = answer
        responses[status] = {"content": {"application/json": {"example": example}}}
    return responses


def _example(problem: ProblemCode) -> dict[str, Any]:
    return {
        "type": f"https://refundflow.dev/problems/{problem.code}",
        "title": problem.meaning,
        "status": problem.status,
        "code": problem.code,
        "detail": problem.meaning,
    }
