"""The production shape as plain processes, as issue 11 asks: PostgreSQL (a database of its own),
a Temporal server that knows nothing of refundflow, `refundflow check` failing, `refundflow
setup`, `refundflow check` passing, then `refundflow api` and two `refundflow worker` processes
with only `REFUNDFLOW_*` in their environment and the provider simulators configured as real
providers (sandbox off). Refunds through the HTTP API across every provider; one worker SIGKILLed
midway and left dead; then every refund is in its final state, no payout key paid twice at any
provider, and the books balance.

A round of ``PROD_SMOKE_REFUNDS`` refunds (12 with the suite; ``make prod-smoke`` runs 50 and
prints the figures and both `check` tables)."""

from __future__ import annotations

import os
from pathlib import Path

import httpx

from refundflow.workflows import search_attributes as sa
from tests.chaos.round import run_round
from tests.chaos.stack import ChaosStack, chaos_stack

REFUNDS = int(os.environ.get("PROD_SMOKE_REFUNDS", "12"))


async def test_the_production_shape_survives_a_dead_worker(
    tmp_path: Path, fresh_database: str
) -> None:
    async with chaos_stack(
        tmp_path, fresh_database, workers=2, production=True, start=False
    ) as stack:
        await stack.start_backing()
        _check_refuses_an_unready_cluster(stack)
        stack.set_up()
        ready = stack.cli("check")
        assert ready.returncode == 0, ready.stdout + ready.stderr
        assert "problem" not in ready.stdout and "warning" not in ready.stdout, ready.stdout
        print(f"\n$ refundflow check  # after refundflow setup\n{ready.stdout}")

        await stack.start_services()
        for name in ("api", "worker-1", "worker-2"):
            environment = stack.processes.environment(name)
            foreign = [k for k in environment if not _ours(k)]
            assert foreign == [], f"{name} inherited {foreign}"
            assert "REFUNDFLOW_SANDBOX" not in environment  # every route pays a provider

        result = await run_round(
            stack, REFUNDS, [], kill_temporal=False, kill_worker_midway=True, patience_s=1800
        )
        report = result.report
        print(f"prod smoke: {report.line().removeprefix('chaos round: ')}")
        problems = result.findings.problems
        assert not problems, f"{report.line()}\n" + "\n".join(problems)
        assert (report.worker_kills, report.duplicates, report.lost) == (1, 0, 0)
        assert report.completed == report.refunds == REFUNDS
        assert not stack.processes.alive("worker-1") and stack.processes.alive("worker-2")
        await _survivor_exports_metrics(stack)
        assert stack.mailbox.recipients, "no customer email went out"


def _check_refuses_an_unready_cluster(stack: ChaosStack) -> None:
    """Before setup: an empty database and a namespace without refundflow's attributes."""
    unready = stack.cli("check")
    print(f"\n$ refundflow check  # before refundflow setup\n{unready.stdout}")
    assert unready.returncode == 1, unready.stdout + unready.stderr
    lines = unready.stdout.splitlines()
    for key in sa.ALL:
        assert any(key.name in line and "missing" in line for line in lines), unready.stdout
    assert any("migrations" in line and "at nothing" in line for line in lines), unready.stdout


def _ours(variable: str) -> bool:
    return variable.startswith("REFUNDFLOW_")


async def _survivor_exports_metrics(stack: ChaosStack) -> None:
    """The worker that lived exported the SDK's metrics and the runs' own on its port."""
    url = f"http://127.0.0.1:{stack.metrics_ports[1]}/metrics"
    async with httpx.AsyncClient(timeout=10) as http:
        scraped = (await http.get(url)).text
    assert "refundflow_payout_outcomes" in scraped
    assert "temporal_workflow_task_execution_latency" in scraped
