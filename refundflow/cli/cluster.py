"""``refundflow setup`` and ``refundflow check``: make a Temporal namespace and a database ready
for refundflow, and tell whether everything a process needs is there (a container healthcheck
and the first thing to run when something is off)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from temporalio.client import Client

from refundflow.cli.deploy import settings_or_exit
from refundflow.cluster import (
    Finding,
    Outcome,
    create_namespace,
    database_findings,
    encryption_finding,
    namespace_finding,
    notification_finding,
    payload_key_finding,
    provider_finding,
    retention_schedule_finding,
    schedule_finding,
    search_attribute_findings,
)
from refundflow.connection import ConnectionSettingsError, connect, describe_target
from refundflow.crypto import KeyringError
from refundflow.db.migrate import upgrade
from refundflow.settings import Settings
from refundflow.workflows.outbox import ensure_outbox_schedule
from refundflow.workflows.retention import ensure_retention_schedule

console = Console()
_STYLE = {
    Outcome.OK: "green",
    Outcome.CHANGED: "cyan",
    Outcome.WARNING: "yellow",
    Outcome.PROBLEM: "red",
}


def setup(
    create_namespace: Annotated[
        bool,
        typer.Option(help="Create the namespace when it does not exist (e.g. in docker-compose)."),
    ] = False,
    retention_days: Annotated[
        int, typer.Option(min=1, help="Retention of a namespace created here.")
    ] = 30,
) -> None:
    """Migrate the database, register the search attributes, check the namespace and create
    the outbox sweep and customer data retention schedules. Safe to run again: what is there
    is left as it is."""
    settings = settings_or_exit()
    retention = timedelta(days=retention_days) if create_namespace else None
    findings = asyncio.run(_setup(settings, create_with_retention=retention))
    _report("refundflow setup", findings)


def check() -> None:
    """Preflight: database at the migration head, encryption and payload keys, Temporal and
    its namespace (and its retention against the customer data rule), search attributes,
    schedules, providers for every route, notification channels. Exit 1 on any problem."""
    settings = settings_or_exit()
    findings = asyncio.run(_check(settings))
    _report("refundflow check", findings)


async def _setup(settings: Settings, *, create_with_retention: timedelta | None) -> list[Finding]:
    findings: list[Finding] = []
    try:
        upgrade(settings.resolved_database_url)
        findings.append(Finding("database", Outcome.OK, "migrated to head"))
    except Exception as exc:
        return [Finding("database", Outcome.PROBLEM, f"migration failed: {exc}")]
    client = await _client(settings, findings)
    if client is None:
        return findings
    if create_with_retention is not None:
        findings.append(await create_namespace(client, retention=create_with_retention))
    findings.append(await namespace_finding(client, settings))
    if findings[-1].failed:
        return findings
    findings += await search_attribute_findings(client, register=True)
    created = await ensure_outbox_schedule(client, task_queue=settings.task_queue)
    findings.append(
        Finding("outbox sweep", Outcome.CHANGED if created else Outcome.OK, "schedule ready")
    )
    created = await ensure_retention_schedule(client, task_queue=settings.task_queue)
    findings.append(
        Finding(
            "data retention",
            Outcome.CHANGED if created else Outcome.OK,
            f"schedule ready: customer data erased {settings.pii_retention_days} days after"
            " a refund finishes",
        )
    )
    return findings


async def _check(settings: Settings) -> list[Finding]:
    findings = database_findings(settings)
    findings += [
        provider_finding(settings),
        notification_finding(settings),
        encryption_finding(settings),
        payload_key_finding(settings),
    ]
    if findings[-1].failed:
        return findings  # nothing reaches Temporal unencrypted
    client = await _client(settings, findings)
    if client is None:
        return findings
    findings.append(await namespace_finding(client, settings))
    if not findings[-1].failed:
        findings += await search_attribute_findings(client, register=False)
        findings.append(await schedule_finding(client))
        findings.append(await retention_schedule_finding(client, settings))
    return findings


async def _client(settings: Settings, findings: list[Finding]) -> Client | None:
    try:
        client = await connect(settings)
    except KeyringError as exc:
        findings.append(Finding("payload keys", Outcome.PROBLEM, exc.message))
        return None
    except ConnectionSettingsError as exc:
        findings.append(Finding("temporal", Outcome.PROBLEM, str(exc)))
        return None
    except RuntimeError as exc:
        findings.append(
            Finding("temporal", Outcome.PROBLEM, f"{describe_target(settings)} unreachable: {exc}")
        )
        return None
    findings.append(Finding("temporal", Outcome.OK, describe_target(settings)))
    return client


def _report(title: str, findings: list[Finding]) -> None:
    table = Table(title=title)
    for column in ("what", "", "detail"):
        table.add_column(column)
    for finding in findings:
        style = _STYLE[finding.outcome]
        table.add_row(finding.what, f"[{style}]{finding.outcome.value}[/{style}]", finding.detail)
    console.print(table)
    problems = sum(f.failed for f in findings)
    if problems:
        console.print(f"[red]{problems} problem(s)[/red]")
        raise typer.Exit(code=1)
    console.print("[green]ready[/green]")
