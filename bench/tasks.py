"""How long the refund worker's workflow tasks take: the SDK's own histogram
``temporal_workflow_task_execution_latency`` (milliseconds, from the worker's Prometheus
endpoint, ``REFUNDFLOW_METRICS_PORT``), read after the throughput rounds. It is wall time under
the rounds' load, not CPU, and may include the local activities a task runs: an upper bound on
what the workflow code itself took, the figure issue 13's "no workflow task over 200 ms" is
about until a per-task CPU figure exists."""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

import httpx

METRIC = "temporal_workflow_task_execution_latency"
LIMIT_MS = 200.0
_BUCKET = re.compile(rf"^{METRIC}_bucket\{{(?P<labels>[^}}]*)\}} (?P<count>\S+)$")
_LE = re.compile(r'le="(?P<le>[^"]+)"')


def buckets(exposition: str) -> dict[float, float]:
    """Cumulative counts by upper bound (ms), summed over every label set (workflow type, task
    queue) of the histogram in a Prometheus text exposition."""
    counts: dict[float, float] = defaultdict(float)
    for line in exposition.splitlines():
        found = _BUCKET.match(line)
        if found is None:
            continue
        le = _LE.search(found["labels"])
        if le is not None:
            counts[float(le["le"])] += float(found["count"])
    return dict(sorted(counts.items()))


def task_figures(counts: dict[float, float]) -> dict[str, Any]:
    """Tasks counted, how many took longer than :data:`LIMIT_MS`, and the bound of the slowest
    bucket that holds any (``None`` when all were within the first)."""
    total = counts.get(float("inf"), 0.0)
    within = max((n for le, n in counts.items() if le <= LIMIT_MS), default=0.0)
    slowest = None
    previous = 0.0
    for le, n in counts.items():
        if n > previous:
            slowest = le
        previous = n
    return {
        "tasks": int(total),
        "over_200ms": int(total - within),
        "slowest_bucket_le_ms": None if slowest in (None, float("inf")) else slowest,
        "buckets": {
            ("+Inf" if le == float("inf") else f"{le:g}"): int(n) for le, n in counts.items()
        },
    }


async def workflow_task_figures(metrics_url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.get(metrics_url)
        answer.raise_for_status()
    return task_figures(buckets(answer.text))
