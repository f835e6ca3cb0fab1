"""Small arithmetic the sections share: percentiles, rates, ratios, and what a process used."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import psutil


def percentiles(samples_s: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99 (nearest rank) in milliseconds; empty when there is nothing to rank."""
    if not samples_s:
        return {}
    ordered = sorted(samples_s)

    def rank(p: int) -> float:
        return round(ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] * 1000, 1)

    return {"n": len(ordered), "p50_ms": rank(50), "p95_ms": rank(95), "p99_ms": rank(99)}


def ratio(part: float, whole: float) -> float:
    return round(part / whole, 3) if whole else 0.0


@dataclass(frozen=True)
class Usage:
    cpu_s: float
    """User and system CPU seconds of the process and its children, since it started."""
    rss_mb: float


def usage(pid: int) -> Usage:
    """What the process ``pid`` and every process under it use now."""
    root = psutil.Process(pid)
    cpu, rss = 0.0, 0
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
            cpu += times.user + times.system
            rss += process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return Usage(cpu_s=cpu, rss_mb=round(rss / 2**20, 1))


def cpu_spent(before: Mapping[str, Usage], after: Mapping[str, Usage]) -> dict[str, float]:
    return {name: after[name].cpu_s - before[name].cpu_s for name in after}
