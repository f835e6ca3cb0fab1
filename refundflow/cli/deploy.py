"""Deploying new workflow code: ``refundflow replay`` (the gate) and ``refundflow deploy``
(which build Temporal sends work to). Both talk to Temporal directly, as the worker does.

Temporal, the worker and the workflow code load only when one of these commands runs, so the
rest of the ``refundflow`` command starts as fast as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from refundflow.cli.output import console, die, say_error
from refundflow.settings import Settings, describe_invalid, get_settings

if TYPE_CHECKING:
    from temporalio.client import Client

    from refundflow.deployment import DeploymentRouting
    from refundflow.replay import ReplayReport

deploy_app = typer.Typer(
    help="Worker Versioning: which build of the worker Temporal sends refund runs to.",
    no_args_is_help=True,
)

BuildIdOption = Annotated[
    str | None,
    typer.Option(help="The build to act on; REFUNDFLOW_BUILD_ID when omitted."),
]
DeploymentOption = Annotated[
    str | None,
    typer.Option(help="The Worker Deployment; REFUNDFLOW_DEPLOYMENT_NAME when omitted."),
]


def settings_or_exit() -> Settings:
    """The environment's settings, or a one-line reason and exit status 2."""
    try:
        return get_settings()
    except ValidationError as exc:
        die("invalid_settings", describe_invalid(exc))


async def _connect(settings: Settings) -> Client:
    from refundflow.connection import ConnectionSettingsError, connect, describe_target
    from refundflow.crypto import KeyringError

    try:
        return await connect(settings)
    except KeyringError as exc:
        die(exc.code, exc.message)
    except ConnectionSettingsError as exc:
        die("invalid_settings", str(exc))
    except RuntimeError as exc:  # the SDK reports an unreachable server this way
        die("unreachable", f"{describe_target(settings)}: {exc}")


# ---- refundflow replay


def replay(
    query: Annotated[
        str | None,
        typer.Option(help="Visibility query; default: every open RefundWorkflow run."),
    ] = None,
    limit: Annotated[
        int, typer.Option(min=1, help="Replay at most this many of the matching runs.")
    ] = 1000,
) -> None:
    """Replay open runs against the workflow code installed here: the pre-deploy gate.

    Exit status 1 if any run would not replay (a change that needs workflow.patched), 2 if
    the query or the connection fails, 0 otherwise (also when no run matches)."""
    from refundflow.replay import DEFAULT_QUERY
    from refundflow.worker import WORKFLOWS

    settings = settings_or_exit()

    async def main() -> int:
        client = await _connect(settings)
        return await check_replay(
            client, query=query or DEFAULT_QUERY, limit=limit, workflows=WORKFLOWS
        )

    raise typer.Exit(code=asyncio.run(main()))


async def check_replay(
    client: Client,
    *,
    query: str,
    limit: int | None,
    workflows: Sequence[type],
    out: Console | None = None,
) -> int:
    """``refundflow replay`` without the argument parsing: prints the table and the summary
    and returns the exit status (0 all replayed or none matched, 1 a run failed, 2 a bad
    query)."""
    from temporalio.service import RPCError, RPCStatusCode

    from refundflow.replay import replay_runs

    out = out or console
    try:
        report = await replay_runs(client, query=query, workflows=workflows, limit=limit)
    except RPCError as exc:  # listing failed; a single run's history failing is in the table
        code = "bad_query" if exc.status is RPCStatusCode.INVALID_ARGUMENT else "temporal_error"
        say_error(code, exc.message)
        return 2
    _print_report(report, out)
    return 1 if report.failures else 0


def _print_report(report: ReplayReport, out: Console) -> None:
    if not report.outcomes:
        out.print(f"no runs matched: {report.query}", highlight=False)
        return
    table = Table(title="Replay against the workflow code installed here")
    for column in ("workflow id", "run id", "events", "result"):
        table.add_column(column, justify="right" if column == "events" else "left")
    for outcome in report.outcomes:
        # A failure reads like "[TMPRL1100] ...": plain text, not Rich markup.
        result = Text("ok", style="green") if outcome.ok else Text(str(outcome.failure), "red")
        table.add_row(outcome.workflow_id, outcome.run_id, str(outcome.events), result)
    out.print(table)
    replayed, failed = len(report.outcomes), len(report.failures)
    if report.matched > replayed:
        out.print(f"only {replayed} of {report.matched} matching runs checked: --limit raises it")
    runs = f"{replayed} run" + ("s" if replayed != 1 else "")
    if failed:
        out.print(
            f"[red]{failed} of {runs} failed to replay[/red]: do not promote this build; "
            "guard the change with workflow.patched",
            highlight=False,
        )
    else:
        out.print(f"[green]ok: {runs} replayed on this code[/green]", highlight=False)


# ---- refundflow deploy


def _version_from(
    settings: Settings, build_id: str | None, deployment: str | None
) -> tuple[str, str]:
    build = build_id or settings.build_id
    if not build:
        die("missing_build_id", "pass --build-id or set REFUNDFLOW_BUILD_ID")
    name = deployment or settings.deployment_name
    if "." in name:
        die("invalid_deployment_name", f"{name!r}: a deployment name contains no '.'")
    return name, build


@deploy_app.command("promote")
def promote(build_id: BuildIdOption = None, deployment: DeploymentOption = None) -> None:
    """Make a build current: new runs and, at their next task, all open runs go to it.

    Its workers must be polling already; run `refundflow replay` with its code first."""
    from temporalio.common import WorkerDeploymentVersion
    from temporalio.service import RPCError

    from refundflow.deployment import make_current

    settings = settings_or_exit()
    name, build = _version_from(settings, build_id, deployment)

    async def main() -> str | None:
        client = await _connect(settings)
        version = WorkerDeploymentVersion(deployment_name=name, build_id=build)
        try:
            return await make_current(client, version=version)
        except RPCError as exc:
            die("not_promoted", exc.message)

    previous = asyncio.run(main())
    before = f"build {previous}" if previous else "unversioned workers"
    console.print(f"deployment {name}: build {build} is current (was: {before})", highlight=False)


@deploy_app.command("status")
def status(deployment: DeploymentOption = None) -> None:
    """Which build is current (gets the work) and which builds the server has seen."""
    from refundflow.deployment import describe_deployment

    settings = settings_or_exit()
    name = deployment or settings.deployment_name

    async def main() -> DeploymentRouting | None:
        return await describe_deployment(await _connect(settings), deployment_name=name)

    routing = asyncio.run(main())
    if routing is None:
        die("no_deployment", f"{name}: no versioned worker of it has polled this namespace")
    current = routing.current_build_id or "none (unversioned workers get the work)"
    console.print(f"deployment {name}: current build {current}", highlight=False)
    if routing.ramping_build_id:
        console.print(
            f"ramping build {routing.ramping_build_id} at {routing.ramping_percentage:g}%",
            highlight=False,
        )
    table = Table()
    table.add_column("build id")
    table.add_column("status")
    for build in routing.builds:
        table.add_row(build.build_id, build.status)
    console.print(table)
