"""Prometheus metrics of the API at ``/metrics``: HTTP requests and latencies (by the maintained
``prometheus-fastapi-instrumentator``), the process (CPU, memory, file descriptors, GC), and the
business as the database sees it at scrape time (refunds by status, payouts by route and
outcome). The worker exports the SDK's and the runs' own metrics on its own port."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from prometheus_fastapi_instrumentator import Instrumentator
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from refundflow.db.models import PayoutRow, RefundRow


class BusinessCollector(Collector):
    """Counts read from the database when Prometheus scrapes: every API replica reports the
    same truth, and nothing is counted twice or lost with a restart."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def collect(self) -> Iterator[GaugeMetricFamily]:
        engine: Engine | None = getattr(self.app.state, "engine", None)
        refunds = GaugeMetricFamily("refundflow_refunds", "Refunds by status", labels=["status"])
        payouts = GaugeMetricFamily(
            "refundflow_payouts", "Payouts by route and outcome", labels=["route", "status"]
        )
        if engine is not None:
            with Session(engine) as session:
                by_status = select(col(RefundRow.status), func.count()).group_by(
                    col(RefundRow.status)
                )
                for status, count in session.exec(by_status).all():
                    refunds.add_metric([status], count)
                by_route = select(
                    col(PayoutRow.route), col(PayoutRow.status), func.count()
                ).group_by(col(PayoutRow.route), col(PayoutRow.status))
                for route, status, count in session.exec(by_route).all():
                    payouts.add_metric([route, status], count)
        yield refunds
        yield payouts


def install(app: FastAPI) -> None:
    # A registry per app: tests build several apps in one process.
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(BusinessCollector(app))
    Instrumentator(registry=registry, excluded_handlers=["/metrics"]).instrument(app).expose(
        app, include_in_schema=False
    )
