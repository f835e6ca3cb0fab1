"""The refundflow worker: runs RefundWorkflow and its activities against Temporal.

``python -m refundflow.worker`` (or ``refundflow worker``) connects with the settings in the
environment (``REFUNDFLOW_TEMPORAL_ADDRESS``, ``REFUNDFLOW_TEMPORAL_NAMESPACE``,
``REFUNDFLOW_TASK_QUEUE``) and stops gracefully on SIGTERM or Ctrl-C: running activities get
time to finish and nothing in flight is lost, since Temporal hands it to the next worker.
With ``REFUNDFLOW_BUILD_ID`` it is a versioned worker (``refundflow.deployment``): it gets work
only once its build is the deployment's current version.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Engine
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker, WorkerDeploymentConfig
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from refundflow.activities.decisions import all_decisions
from refundflow.activities.notify import NotifyActivities, sweep_outbox
from refundflow.activities.refund import RefundActivities
from refundflow.crypto import Keyring, KeyringError
from refundflow.db.engine import session_scope
from refundflow.db.repository import reseal_webhook_secrets
from refundflow.deployment import deployment_config, watch_until_current
from refundflow.notify.config import NotifyConfig
from refundflow.settings import DevOnlySetting, Settings, describe_invalid, get_settings
from refundflow.workflows.refund import RefundWorkflow

log = logging.getLogger(__name__)

# What a worker runs, and so what `refundflow replay` checks histories against.
WORKFLOWS: Sequence[type] = (RefundWorkflow,)

# Pure modules loaded once and shared by every workflow run instead of being re-imported into
# each sandbox (measured: ~35x the time and ~7x the memory otherwise). The activity modules are
# here because the run names their activities by method reference; their code never runs in a
# workflow. The workflow's own modules stay sandboxed: the sandbox checks them.
PASSTHROUGH = (
    "refundflow.domain",
    "refundflow.activities",
    "refundflow.gateways",
    "refundflow.db",
    "refundflow.notify",
    "refundflow.settings",
    "refundflow.workflows.search_attributes",
    "pydantic",
    "pydantic_core",
    "babel",
    "holidays",
    "iso4217",
    "yaml",
)


# How often a versioned worker that is not current yet looks whether it has been promoted.
ROUTING_CHECK = timedelta(seconds=30)


def workflow_runner() -> SandboxedWorkflowRunner:
    restrictions = SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH)
    return SandboxedWorkflowRunner(restrictions=restrictions)


async def connect(settings: Settings) -> Client:
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
    )


def build_worker(
    client: Client,
    activities: RefundActivities,
    *,
    task_queue: str,
    notify: NotifyActivities | None = None,
    max_threads: int = 8,
    deployment: WorkerDeploymentConfig | None = None,
    decisions: Sequence[Callable[..., Any]] | None = None,
) -> Worker:
    """``notify`` delivers the outbox; without it, only merchant webhooks (configured per
    merchant in the database) go out, which is what tests without mail servers want.
    ``deployment`` makes it a versioned worker (``refundflow.deployment.deployment_config``).
    ``decisions`` replaces the decision activities (the dev stack's fast follow-up)."""
    notify = notify or NotifyActivities.from_config(activities.engine, NotifyConfig())
    return Worker(
        client,
        task_queue=task_queue,
        workflows=list(WORKFLOWS),
        activities=[*activities.all(), *notify.all(), *(decisions or all_decisions())],
        # Database activities are plain functions; they run on this pool.
        activity_executor=ThreadPoolExecutor(max_workers=max_threads),
        workflow_runner=workflow_runner(),
        graceful_shutdown_timeout=timedelta(seconds=30),
        deployment_config=deployment,
    )


def open_keyring(settings: Settings, engine: Engine) -> Keyring:
    """The encryption keys (:class:`refundflow.crypto.KeyringError` without usable ones), with
    every merchant webhook secret sealed under the current key: plaintext ones from before
    secrets were sealed, and those of a key being rotated out."""
    keyring = settings.keyring()
    with session_scope(engine) as session:
        resealed = reseal_webhook_secrets(session, keyring=keyring)
    if resealed:
        log.info("sealed %d merchant webhook secret(s) with key %s", resealed, keyring.current)
    return keyring


async def run(settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    settings.refuse_dev_only()
    activities = RefundActivities.from_settings(settings)
    keyring = open_keyring(settings, activities.engine)
    client = await connect(settings)
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
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with worker:
        background = [asyncio.create_task(sweep_outbox(notify))]
        if deployment is not None:
            watch = watch_until_current(client, version=deployment.version, every=ROUTING_CHECK)
            background.append(asyncio.create_task(watch))
        await stop.wait()
        for task in background:
            task.cancel()
    await notify.aclose()
    activities.close()


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
