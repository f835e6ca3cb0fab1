"""The FastAPI application: ``uvicorn refundflow.api.app:app`` or ``refundflow api``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy import Engine, text
from temporalio.client import Client

from refundflow import tracing
from refundflow.api import console, docs, errors, examples, metrics
from refundflow.api.guard import RequestGuard
from refundflow.api.problems import documented
from refundflow.api.routers import admin, orders, personal, refunds, webhooks
from refundflow.connection import connect, describe_target
from refundflow.crypto import Keyring
from refundflow.db.engine import make_engine
from refundflow.domain.orders import PaymentMethod
from refundflow.gateways.base import Gateway
from refundflow.gateways.registry import build_gateways, webhook_gateways
from refundflow.settings import Settings, get_settings

log = logging.getLogger("refundflow.api")
RECONNECT_MAX_DELAY = 30.0


def use_gateways(app: FastAPI, gateways: Mapping[PaymentMethod, Gateway]) -> None:
    """The gateways whose webhooks the app verifies, and which provider pays which route."""
    app.state.webhook_gateways = webhook_gateways(gateways)
    app.state.webhook_routes = {route.value: g.name for route, g in gateways.items()}


async def _connect_until_up(app: FastAPI, settings: Settings) -> None:
    delay = 0.5
    while True:
        try:
            app.state.temporal = await connect(settings)
            return
        except RuntimeError as exc:  # the SDK's way of saying "unreachable"
            log.warning(
                "%s unreachable (%s); retrying in %.0f s", describe_target(settings), exc, delay
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, RECONNECT_MAX_DELAY)


def create_app(
    settings: Settings | None = None,
    *,
    engine: Engine | None = None,
    temporal: Client | None = None,
    keyring: Keyring | None = None,
) -> FastAPI:
    """Build the app. Tests pass their own engine and Temporal client; otherwise both are made
    from settings once, in the lifespan, and reused by every request."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_engine = engine is None
        if own_engine:
            # Fail closed: customer data is only ever revealed through these keys, and the
            # console seals its sessions with them.
            app.state.keyring = keyring or settings.keyring()
            app.state.engine = make_engine(settings.resolved_database_url)
            tracing.instrument(settings, engine=app.state.engine)
        use_gateways(app, build_gateways(settings, app.state.engine))
        app.state.temporal = temporal
        connecting = None
        if temporal is None:
            settings.payload_keyring()  # fail closed: no plaintext payload ever leaves
            # Until Temporal answers, /readyz says so and routes that need it answer 503; the
            # API keeps trying instead of staying disconnected for the life of the process.
            connecting = asyncio.create_task(_connect_until_up(app, settings))
        yield
        if connecting is not None:
            connecting.cancel()
        if own_engine:
            app.state.engine.dispose()

    app = FastAPI(
        title="refundflow",
        version="0.1.0",
        description=docs.DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # docs.install serves it from the installed Swagger UI package
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.keyring = keyring
    if engine is not None:  # tests wire their own parts; the lifespan makes the rest
        tracing.instrument(settings, engine=engine)
        app.state.engine = engine
        app.state.temporal = temporal
        use_gateways(app, {})
    errors.install(app)
    metrics.install(app)
    tracing.configure_exporter(settings)
    tracing.instrument(settings, app=app)
    # Added last, so it wraps everything else: the body limit comes before any parsing, and
    # an error no handler answered still gets a problem and a request id.
    app.add_middleware(RequestGuard, max_body_bytes=settings.max_request_body_bytes)
    for router in (orders.router, refunds.router, personal.router, admin.router, webhooks.router):
        app.include_router(router)
    docs.install(app)
    console.install(app)

    @app.get("/healthz", tags=["health"], responses=documented(answer=(200, examples.HEALTH)))
    def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get(
        "/readyz", tags=["health"], responses=documented("not_ready", answer=(200, examples.READY))
    )
    async def readyz() -> dict[str, str]:
        """The database and Temporal both answer."""
        checks = {"database": "ok", "temporal": "ok"}
        try:
            with app.state.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:  # any failure means "not ready", with the reason
            checks["database"] = f"error: {exc}"
        client: Client | None = app.state.temporal
        try:
            if client is None or not await client.service_client.check_health():
                checks["temporal"] = "unreachable"
        except Exception as exc:
            checks["temporal"] = f"error: {exc}"
        if any(v != "ok" for v in checks.values()):
            raise errors.ApiError(
                503, "not_ready", "; ".join(f"{k}: {v}" for k, v in checks.items())
            )
        return checks

    return app
