"""The worker runs every workflow in the SDK's sandbox, made cheap to enter but as strict."""

from __future__ import annotations

import importlib
import importlib.machinery
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio import workflow
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from refundflow.activities.refund import RefundActivities
from refundflow.db.engine import make_engine
from refundflow.worker import WorkerTuning, build_worker
from refundflow.worker_sandbox import PASSTHROUGH, workflow_runner
from refundflow.workflows.refund import RefundWorkflow
from tests.payload_keys import DB_KEYRING


async def test_the_worker_runs_workflows_sandboxed_with_its_cache_size(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'refundflow.db'}")
    activities = RefundActivities(engine, {}, keyring=DB_KEYRING)
    worker = build_worker(
        env.client,
        activities,
        task_queue="refunds-config",
        tuning=WorkerTuning(max_cached_workflows=7),
    )
    config = worker.config()
    assert isinstance(config["workflow_runner"], SandboxedWorkflowRunner)
    assert config.get("max_cached_workflows") == 7
    # The workflow's own modules are never passed through: the sandbox checks them.
    restrictions = config["workflow_runner"].restrictions
    assert not restrictions.passthrough_all_modules
    assert not any(name.startswith("refundflow.workflows.refund") for name in PASSTHROUGH)
    engine.dispose()


async def test_a_nondeterministic_call_in_workflow_code_fails(env: WorkflowEnvironment) -> None:
    # Imported by name: a static import of it made mypy type other tests' workflow handles as
    # Never (the import order of its cycle), whatever the probe says.
    probe: Any = importlib.import_module("tests.sandbox_probe").WallClockWorkflow
    task_queue = f"probe-{uuid.uuid4().hex[:8]}"
    async with Worker(
        env.client,
        task_queue=task_queue,
        workflows=[probe],
        workflow_runner=workflow_runner(),
    ):
        with pytest.raises(WorkflowFailureError) as failed:
            await env.client.execute_workflow(
                probe.run, id=f"probe-{uuid.uuid4().hex}", task_queue=task_queue
            )
    assert "Cannot access datetime.datetime.now" in str(failed.value.cause)


async def test_each_run_gets_fresh_workflow_modules_compiled_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sandbox still imports the workflow modules anew for every run (a run's module state
    is its own), from code compiled the first time only."""
    runner = workflow_runner()
    definition = workflow._Definition.must_from_class(RefundWorkflow)
    runner.prepare_workflow(definition)  # whatever this process has not compiled yet

    compiled: list[str] = []
    compile_source = importlib.machinery.SourceFileLoader.get_code

    def counting(loader: importlib.machinery.SourceFileLoader, fullname: str) -> Any:
        compiled.append(fullname)
        return compile_source(loader, fullname)

    monkeypatch.setattr(importlib.machinery.SourceFileLoader, "get_code", counting)
    executed: list[str] = []
    exec_module = importlib.machinery.SourceFileLoader.exec_module

    def executing(loader: importlib.machinery.SourceFileLoader, module: Any) -> None:
        executed.append(module.__name__)
        exec_module(loader, module)

    monkeypatch.setattr(importlib.machinery.SourceFileLoader, "exec_module", executing)
    runner.prepare_workflow(definition)
    runner.prepare_workflow(definition)
    assert executed.count("refundflow.workflows.refund.workflow") == 2
    assert compiled == []
