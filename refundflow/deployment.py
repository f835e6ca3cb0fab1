"""Worker Versioning: which build a worker is, and which build Temporal sends refund runs to.

A refund run lives for weeks or months, so every run meets many deploys. A worker started with
``REFUNDFLOW_BUILD_ID`` polls as the Worker Deployment Version
``<REFUNDFLOW_DEPLOYMENT_NAME>.<REFUNDFLOW_BUILD_ID>`` and marks the runs it starts
AUTO_UPGRADE: at its next workflow task, a run moves to whichever version is current. PINNED
would keep each run on the build that started it, so every build of the last few months would
have to keep running. Auto-upgrade asks instead that new code replays old histories: changes
go behind ``workflow.patched``, and ``refundflow replay`` checks the open runs before a build
is promoted.

Temporal routes tasks to a version only once it is *current*. Until then new runs and
auto-upgrade runs go to the current version, or to unversioned workers while none is current,
and a new build polls but gets nothing. An operator makes it current with
``refundflow deploy promote`` (this module's ``make_current``) or
``temporal worker deployment set-current-version``. Without ``REFUNDFLOW_BUILD_ID`` none of
this applies: the worker is unversioned, as before.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta

from temporalio.api.enums.v1 import WorkerDeploymentVersionStatus
from temporalio.api.workflowservice.v1 import (
    DescribeWorkerDeploymentRequest,
    SetWorkerDeploymentCurrentVersionRequest,
)
from temporalio.client import Client
from temporalio.common import VersioningBehavior, WorkerDeploymentVersion
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import WorkerDeploymentConfig

from refundflow.settings import Settings

log = logging.getLogger(__name__)

VERSIONING_BEHAVIOR = VersioningBehavior.AUTO_UPGRADE
_STATUS_PREFIX = "WORKER_DEPLOYMENT_VERSION_STATUS_"


def deployment_version(settings: Settings) -> WorkerDeploymentVersion | None:
    """This worker's version, or None when versioning is off (no build id)."""
    if settings.build_id is None:
        return None
    return WorkerDeploymentVersion(
        deployment_name=settings.deployment_name, build_id=settings.build_id
    )


def deployment_config(settings: Settings) -> WorkerDeploymentConfig | None:
    version = deployment_version(settings)
    if version is None:
        return None
    return WorkerDeploymentConfig(
        version=version,
        use_worker_versioning=True,
        default_versioning_behavior=VERSIONING_BEHAVIOR,
    )


@dataclass(frozen=True)
class BuildStatus:
    build_id: str
    status: str
    """``current``, ``ramping``, ``draining``, ``drained`` or ``inactive`` (never current)."""


@dataclass(frozen=True)
class DeploymentRouting:
    """Where a Worker Deployment's tasks go."""

    deployment_name: str
    current_build_id: str | None
    """None: no version is current, so unversioned workers get the work."""
    ramping_build_id: str | None
    ramping_percentage: float
    builds: tuple[BuildStatus, ...]


async def describe_deployment(client: Client, *, deployment_name: str) -> DeploymentRouting | None:
    """None when the server knows no such deployment: no versioned worker of it has polled."""
    request = DescribeWorkerDeploymentRequest(
        namespace=client.namespace, deployment_name=deployment_name
    )
    try:
        response = await client.workflow_service.describe_worker_deployment(request)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    info = response.worker_deployment_info
    routing = info.routing_config
    return DeploymentRouting(
        deployment_name=deployment_name,
        current_build_id=routing.current_deployment_version.build_id or None,
        ramping_build_id=routing.ramping_deployment_version.build_id or None,
        ramping_percentage=routing.ramping_version_percentage,
        builds=tuple(
            BuildStatus(
                build_id=summary.deployment_version.build_id,
                status=WorkerDeploymentVersionStatus.Name(summary.status)
                .removeprefix(_STATUS_PREFIX)
                .lower(),
            )
            for summary in info.version_summaries
        ),
    )


async def make_current(client: Client, *, version: WorkerDeploymentVersion) -> str | None:
    """Route the deployment's new runs and every auto-upgrade run to ``version``; returns the
    build that was current before (None: unversioned workers).

    The server refuses a version none of whose workers has polled yet, and one that does not
    poll every task queue the current version polls, so a build that is not up cannot become
    current."""
    request = SetWorkerDeploymentCurrentVersionRequest(
        namespace=client.namespace,
        deployment_name=version.deployment_name,
        build_id=version.build_id,
        identity=client.identity,
    )
    response = await client.workflow_service.set_worker_deployment_current_version(request)
    return response.previous_deployment_version.build_id or None


async def watch_until_current(
    client: Client, *, version: WorkerDeploymentVersion, every: timedelta
) -> None:
    """Runs beside a versioned worker: warns once while its version is not current (it gets no
    work then), and returns once it is. A worker idle for want of a promotion would otherwise
    look exactly like a worker with nothing to do."""
    warned = False
    while True:
        try:
            routing = await describe_deployment(client, deployment_name=version.deployment_name)
        except RPCError as exc:
            # The server answers "too many requests, try again later" while it is busy
            # registering a version; the next look will do.
            if exc.status != RPCStatusCode.RESOURCE_EXHAUSTED:
                log.warning("cannot read worker deployment %s: %s", version.deployment_name, exc)
            routing = None
        current = routing.current_build_id if routing else None
        if current == version.build_id:
            log.info(
                "build %s is the current version of worker deployment %s: refund runs come here",
                version.build_id,
                version.deployment_name,
            )
            return
        if not warned:
            log.warning(
                "build %s of worker deployment %s is not current (current: %s), so Temporal "
                "sends it no work; once `refundflow replay` passes, run "
                "`refundflow deploy promote --build-id %s`",
                version.build_id,
                version.deployment_name,
                f"build {current}" if current else "unversioned workers",
                version.build_id,
            )
            warned = True
        await asyncio.sleep(every.total_seconds())
