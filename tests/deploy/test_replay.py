"""``refundflow replay``: open refund runs on a real dev server, replayed against today's
RefundWorkflow and against a deliberately incompatible one."""

from __future__ import annotations

import dataclasses
import io
from datetime import timedelta
from pathlib import Path

from rich.console import Console
from temporalio import workflow
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from refundflow.activities.contracts import RefundWorkflowInput
from refundflow.cli.deploy import check_replay
from refundflow.domain.states import RefundStatus
from refundflow.replay import DEFAULT_QUERY, replay_runs
from refundflow.worker import WORKFLOWS
from tests.deploy.conftest import eventually, run_cli, until_status
from tests.workflows.conftest import open_stack


@workflow.defn(name="RefundWorkflow", sandboxed=False)
class WaitsFirstRefundWorkflow:
    """Today's workflow type name and input, but it sleeps before anything else: a change
    that in-flight runs would not replay."""

    @workflow.run
    async def run(self, inp: RefundWorkflowInput) -> None:
        await workflow.sleep(timedelta(days=1))


async def _open_runs(env: WorkflowEnvironment, count: int) -> None:
    async def matched() -> int:
        return (await env.client.count_workflows(DEFAULT_QUERY)).count

    await eventually(matched, lambda n: n == count, f"{count} open runs listed")


async def test_open_refund_replays_on_todays_code_and_not_on_an_incompatible_one(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with open_stack(dev_env, tmp_path) as stack:
        handle = await stack.start("r-wait", await stack.order("o-wait"))
        # Paid out; now it follows up for days until the customer confirms the money arrived.
        await until_status(stack, "r-wait", RefundStatus.AWAITING_FUNDS)
        await _open_runs(dev_env, 1)

        report = await replay_runs(dev_env.client, query=DEFAULT_QUERY, workflows=WORKFLOWS)
        [outcome] = report.outcomes
        assert (outcome.workflow_id, outcome.run_id) == (handle.id, handle.result_run_id)
        assert outcome.ok and outcome.events > 10
        assert report.matched == 1

        out = Console(file=io.StringIO(), width=250)
        status = await check_replay(
            dev_env.client,
            query=DEFAULT_QUERY,
            limit=None,
            workflows=[WaitsFirstRefundWorkflow],
            out=out,
        )
        printed = out.file.getvalue()  # type: ignore[attr-defined]
        assert status == 1
        assert "refund-r-wait" in printed and "NondeterminismError" in printed
        assert "1 of 1 run failed to replay" in printed


async def test_replay_command_fails_on_a_run_the_installed_code_cannot_replay(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with open_stack(dev_env, tmp_path) as stack:
        await stack.start("r-new", await stack.order("o-new"))
        await until_status(stack, "r-new", RefundStatus.AWAITING_FUNDS)
        # A run whose history other code wrote, as if started before an incompatible deploy.
        old_code = dataclasses.replace(stack, task_queue=f"{stack.task_queue}-old")
        async with Worker(
            dev_env.client, task_queue=old_code.task_queue, workflows=[WaitsFirstRefundWorkflow]
        ):
            old = await old_code.start("r-old", await stack.order("o-old"))
            await eventually(
                old.fetch_history,
                lambda h: any(e.HasField("timer_started_event_attributes") for e in h.events),
                "r-old sleeping",
            )
        await _open_runs(dev_env, 2)

        status, out, err = await run_cli(dev_env, "replay")
        assert status == 1, err
        rows = {line.split()[1]: line for line in out.splitlines() if "refund-r-" in line}
        assert rows.keys() == {"refund-r-new", "refund-r-old"}
        assert rows["refund-r-new"].split()[-2] == "ok"
        assert "NondeterminismError" in rows["refund-r-old"]
        assert "1 of 2 runs failed to replay" in out

        status, out, err = await run_cli(dev_env, "replay", "--limit", "1")
        assert "only 1 of 2 matching runs checked" in out, err

        only_new = "WorkflowId = 'refund-r-new'"
        status, out, err = await run_cli(dev_env, "replay", "--query", only_new)
        assert status == 0, err
        assert "ok: 1 run replayed on this code" in out

        status, out, err = await run_cli(dev_env, "replay", "--query", "WorkflowId = 'none'")
        assert (status, out.strip()) == (0, "no runs matched: WorkflowId = 'none'")

        status, out, err = await run_cli(dev_env, "replay", "--query", "NoSuchField = 1")
        assert status == 2 and "bad_query" in err
