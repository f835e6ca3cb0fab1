"""RFC 9457 problem details with a stable ``code`` for every error the API returns."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from temporalio.service import RPCError, RPCStatusCode

from refundflow.api.problems import DOCUMENTED, PROBLEM_CODES, status_for
from refundflow.domain.errors import DomainError

log = logging.getLogger("refundflow.api")

PROBLEM = "application/problem+json"

_UNREACHABLE = frozenset(
    {RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED}
)
"""Temporal statuses that mean "not reached in time" (CANCELLED is how the SDK reports its own
deadline running out on some calls): 503, and the caller may retry."""


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.extra = status, code, detail, extra


def problem_body(status: int, code: str, detail: str, **extra: Any) -> dict[str, Any]:
    known = PROBLEM_CODES.get(code)
    return {
        "type": f"https://refundflow.dev/problems/{code}",
        "title": known.meaning if known else "Invalid input",
        "status": status,
        "code": code,
        "detail": detail,
        **extra,
    }


def problem(
    status: int, code: str, detail: str, headers: Mapping[str, str] | None = None, **extra: Any
) -> JSONResponse:
    headers = {**(headers or {}), **({"Retry-After": "5"} if status == 503 else {})}
    return JSONResponse(
        problem_body(status, code, detail, **extra),
        status_code=status,
        media_type=PROBLEM,
        headers=headers,
    )


def _answer(
    request: Request,
    status: int,
    code: str,
    detail: str,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """The problem, after the strict check that the route documents ``code``."""
    route = request.scope.get("route")
    settings = getattr(request.app.state, "settings", None)
    if isinstance(route, APIRoute) and getattr(settings, "strict_problem_codes", False):
        declared = route.responses.get(status, {}).get(DOCUMENTED, [])
        # FastAPI documents 422 on routes with parameters that declare none (docs.py makes
        # it ours): a malformed parameter is a validation_error there.
        default = status == 422 and status not in route.responses and code == "validation_error"
        if code not in declared and not default:
            return problem(
                500,
                "internal_error",
                f"{route.path} answered {status} {code}, which it does not document",
            )
    return problem(status, code, detail, headers, **extra)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        return _answer(request, exc.status, exc.code, exc.detail, **exc.extra)

    @app.exception_handler(DomainError)
    async def _domain(request: Request, exc: DomainError) -> JSONResponse:
        extra = {"errors": exc.details["errors"]} if "errors" in exc.details else {}
        return _answer(request, status_for(exc.code), exc.code, exc.message, **extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": ".".join(str(p) for p in e["loc"]), "type": e["type"], "msg": e["msg"]}
            for e in exc.errors()
        ]
        if any(e["loc"] == "header.idempotency-key" for e in errors):
            return _answer(
                request,
                400,
                "idempotency_key_required",
                "send an Idempotency-Key header of 1 to 200 characters",
            )
        code = _validation_code(errors)
        detail = "; ".join(f"{e['loc']}: {e['msg']}" for e in errors)
        return _answer(request, 422, code, detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # 404 (no such path) and 405 (with its Allow header) come from the router itself.
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        headers = exc.headers
        if exc.status_code == 405:  # the router names only the first route of the path
            headers = {"Allow": ", ".join(sorted(_allowed_methods(request)))}
        return problem(exc.status_code, code, str(exc.detail), headers)

    @app.exception_handler(RPCError)
    async def _temporal(request: Request, exc: RPCError) -> JSONResponse:
        if exc.status in _UNREACHABLE:
            return _answer(
                request, 503, "temporal_unavailable", "the workflow service is unreachable; retry"
            )
        # Temporal's own message can name internals (hosts, ids): it goes to the log only.
        log.warning("Temporal refused a call: %s", exc.message)
        return _answer(request, 502, "temporal_error", "the workflow service refused the call")


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> set[str]:
    """The methods some route takes at this path: each is asked as if the request had come
    with it (routers nest, so only a route's own ``matches`` knows)."""
    routes = request.app.router.routes
    allowed = set()
    for method in _METHODS:
        probe = {**request.scope, "method": method}
        if any(route.matches(probe)[0] is Match.FULL for route in routes):
            allowed.add(method)
    return allowed


def _validation_code(errors: list[dict[str, Any]]) -> str:
    from refundflow.domain.errors import STABLE_VALIDATION_CODES

    for err in errors:
        if err["type"] in STABLE_VALIDATION_CODES:
            return str(err["type"])
    if any(e["type"] == "extra_forbidden" for e in errors):
        return "unknown_field"
    return "validation_error"
