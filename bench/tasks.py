"""How long the refund worker's workflow tasks take, from two histograms on the worker's
Prometheus endpoint (``REFUNDFLOW_METRICS_PORT``), read after the throughput rounds:

- ``temporal_workflow_task_execution_latency``, the SDK's: wall time of each workflow task
  under the rounds' load, possibly with the local activities it runs: an upper bound;
- ``refundflow_workflow_activation_cpu``, the worker's own (``refundflow.worker_sandbox``): the
  CPU time of each activation of a run's workflow code in its thread, the sandbox's creation
  counted with the first. This is the figure for issue 13's "no workflow task over 200 ms of
  CPU" (a task is one activation, or a few when its local activities finish within it)."""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

import httpx

from refundflow.worker_sandbox import ACTIVATION_CPU

TASK_LATENCY = "temporal_workflow_task_execution_latency"
LIMIT_MS = 200.0
_BUCKET = re.compile(r"^(?P<metric>\w+)_bucket\{(?P<labels>[^}]*)\} (?P<count>\S+)$")
_LE = re.compile(r'le="(?P<le>[^"]+)"')


def buckets(exposition: str, metric: str = TASK_LATENCY) -> dict[float, float]:
    """Cumulative counts by upper bound (ms), summed over every label set (workflow type, task
    queue) of the histogram ``metric`` in a Prometheus text exposition."""
    counts: dict[float, float] = defaultdict(float)
    for line in exposition.splitlines():
        found = _BUCKET.match(line)
        if found is None or found["metric"] != metric:
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
    """The task latency figures, with ``activation_cpu``: the same figures for the CPU time of
    each activation (``tasks`` counting activations)."""
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.get(metrics_url)
        answer.raise_for_status()
    figures = task_figures(buckets(answer.text))
    figures["activation_cpu"] = task_figures(buckets(answer.text, ACTIVATION_CPU))
    return figures
