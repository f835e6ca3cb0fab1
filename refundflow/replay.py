"""Replay the histories of live refund runs against the workflow code installed here.

Workers auto-upgrade (``refundflow.deployment``): once a new build is current, every open run
continues on it at its next task, and a run whose history the new code would not reproduce
fails there, possibly months after it started. Replaying those histories first, with exactly
the worker's workflows, sandbox and data converter, finds such a change before any run meets it.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from temporalio.client import Client, WorkflowHistory
from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter
from temporalio.service import RPCError
from temporalio.worker import Replayer

from refundflow.worker_sandbox import workflow_runner

DEFAULT_QUERY = "WorkflowType = 'RefundWorkflow' AND ExecutionStatus = 'Running'"
# The Rust core wraps the reason in a debug dump of its failure struct; this is the reason.
_CORE_MESSAGE = re.compile(r'message: "((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class ReplayOutcome:
    workflow_id: str
    run_id: str
    events: int
    failure: str | None
    """None when the run replays; else why not, in one line."""

    @property
    def ok(self) -> bool:
        return self.failure is None


@dataclass(frozen=True)
class ReplayReport:
    query: str
    matched: int
    """How many runs the query matches (more than replayed when a limit cut the list)."""
    outcomes: list[ReplayOutcome]

    @property
    def failures(self) -> list[ReplayOutcome]:
        return [o for o in self.outcomes if not o.ok]


def one_line(exc: BaseException) -> str:
    text = str(exc)
    core = _CORE_MESSAGE.search(text)
    reason = core.group(1) if core else text
    return f"{type(exc).__name__}: {' '.join(reason.split())}"


def _quiet_runtime() -> Runtime:
    """The SDK core logs every failed replay as a warning on stdout; the report already says
    it, in one line per run, so only errors get through."""
    errors_only = TelemetryFilter(core_level="ERROR", other_level="ERROR")
    return Runtime(telemetry=TelemetryConfig(logging=LoggingConfig(filter=errors_only)))


async def replay_runs(
    client: Client, *, query: str, workflows: Sequence[type], limit: int | None = None
) -> ReplayReport:
    """Replay every run the visibility ``query`` lists (at most ``limit``) against
    ``workflows``. One run failing, or its history being gone, does not stop the others."""
    matched = (await client.count_workflows(query)).count
    outcomes: list[ReplayOutcome] = []
    # The replayer hands back each history it was given; this says which run it came from.
    runs: dict[int, tuple[WorkflowHistory, str]] = {}

    async def histories() -> AsyncIterator[WorkflowHistory]:
        async for execution in client.list_workflows(query, limit=limit):
            handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
            try:
                history = await handle.fetch_history()
            except RPCError as exc:
                failure = f"history unavailable: {exc.message}"
                outcomes.append(ReplayOutcome(execution.id, execution.run_id, 0, failure))
                continue
            runs[id(history)] = (history, execution.run_id)
            yield history

    replayer = Replayer(
        workflows=list(workflows),
        # The client's converter: its payload keys decrypt the histories it fetched.
        data_converter=client.data_converter,
        workflow_runner=workflow_runner(),
        runtime=_quiet_runtime(),
    )
    async with replayer.workflow_replay_iterator(histories()) as results:
        async for result in results:
            history, run_id = runs.pop(id(result.history))
            failure = result.replay_failure
            outcomes.append(
                ReplayOutcome(
                    workflow_id=history.workflow_id,
                    run_id=run_id,
                    events=len(history.events),
                    failure=one_line(failure) if failure else None,
                )
            )
    return ReplayReport(query=query, matched=matched, outcomes=outcomes)
