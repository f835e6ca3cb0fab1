"""Throughput: the baseline workflows and refunds in alternating rounds (so what else the
machine does weighs on both alike), each run by 20 clients in a closed loop (start one, wait
for it to end, start the next), the CPU each process spent per workflow, and each one's time
from its start to the state the bench waits for. Also the happy path's history, and the API's
overhead over a bare ``start_workflow``."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from temporalio.api.enums.v1 import EventType

from bench.baseline import TASK_QUEUE, LocalActivities, RemoteActivities
from bench.figures import cpu_spent, percentiles, ratio
from bench.load import SETTLED, SMALL, Batch, at_concurrency, new_batch, via_client, via_http
from bench.load import wait_for as wait_for_refunds
from bench.stack import BenchStack
from refundflow.workflows.client import workflow_id

KINDS = ("baseline_remote", "baseline_local", "refunds_client", "refunds_http")
_PATIENCE_S = 900.0
_QUIET_CHECKS = 60


@dataclass
class Round:
    kind: str
    count: int
    seconds: float
    cpu_s: dict[str, float]
    call_s: list[float]
    reached_s: list[float]
    stuck: int = 0


@dataclass
class Rounds:
    done: list[Round] = field(default_factory=list)
    last_refund: str = ""
    """A refund of the last client round that reached the settled state (for its history)."""

    def of(self, kind: str) -> list[Round]:
        return [r for r in self.done if r.kind == kind]


async def refund_round(stack: BenchStack, kind: str, count: int) -> tuple[Round, Batch]:
    batch = new_batch(stack, count, amount=SMALL)
    start = via_client if kind == "refunds_client" else via_http
    before, began = stack.usage(), time.monotonic()
    # Watched from the first start: each client waits for its refund before the next.
    watching = asyncio.create_task(wait_for_refunds(stack, batch, SETTLED, patience_s=_PATIENCE_S))
    await asyncio.gather(start(stack, batch), watching)  # the watch's failure ends the round
    seconds = time.monotonic() - began
    spent = cpu_spent(before, stack.usage())
    made = Round(kind, count, seconds, spent, batch.call_s, batch.reached_s, batch.stuck)
    return made, batch


async def baseline_round(stack: BenchStack, kind: str, count: int) -> Round:
    client = await stack.client()
    # By name: the two run methods' types joined in one expression confuse mypy elsewhere.
    workflow = (RemoteActivities if kind == "baseline_remote" else LocalActivities).__name__
    tag = uuid.uuid4().hex[:8]
    call_s: list[float] = []
    reached_s: list[float] = []

    async def start_and_finish(name: str) -> None:
        began = time.monotonic()
        handle = await client.start_workflow(workflow, id=name, task_queue=TASK_QUEUE)
        call_s.append(time.monotonic() - began)
        await handle.result()
        reached_s.append(time.monotonic() - began)

    before, began = stack.usage(), time.monotonic()
    await at_concurrency([f"base-{tag}-{n}" for n in range(count)], start_and_finish)
    seconds = time.monotonic() - began
    return Round(kind, count, seconds, cpu_spent(before, stack.usage()), call_s, reached_s)


async def run_rounds(stack: BenchStack, rounds: int, baseline: int, refunds: int) -> Rounds:
    """A warm-up of each kind (not counted), then ``rounds`` rounds of every kind in turn."""
    runs: dict[str, Callable[[int], Awaitable[Round]]] = {
        "baseline_remote": lambda n: baseline_round(stack, "baseline_remote", n),
        "baseline_local": lambda n: baseline_round(stack, "baseline_local", n),
    }
    result = Rounds()

    async def refunds_of(kind: str, n: int) -> Round:
        made, batch = await refund_round(stack, kind, n)
        if kind == "refunds_client" and batch.refund_ids():
            result.last_refund = batch.refund_ids()[0]
        return made

    runs["refunds_client"] = lambda n: refunds_of("refunds_client", n)
    runs["refunds_http"] = lambda n: refunds_of("refunds_http", n)
    for kind in KINDS:
        await runs[kind](5)
    for _ in range(rounds):
        for kind in KINDS:
            count = baseline if kind.startswith("baseline") else refunds
            result.done.append(await runs[kind](count))
    return result


def summary(rounds: list[Round]) -> dict[str, Any]:
    """One kind's rounds together: workflows per second, CPU seconds per workflow of each
    process, and the start-to-end times."""
    count = sum(r.count for r in rounds)
    seconds = sum(r.seconds for r in rounds)
    processes = rounds[0].cpu_s.keys()
    cpu = {name: sum(r.cpu_s[name] for r in rounds) / count for name in processes}
    return {
        "workflows": count,
        "seconds": round(seconds, 2),
        "per_s": round(count / seconds, 2),
        "per_round_per_s": [round(r.count / r.seconds, 2) for r in rounds],
        "cpu_s_per_workflow": {name: round(v, 4) for name, v in cpu.items()},
        "start_to_end": percentiles([s for r in rounds for s in r.reached_s]),
        "start_call": percentiles([s for r in rounds for s in r.call_s]),
        "stuck": sum(r.stuck for r in rounds),
    }


def throughput_figures(result: Rounds) -> dict[str, Any]:
    kinds = {kind: summary(result.of(kind)) for kind in KINDS}
    remote, local = kinds["baseline_remote"], kinds["baseline_local"]
    ratios: dict[str, float] = {}
    for path in ("refunds_client", "refunds_http"):
        refunds = kinds[path]
        ratios[f"{path}_per_s_vs_baseline_remote"] = ratio(refunds["per_s"], remote["per_s"])
        ratios[f"{path}_per_s_vs_baseline_local"] = ratio(refunds["per_s"], local["per_s"])
        for process, base in (("worker", "baseline"), ("temporal", "temporal")):
            ratios[f"{path}_{process}_cpu_vs_baseline_remote"] = ratio(
                refunds["cpu_s_per_workflow"][process], remote["cpu_s_per_workflow"][base]
            )
    return {"rounds": len(result.of("baseline_remote")), **kinds, "ratios": ratios}


def api_overhead(result: Rounds) -> dict[str, Any]:
    """POST /v1/refunds against a bare ``start_workflow`` of the baseline, both at the same
    concurrency: what the API adds (auth, idempotency, quote, database) to a start."""
    post = percentiles([s for r in result.of("refunds_http") for s in r.call_s])
    bare = percentiles([s for r in result.of("baseline_remote") for s in r.call_s])
    return {
        "post_refunds": post,
        "start_workflow": bare,
        "p50_ratio": ratio(post["p50_ms"], bare["p50_ms"]),
        "p99_ratio": ratio(post["p99_ms"], bare["p99_ms"]),
    }


async def history_figures(stack: BenchStack, refund_id: str) -> dict[str, Any]:
    """Events and bytes of one happy-path refund's history, up to the settled state and what
    follows it at once (the customer's notices), once the run has settled into its wait."""
    client = await stack.client()
    handle = client.get_workflow_handle(workflow_id(refund_id))
    length = -1
    for _ in range(_QUIET_CHECKS):
        described = await handle.describe()
        busy = described.raw_description.pending_activities
        if not busy and described.history_length == length:
            break
        length = described.history_length
        await asyncio.sleep(0.5)
    history = await handle.fetch_history()
    by_type: dict[str, dict[str, int]] = {}
    for event in history.events:
        name = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_").lower()
        entry = by_type.setdefault(name, {"events": 0, "bytes": 0})
        entry["events"] += 1
        entry["bytes"] += event.ByteSize()
    ordered = dict(sorted(by_type.items(), key=lambda item: -item[1]["bytes"]))
    return {
        "refund_id": refund_id,
        "events": len(history.events),
        "bytes": sum(e["bytes"] for e in by_type.values()),
        "by_type": ordered,
    }
