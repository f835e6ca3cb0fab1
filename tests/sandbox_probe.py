"""A workflow that reads the wall clock: the sandbox must refuse it. Its own module, so the
sandbox imports it as it imports refundflow's workflow modules (not passed through)."""

from __future__ import annotations

from datetime import datetime

from temporalio import workflow


@workflow.defn(failure_exception_types=[workflow.NondeterminismError])
class WallClockWorkflow:
    @workflow.run
    async def run(self) -> str:
        return datetime.now().isoformat()
