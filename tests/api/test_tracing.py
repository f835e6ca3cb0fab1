"""One trace from the HTTP request through the workflow run to its activities, with the
OpenTelemetry instrumentation on (REFUNDFLOW_TRACING), caught by an in-memory exporter."""

from __future__ import annotations

from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from refundflow.connection import connect_options
from refundflow.db.migrate import upgrade
from refundflow.settings import Settings
from refundflow.tracing import client_interceptors
from tests.api.conftest import serve_api

REFUND = {"order_id": "o-1", "items": [{"line_id": "l1", "quantity": 1}], "reason": "LATE_DELIVERY"}


async def test_a_refund_is_one_trace_from_the_request_to_its_activities(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    settings = Settings(tracing=True)
    assert connect_options(settings)  # the settings the API and the worker would use
    traced = Client(
        env.client.service_client,
        namespace=env.client.namespace,
        data_converter=env.client.data_converter,
        interceptors=client_interceptors(settings),
    )
    url = f"sqlite:///{tmp_path / 'refundflow.db'}"
    upgrade(url)
    async with serve_api(env, url, tmp_path, temporal=traced, tracing=True) as api:
        assert (await api.put_order()).status_code == 200
        created = await api.call(
            "client", "POST", "/v1/refunds", json=REFUND, headers={"Idempotency-Key": "trace-1"}
        )
        assert created.status_code == 202, created.text
        assert await api.finish(created.json()["refund_id"]) == "COMPLETED"
    spans = exporter.get_finished_spans()
    post = next(s for s in spans if s.name == "POST /v1/refunds" and s.parent is None)
    in_trace = {s.name for s in spans if s.context.trace_id == post.context.trace_id}
    assert "StartWorkflow:RefundWorkflow" in in_trace
    assert "RunWorkflow:RefundWorkflow" in in_trace
    assert {"RunActivity:send_payout", "RunActivity:review_and_reserve"} <= in_trace
    # The database work of the request is in it too.
    assert any(name.startswith(("SELECT", "INSERT", "UPDATE")) for name in in_trace), in_trace
