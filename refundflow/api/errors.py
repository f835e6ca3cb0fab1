"""RFC 9457 problem details with a stable ``code`` for every error the API returns."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.service import RPCError, RPCStatusCode

from refundflow.domain.errors import DomainError

PROBLEM = "application/problem+json"

# Domain codes that are not plain "invalid input" (422).
_STATUS_BY_CODE = {
    "over_refund": 409,
    "quantity_exceeds_remaining": 409,
    "nothing_refundable": 409,
    "refund_closed": 409,
    "duplicate_payout_key": 409,
    "order_in_use": 409,
    "idempotency_in_flight": 409,
    "wrong_state": 409,
    "payout_already_sent": 409,
    "repeated_approver": 409,
    "outdated_quote": 409,
    "payout_outcome_unknown": 409,
    "approval_conflict": 409,
    "self_approval": 403,
    "unknown_approver": 403,
    "not_found": 404,
    "unknown_order": 404,
    "unknown_refund": 404,
    "unauthorized": 401,
    "forbidden": 403,
    "temporal_unavailable": 503,
    "database_busy": 503,
    "update_timeout": 504,
}


_UNREACHABLE = frozenset(
    {RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED}
)
"""Temporal statuses that mean "not reached in time" (CANCELLED is how the SDK reports its own
deadline running out on some calls): 503, and the caller may retry."""


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.extra = status, code, detail, extra


def problem(status: int, code: str, detail: str, **extra: Any) -> JSONResponse:
    titles = {
        400: "Bad request",
        401: "Unauthorized",
        403: "Forbidden",
        404: "Not found",
        409: "Conflict",
        422: "Unprocessable content",
        503: "Service unavailable",
        504: "Gateway timeout",
    }
    body = {
        "type": f"https://refundflow.dev/problems/{code}",
        "title": titles.get(status, "Error"),
        "status": status,
        "code": code,
        "detail": detail,
        **extra,
    }
    headers = {"Retry-After": "5"} if status == 503 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def status_for(code: str) -> int:
    return _STATUS_BY_CODE.get(code, 422)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return problem(exc.status, exc.code, exc.detail, **exc.extra)

    @app.exception_handler(DomainError)
    async def _domain(_: Request, exc: DomainError) -> JSONResponse:
        extra = {"errors": exc.details["errors"]} if "errors" in exc.details else {}
        return problem(status_for(exc.code), exc.code, exc.message, **extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": ".".join(str(p) for p in e["loc"]), "type": e["type"], "msg": e["msg"]}
            for e in exc.errors()
        ]
        code = _validation_code(errors)
        return problem(
            422, code, "; ".join(f"{e['loc']}: {e['msg']}" for e in errors), errors=errors
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return problem(exc.status_code, code, str(exc.detail))

    @app.exception_handler(RPCError)
    async def _temporal(_: Request, exc: RPCError) -> JSONResponse:
        if exc.status in _UNREACHABLE:
            return problem(
                503, "temporal_unavailable", "the workflow service is unreachable; retry"
            )
        return problem(502, "temporal_error", exc.message)


def _validation_code(errors: list[dict[str, Any]]) -> str:
    from refundflow.domain.errors import STABLE_VALIDATION_CODES

    for err in errors:
        if err["type"] in STABLE_VALIDATION_CODES:
            return str(err["type"])
    if any(e["type"] == "extra_forbidden" for e in errors):
        return "unknown_field"
    return "validation_error"
