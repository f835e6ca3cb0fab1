"""What a run leaves: the machine it ran on, a JSON file of every figure under
``bench/results/<date>-<commit>.json``, and a summary table on the terminal."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

_REPO = Path(__file__).resolve().parent.parent


def commit() -> str:
    """The short commit, with ``-dirty`` when the tree has changes the commit does not."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=_REPO, capture_output=True, text=True)
        return done.stdout.strip()

    dirty = "-dirty" if git("status", "--porcelain", "--untracked-files=no") else ""
    return (git("rev-parse", "--short", "HEAD") or "unknown") + dirty


def machine() -> dict[str, Any]:
    temporal = Path(sys.executable).parent / "temporal"
    version = subprocess.run([str(temporal), "--version"], capture_output=True, text=True)
    return {
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "temporal_cli": version.stdout.strip(),
        "load_before": [round(x, 2) for x in os.getloadavg()],
    }


def write(results: dict[str, Any], where: Path) -> Path:
    """The results as ``where`` when it names a ``.json`` file, else in the folder ``where`` as
    ``<date>-<commit>.json``."""
    if where.suffix == ".json":
        path = where
    else:
        path = where / f"{datetime.now(UTC):%Y-%m-%d}-{results['commit']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path


def print_summary(results: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    t = results["throughput"]
    table = Table(title=f"refundflow bench, {results['commit']} ({results['options']['preset']})")
    for column in ("workflow", "per s", "worker CPU s/wf", "server CPU s/wf", "p50/p95/p99 ms"):
        table.add_column(column, justify="left" if column == "workflow" else "right")
    for kind in ("baseline_remote", "baseline_local", "refunds_client", "refunds_http"):
        row = t[kind]
        cpu = row["cpu_s_per_workflow"]
        worker = cpu["baseline"] if kind.startswith("baseline") else cpu["worker"]
        p = row["start_to_end"]
        table.add_row(
            kind.replace("_", " "),
            f"{row['per_s']:.1f}",
            f"{worker:.4f}",
            f"{cpu['temporal']:.4f}",
            f"{p['p50_ms']:.0f} / {p['p95_ms']:.0f} / {p['p99_ms']:.0f}",
        )
    console.print(table)
    ratios = Table(title="ratios (refunds against the baseline, same run)")
    ratios.add_column("ratio")
    ratios.add_column("value", justify="right")
    for name, value in t["ratios"].items():
        ratios.add_row(name, f"{value:.3f}")
    api = results["api_overhead"]
    ratios.add_row("POST /v1/refunds p50 vs bare start_workflow", f"{api['p50_ratio']:.3f}")
    ratios.add_row("POST /v1/refunds p99 vs bare start_workflow", f"{api['p99_ratio']:.3f}")
    scale = results["scale"]
    ratios.add_row(f"refunds/s with {scale['open']} open vs empty", f"{scale['open_vs_empty']:.3f}")
    console.print(ratios)
    h, s, tasks = results["history"], scale, results["workflow_tasks"]
    cpu = tasks["activation_cpu"]
    empty, opened = s["rss_mb_empty"], s["rss_mb_open"]
    lines = [
        f"history of a happy-path refund: {h['events']} events, {h['bytes']} bytes",
        f"refund worker's workflow tasks: {tasks['tasks']}, over 200 ms: {tasks['over_200ms']}"
        f" (slowest: {_slowest(tasks)})",
        f"  their activations' CPU: {cpu['tasks']}, over 200 ms: {cpu['over_200ms']}"
        f" (slowest: {_slowest(cpu)})",
        f"{s['open']} open: worker RSS {empty['worker']} -> {opened['worker']} MB,"
        f" server RSS {empty['temporal']} -> {opened['temporal']} MB"
        f" (opened at {s['opened_per_s']}/s, at rest {s['settle_s']} s later)",
        f"  CPU s per refund, empty -> open: {_cpu(s)}",
        f"  GET /v1/refunds/{{id}} {_p(s['get_refund'])}",
        f"  POST /v1/refunds {_p(s['post_refunds'])}; approval {_p(s['approval'])}",
        f"  console inbox ({s['inbox']['waiting']} waiting): median {s['inbox']['median_ms']} ms,"
        f" p90 {s['inbox']['p90_ms']} ms, {s['inbox']['page_bytes']} bytes",
        f"load average {results['machine']['load_before']} -> {results['machine']['load_after']}",
    ]
    for line in lines:
        console.print(line, markup=False, highlight=False)


def _slowest(figures: dict[str, Any]) -> str:
    """The slowest bucket holding any: its bound, or past the last one."""
    if figures["slowest_bucket_le_ms"] is not None:
        return f"<= {figures['slowest_bucket_le_ms']:g} ms"
    bounds = [float(le) for le in figures["buckets"] if le != "+Inf"]
    return f"> {max(bounds):g} ms" if figures["tasks"] and bounds else "none"


def _p(figures: dict[str, float]) -> str:
    return f"p50 {figures['p50_ms']} / p95 {figures['p95_ms']} / p99 {figures['p99_ms']} ms"


def _cpu(scale: dict[str, Any]) -> str:
    empty, opened = scale["cpu_s_per_refund_empty"], scale["cpu_s_per_refund_open"]
    return ", ".join(
        f"{name} {empty[name]} -> {opened[name]}" for name in ("worker", "temporal", "api")
    )
