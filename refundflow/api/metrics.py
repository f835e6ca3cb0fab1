"""Prometheus metrics: requests by route and status, refunds by status, payout outcomes."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from sqlalchemy import func
from sqlmodel import Session, col, select

from refundflow.db.models import PayoutRow, RefundRow


def install(app: FastAPI) -> None:
    registry = CollectorRegistry()
    requests = Counter(
        "refundflow_http_requests_total",
        "HTTP requests",
        ["method", "route", "status"],
        registry=registry,
    )
    latency = Histogram(
        "refundflow_http_request_seconds",
        "HTTP request time",
        ["method", "route"],
        registry=registry,
    )
    refunds = Gauge("refundflow_refunds", "Refunds by status", ["status"], registry=registry)
    payouts = Gauge(
        "refundflow_payouts", "Payouts by route and outcome", ["route", "status"], registry=registry
    )

    @app.middleware("http")
    async def count(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        requests.labels(request.method, route, str(response.status_code)).inc()
        latency.labels(request.method, route).observe(time.perf_counter() - start)
        return response

    @app.get("/metrics", tags=["health"], include_in_schema=False)
    def metrics() -> Response:
        """Prometheus exposition; refund and payout counts are read from the database."""
        with Session(app.state.engine) as session:
            refunds.clear()
            stmt = select(col(RefundRow.status), func.count()).group_by(col(RefundRow.status))
            for status, n in session.exec(stmt).all():
                refunds.labels(status).set(n)
            payouts.clear()
            pstmt = select(col(PayoutRow.route), col(PayoutRow.status), func.count()).group_by(
                col(PayoutRow.route), col(PayoutRow.status)
            )
            for route, status, n in session.exec(pstmt).all():
                payouts.labels(route, status).set(n)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
