"""Scale: N refunds open, each a run waiting for an approver. What the worker and the server
hold then, how fast the API answers (reading a refund, starting one, an approval), how many
refunds per second still get paid, and how long the approver inbox takes to load."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.console_inbox import measure_inbox
from bench.figures import percentiles, ratio
from bench.load import LARGE, new_batch, via_client, wait_for
from bench.stack import BenchStack
from bench.throughput import Rounds, refund_round, summary

_SEED_PATIENCE_S = 3600.0
_QUIET_CORES = 0.25
"""The stack is at rest when its processes together use less than this much CPU ..."""
_QUIET_SECONDS = 3
"""... for this many seconds in a row (checked once a second) ..."""
_QUIET_PATIENCE_S = 180.0
"""... or when this long has passed (the figure says how long it took)."""


async def scale_figures(
    stack: BenchStack,
    empty: Rounds,
    *,
    open_refunds: int,
    refunds: int,
    reads: int,
    approvals: int,
    inbox_loads: int,
) -> dict[str, Any]:
    """``empty`` holds the throughput rounds run with nothing open, the figures to compare."""
    rss_empty = {name: u.rss_mb for name, u in stack.usage().items()}
    batch = new_batch(stack, open_refunds, amount=LARGE)
    began = time.monotonic()
    waiting = asyncio.create_task(
        wait_for(stack, batch, ("AWAITING_APPROVAL",), patience_s=_SEED_PATIENCE_S)
    )
    await via_client(stack, batch, closed_loop=False)  # opened as fast as they start
    await waiting
    opened_s = time.monotonic() - began
    # Reaching AWAITING_APPROVAL is not the end of a burst of starts: the runs' notices and
    # the server's own writes follow. The rounds below measure the stack with N open, at rest.
    settle_s = await _at_rest(stack)
    rss_open = {name: u.rss_mb for name, u in stack.usage().items()}
    opened = batch.refund_ids()
    read_s, fingerprints = await _reads(stack, opened[:reads])
    open_round, _ = await refund_round(stack, "refunds_http", refunds)
    approve = opened[-approvals:]
    approval_s = await _approvals(stack, approve, fingerprints)
    inbox = await measure_inbox(stack.api_url, stack.keys["approver"], loads=inbox_loads)
    empty_summary = summary(empty.of("refunds_http"))
    empty_rate, open_rate = empty_summary["per_s"], summary([open_round])["per_s"]
    # Which process pays for the runs held open: CPU per refund of each, open against empty.
    cpu_open = {name: round(s / open_round.count, 4) for name, s in open_round.cpu_s.items()}
    return {
        "open": open_refunds,
        "opened_s": round(opened_s, 1),
        "opened_per_s": round(open_refunds / opened_s, 2),
        "settle_s": settle_s,
        "rss_mb_empty": rss_empty,
        "rss_mb_open": rss_open,
        "get_refund": percentiles(read_s),
        "post_refunds": percentiles(open_round.call_s),
        "approval": percentiles(approval_s),
        "refunds_http_per_s_open": open_rate,
        "refunds_http_per_s_empty": empty_rate,
        "open_vs_empty": ratio(open_rate, empty_rate),
        "cpu_s_per_refund_empty": empty_summary["cpu_s_per_workflow"],
        "cpu_s_per_refund_open": cpu_open,
        "inbox": {
            "waiting": inbox.waiting,
            "loads": inbox.loads,
            "median_ms": inbox.median_ms,
            "p90_ms": inbox.p90_ms,
            "page_bytes": inbox.page_bytes,
        },
    }


async def _at_rest(stack: BenchStack) -> float:
    """Seconds until the stack's processes use less than ``_QUIET_CORES`` together, over
    ``_QUIET_SECONDS`` seconds in a row (at most ``_QUIET_PATIENCE_S``)."""
    began = time.monotonic()
    quiet = 0
    before = sum(u.cpu_s for u in stack.usage().values())
    while quiet < _QUIET_SECONDS and time.monotonic() - began < _QUIET_PATIENCE_S:
        await asyncio.sleep(1.0)
        now = sum(u.cpu_s for u in stack.usage().values())
        quiet = quiet + 1 if now - before < _QUIET_CORES else 0
        before = now
    return round(time.monotonic() - began, 1)


async def _reads(stack: BenchStack, refund_ids: list[str]) -> tuple[list[float], dict[str, str]]:
    """GET /v1/refunds/{id} one after another (the stored row and the run's view); the quote
    each approver would see."""
    took: list[float] = []
    fingerprints: dict[str, str] = {}
    async with stack.http() as http:
        for refund_id in refund_ids:
            began = time.monotonic()
            got = await http.get(f"/v1/refunds/{refund_id}")
            took.append(time.monotonic() - began)
            assert got.status_code == 200, got.text
            fingerprints[refund_id] = got.json()["quote_fingerprint"]
    return took, fingerprints


async def _approvals(
    stack: BenchStack, refund_ids: list[str], fingerprints: dict[str, str]
) -> list[float]:
    """POST .../decisions, one after another: the Update reaches the waiting run and the API
    answers with what the run says."""
    took: list[float] = []
    async with stack.http() as reader, stack.http("approver") as http:
        for refund_id in refund_ids:
            fingerprint = fingerprints.get(refund_id)
            if fingerprint is None:
                fingerprint = (await reader.get(f"/v1/refunds/{refund_id}")).json()[
                    "quote_fingerprint"
                ]
            body = {"decision": "APPROVE", "quote_fingerprint": fingerprint, "comment": "bench"}
            began = time.monotonic()
            decided = await http.post(f"/v1/refunds/{refund_id}/decisions", json=body)
            took.append(time.monotonic() - began)
            assert decided.status_code == 200, decided.text
    return took
