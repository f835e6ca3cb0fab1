"""The refundflow worker: runs RefundWorkflow and its activities against Temporal.

``python -m refundflow.worker`` (or ``refundflow worker``, or ``python worker.py`` at the top of
the repository) connects as :mod:`refundflow.connection` says and stops gracefully on SIGTERM
or Ctrl-C: running activities get time to finish and nothing in flight is lost, since Temporal
hands it to the next worker.
With ``REFUNDFLOW_BUILD_ID`` it is a versioned worker (``refundflow.deployment``): it gets work
only once its build is the deployment's current version.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Engine
from temporalio.client import Client
from temporalio.common import MetricMeter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import Worker, WorkerDeploymentConfig

from refundflow.activities.decisions import all_decisions
from refundflow.activities.notify import NotifyActivities
from refundflow.activities.refund import RefundActivities
from refundflow.activities.retention import RetentionActivities
from refundflow.connection import connect, describe_target
from refundflow.crypto import Keyring, KeyringError
from refundflow.db.engine import session_scope
from refundflow.db.repository import reseal_personal, reseal_webhook_secrets
from refundflow.deployment import deployment_config, watch_until_current
from refundflow.logs import configure_logging
from refundflow.notify.config import NotifyConfig
from refundflow.settings import DevOnlySetting, Settings, describe_invalid, get_settings
from refundflow.tracing import configure_exporter, instrument
from refundflow.worker_sandbox import ACTIVATION_CPU, ACTIVATION_CPU_BUCKETS_MS, workflow_runner
from refundflow.workflows.outbox import SCHEDULE_ID, OutboxSweepWorkflow, ensure_outbox_schedule
from refundflow.workflows.refund import RefundWorkflow
from refundflow.workflows.retention import (
    PersonalDataRetentionWorkflow,
    ensure_retention_schedule,
)

log = logging.getLogger("refundflow.worker")

# What a worker runs, and so what `refundflow replay` checks histories against.
WORKFLOWS: Sequence[type] = (RefundWorkflow, OutboxSweepWorkflow, PersonalDataRetentionWorkflow)

# How often a versioned worker that is not current yet looks whether it has been promoted.
ROUTING_CHECK = timedelta(seconds=30)


@dataclass(frozen=True)
class WorkerTuning:
    """How much one worker takes on at once (``REFUNDFLOW_WORKER_*`` settings)."""

    max_concurrent_activities: int = 50
    max_concurrent_local_activities: int = 50
    workflow_task_pollers: int = 5
    max_cached_workflows: int = Settings.model_fields["worker_max_cached_workflows"].default
    graceful_shutdown: timedelta = timedelta(seconds=30)

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkerTuning:
        return cls(
            max_concurrent_activities=settings.worker_max_concurrent_activities,
            max_concurrent_local_activities=settings.worker_max_concurrent_local_activities,
            workflow_task_pollers=settings.worker_workflow_task_pollers,
            max_cached_workflows=settings.worker_max_cached_workflows,
            graceful_shutdown=timedelta(seconds=settings.worker_graceful_shutdown_seconds),
        )


def build_worker(
    client: Client,
    activities: RefundActivities,
    *,
    task_queue: str,
    notify: NotifyActivities | None = None,
    deployment: WorkerDeploymentConfig | None = None,
    tuning: WorkerTuning = WorkerTuning(),
    decisions: Sequence[Callable[..., Any]] | None = None,
    retention: timedelta = timedelta(days=Settings.model_fields["pii_retention_days"].default),
) -> Worker:
    """``notify`` delivers the outbox; without it, only merchant webhooks (configured per
    merchant in the database) go out, which is what tests without mail servers want.
    ``deployment`` makes it a versioned worker (``refundflow.deployment.deployment_config``).
    ``decisions`` replaces the decision activities (the dev stack's fast follow-up).
    ``retention`` is how long finished refunds keep their customer data."""
    notify = notify or NotifyActivities.from_config(
        activities.engine, NotifyConfig(), keyring=activities.keyring
    )
    return Worker(
        client,
        task_queue=task_queue,
        workflows=list(WORKFLOWS),
        activities=[
            *activities.all(),
            *notify.all(),
            *(decisions or all_decisions()),
            *RetentionActivities(activities.engine, retention=retention).all(),
        ],
        # Database steps are plain functions: one thread each, whether they run as local or
        # remote activities, and a few spare for the decisions.
        activity_executor=ThreadPoolExecutor(
            max_workers=tuning.max_concurrent_local_activities + 4
        ),
        max_concurrent_activities=tuning.max_concurrent_activities,
        max_concurrent_local_activities=tuning.max_concurrent_local_activities,
        max_concurrent_workflow_task_polls=tuning.workflow_task_pollers,
        max_cached_workflows=tuning.max_cached_workflows,
        workflow_runner=workflow_runner(_exported_meter(client)),
        graceful_shutdown_timeout=tuning.graceful_shutdown,
        deployment_config=deployment,
    )


def open_keyring(settings: Settings, engine: Engine) -> Keyring:
    """The encryption keys (:class:`refundflow.crypto.KeyringError` without usable ones), with
    every merchant webhook secret and refund's customer data sealed under the current key:
    plaintext ones from before they were sealed, and those of a key being rotated out."""
    keyring = settings.keyring()
    with session_scope(engine) as session:
        resealed = reseal_webhook_secrets(session, keyring=keyring)
    if resealed:
        log.info("sealed %d merchant webhook secret(s) with key %s", resealed, keyring.current)
    with session_scope(engine) as session:
        customers = reseal_personal(session, keyring=keyring)
    if customers:
        log.info("sealed the customer data of %d refund(s) with key %s", customers, keyring.current)
    return keyring


async def run(settings: Settings | None = None) -> None:
    """Serve until SIGTERM or Ctrl-C; then activities running get the graceful-shutdown time
    to finish, and what they leave Temporal hands to the next worker."""
    settings = settings or get_settings()
    settings.refuse_dev_only()
    configure_logging(settings.log_format, settings.log_level)
    configure_exporter(settings)
    activities = RefundActivities.from_settings(settings)
    # Before connecting: a worker without its keys stops at once, saying so.
    keyring = open_keyring(settings, activities.engine)
    client = await connect(settings, runtime=worker_runtime(settings.metrics_port))
    instrument(settings, engine=activities.engine)
    notify = NotifyActivities.from_config(
        activities.engine, NotifyConfig(**settings.notify), keyring=keyring
    )
    deployment = deployment_config(settings)
    worker = build_worker(
        client,
        activities,
        task_queue=settings.task_queue,
        notify=notify,
        deployment=deployment,
        tuning=WorkerTuning.from_settings(settings),
        retention=timedelta(days=settings.pii_retention_days),
    )
    if await ensure_outbox_schedule(client, task_queue=settings.task_queue):
        log.info("created the outbox sweep schedule %s", SCHEDULE_ID)
    if await ensure_retention_schedule(client, task_queue=settings.task_queue):
        log.info("created the customer data retention schedule")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # What exists now (modules, the SDK, the models' metadata: most of the process's objects)
    # lives as long as the process: out of the cyclic collector's full passes, which would
    # otherwise walk it every time and hold the GIL for 150-450 ms (docs/performance.md).
    gc.freeze()
    async with worker:
        background = []
        if deployment is not None:
            watch = watch_until_current(client, version=deployment.version, every=ROUTING_CHECK)
            background.append(asyncio.create_task(watch))
        log.info("worker polling %s on %s", settings.task_queue, describe_target(settings))
        await stop.wait()
        for task in background:
            task.cancel()
    await notify.aclose()
    activities.close()


def _exported_meter(client: Client) -> MetricMeter | None:
    """The meter of the client's runtime when it exports metrics (``worker_runtime``)."""
    runtime = client.service_client.config.runtime
    return runtime.metric_meter if runtime is not None else None


def worker_runtime(metrics_port: int | None) -> Runtime | None:
    """A runtime exporting the SDK's metrics (and the runs' own, ``refundflow_*``) for
    Prometheus on ``metrics_port``. Names and units as Temporal's Grafana dashboard for
    Core-based SDKs expects: no ``_total`` or unit suffixes, durations in milliseconds."""
    if metrics_port is None:
        return None
    return Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(
                bind_address=f"0.0.0.0:{metrics_port}",
                counters_total_suffix=False,
                unit_suffix=False,
                durations_as_seconds=False,
                histogram_bucket_overrides={ACTIVATION_CPU: ACTIVATION_CPU_BUCKETS_MS},
            )
        )
    )


def main() -> None:
    try:
        settings = get_settings()
    except ValidationError as exc:
        raise SystemExit(f"refundflow worker: invalid settings: {describe_invalid(exc)}") from None
    try:
        asyncio.run(run(settings))
    except (KeyringError, DevOnlySetting) as exc:
        raise SystemExit(f"refundflow worker: {exc.code}: {exc}") from None


if __name__ == "__main__":
    main()
