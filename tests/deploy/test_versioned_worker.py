"""Worker Versioning: settings that turn it on (or refuse to), and a versioned worker on a real
dev server that gets refund runs only once its build is current."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError
from temporalio.api.enums.v1 import VersioningBehavior as VersioningBehaviorProto
from temporalio.common import VersioningBehavior, WorkerDeploymentVersion
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from refundflow.deployment import (
    DeploymentRouting,
    deployment_config,
    describe_deployment,
    watch_until_current,
)
from refundflow.domain.states import ReceiptReport, RefundStatus
from refundflow.settings import Settings
from refundflow.workflows.refund import RefundWorkflow
from tests.deploy.conftest import eventually, run_cli, until_status
from tests.workflows.conftest import open_stack


def test_versioning_is_off_without_a_build_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REFUNDFLOW_BUILD_ID", raising=False)
    monkeypatch.delenv("REFUNDFLOW_DEPLOYMENT_NAME", raising=False)
    assert deployment_config(Settings()) is None


def test_a_build_id_makes_an_auto_upgrade_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFUNDFLOW_BUILD_ID", "2026-12-01.abc123")
    config = deployment_config(Settings())
    assert config is not None and config.use_worker_versioning
    assert config.version == WorkerDeploymentVersion("refundflow", "2026-12-01.abc123")
    assert config.default_versioning_behavior is VersioningBehavior.AUTO_UPGRADE


@pytest.mark.parametrize(
    ("environ", "reason"),
    [
        ({"REFUNDFLOW_DEPLOYMENT_NAME": "refunds"}, "REFUNDFLOW_BUILD_ID is not"),
        ({"REFUNDFLOW_BUILD_ID": " "}, "REFUNDFLOW_BUILD_ID is empty"),
        ({"REFUNDFLOW_BUILD_ID": "b1", "REFUNDFLOW_DEPLOYMENT_NAME": "a.b"}, "contain no '.'"),
    ],
)
def test_half_configured_versioning_is_refused(
    monkeypatch: pytest.MonkeyPatch, environ: dict[str, str], reason: str
) -> None:
    monkeypatch.delenv("REFUNDFLOW_BUILD_ID", raising=False)
    monkeypatch.delenv("REFUNDFLOW_DEPLOYMENT_NAME", raising=False)
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError, match=reason):
        Settings()


async def test_versioned_worker_gets_refunds_once_its_build_is_current(
    dev_env: WorkflowEnvironment, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="refundflow.deployment")
    name = f"refunds-{uuid.uuid4().hex[:6]}"
    config = deployment_config(Settings(build_id="build-1", deployment_name=name))
    assert config is not None
    client = dev_env.client
    async with open_stack(dev_env, tmp_path, deployment=config) as stack:
        watch = asyncio.create_task(
            watch_until_current(client, version=config.version, every=timedelta(seconds=0.5))
        )
        handle = await stack.start("r-v1", await stack.order("o-v1"))

        # The worker's first poll registers its version, but no version is current yet: the
        # run's first task waits for unversioned workers, and the watch says so.
        async def routing_now() -> DeploymentRouting | None:
            try:
                return await describe_deployment(client, deployment_name=name)
            except RPCError as exc:  # "too many requests" while the version registers
                if exc.status is RPCStatusCode.RESOURCE_EXHAUSTED:
                    return None
                raise

        routing = await eventually(
            routing_now,
            lambda r: r is not None and [b.build_id for b in r.builds] == ["build-1"],
            "build-1 registered",
        )
        assert routing is not None and routing.current_build_id is None
        await eventually(
            lambda: asyncio.sleep(0, caplog.text),
            lambda text: "build-1 of worker deployment" in text and "is not current" in text,
            "the not-current warning",
        )
        history = await handle.fetch_history()
        assert not any(e.HasField("workflow_task_started_event_attributes") for e in history.events)

        status, out, err = await run_cli(
            dev_env, "deploy", "promote", "--deployment", name, "--build-id", "build-1"
        )
        assert status == 0, err
        assert f"deployment {name}: build build-1 is current (was: unversioned workers)" in out
        await asyncio.wait_for(watch, timeout=30)
        assert "build-1 is the current version" in caplog.text

        await until_status(stack, "r-v1", RefundStatus.AWAITING_FUNDS)
        await handle.execute_update(RefundWorkflow.receipt, ReceiptReport(received=True))
        result = await asyncio.wait_for(handle.result(), timeout=60)
        assert result.status is RefundStatus.COMPLETED
        info = (await handle.describe()).raw_description.workflow_execution_info.versioning_info
        assert info.behavior == VersioningBehaviorProto.VERSIONING_BEHAVIOR_AUTO_UPGRADE
        assert (info.deployment_version.deployment_name, info.deployment_version.build_id) == (
            name,
            "build-1",
        )

        status, out, err = await run_cli(dev_env, "deploy", "status", "--deployment", name)
        assert status == 0, err
        assert f"deployment {name}: current build build-1" in out
        assert "current" in out.split("build-1", 2)[-1]
