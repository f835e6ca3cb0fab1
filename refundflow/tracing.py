"""Optional tracing with OpenTelemetry (``pip install refundflow[otel]``, ``REFUNDFLOW_TRACING``).

One trace runs from the HTTP request through the workflow run and its activities to the
provider's HTTP call: FastAPI, httpx and the database engine are instrumented, and Temporal's
tracing interceptor carries the context across the client, the worker and the workflow. Spans go
to an OTLP collector configured the standard way (``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_SERVICE_NAME`` ...). Off by default; on without the packages, the process stops and says
what to install.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from sqlalchemy import Engine, event

from refundflow.settings import Settings

_NEEDED = (
    "opentelemetry.sdk",
    "opentelemetry.instrumentation.fastapi",
    "opentelemetry.instrumentation.httpx",
)


class TracingUnavailable(RuntimeError):
    pass


def _check_installed() -> None:
    missing = [name for name in _NEEDED if importlib.util.find_spec(name) is None]
    if missing:
        raise TracingUnavailable(
            "REFUNDFLOW_TRACING is on but " + ", ".join(missing) + " is not installed: "
            "pip install 'refundflow[otel]'"
        )


def client_interceptors(settings: Settings) -> list[Any]:
    """Temporal client interceptors: Temporal's tracing interceptor when tracing is on. A
    worker built on such a client traces its workflows and activities too."""
    if not settings.tracing:
        return []
    _check_installed()
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor()]


def configure_exporter(settings: Settings) -> None:
    """Send spans to the OTLP collector, unless something (a test) set a provider already."""
    if not settings.tracing:
        return
    _check_installed()
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        raise TracingUnavailable(
            "REFUNDFLOW_TRACING is on but no OTLP exporter is installed: "
            "pip install 'refundflow[otel]'"
        ) from exc
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


def instrument(settings: Settings, *, app: Any = None, engine: Engine | None = None) -> None:
    """Trace the FastAPI app's requests, the engine's queries and every httpx call."""
    if not settings.tracing:
        return
    _check_installed()
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    if app is not None:
        FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz,readyz,metrics")
    if engine is not None:
        _trace_queries(engine)
    HTTPXClientInstrumentor().instrument()


def _trace_queries(engine: Engine) -> None:
    """A span per statement. OpenTelemetry's SQLAlchemy instrumentor refuses SQLAlchemy 2.1
    (it supports < 2.1 and pulls in the asyncio extension), so two engine events do its work:
    the statement's verb and the database system, never the parameters (personal data)."""
    from opentelemetry import trace

    tracer = trace.get_tracer("refundflow.db")
    system = engine.dialect.name

    @event.listens_for(engine, "before_cursor_execute")
    def _start(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        verb = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "SQL"
        span = tracer.start_span(
            f"{verb} {system}",
            kind=trace.SpanKind.CLIENT,
            attributes={"db.system": system, "db.statement": statement[:1000]},
        )
        conn.info.setdefault("refundflow.spans", []).append(span)

    @event.listens_for(engine, "after_cursor_execute")
    def _end(conn: Any, *args: Any) -> None:
        spans = conn.info.get("refundflow.spans")
        if spans:
            spans.pop().end()

    @event.listens_for(engine, "handle_error")
    def _failed(context: Any) -> None:
        spans = context.connection.info.get("refundflow.spans") if context.connection else None
        if spans:
            span = spans.pop()
            span.record_exception(context.original_exception)
            span.end()
