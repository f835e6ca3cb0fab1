"""Worker and API cost per refund on a real stack (tests/chaos/stack.py: a Temporal dev server,
the simulators, ``refundflow api`` and one ``refundflow worker`` as processes).

    .venv/bin/python -m bench.tools.worker_cost --refunds 200 --concurrency 20

Auto-approved refunds to the store balance (they settle at once and complete): the worker's
CPU seconds (user + system, from /proc) per refund, refunds completed per second, the worker's
RSS, and POST /v1/refunds latency at the given concurrency. ``--open N`` then starts N refunds
that wait for an approver and reports the worker's RSS growth per run it holds in its cache,
waits until the stack is at rest and reports each process's idle CPU with them open;
``--rounds-open K`` then times K batches more with them open (what open runs cost new ones).
Each batch reports CPU per refund of the worker, the API and the Temporal server.
``--profile out.json`` records the worker with py-spy (GIL holders only: speedscope format
for ``.json``, collapsed stacks for ``.txt``) during the last timed batch; ``--api-only`` runs
no worker and measures the API's PUT+POST CPU and POST latency alone; ``--postgres URL`` uses
a fresh database on that server instead of SQLite. To compare two builds, run each from its
own checkout with ``PYTHONPATH`` set to it (the stack's processes inherit it)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, func
from sqlmodel import select

from refundflow.db.engine import normalize_url, session_scope
from refundflow.db.models import RefundRow
from tests.chaos.stack import ChaosStack

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def rss_mb(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE / 2**20


def _order(name: str, amount: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    placed = (now - timedelta(days=2)).isoformat()
    return {
        "channel": "own_store",
        "customer_id": f"c-{name}",
        "country": "CN",
        "currency": "CNY",
        "placed_at": placed,
        "status": "PAID",
        "lines": [{"line_id": "l1", "sku": "MUG", "quantity": 1, "unit_price": amount}],
        "payments": [
            {
                "payment_id": "p1",
                "method": "alipay",
                "provider_txn_id": "2026" + uuid.uuid4().hex[:16],
                "captured": amount,
                "currency": "CNY",
                "paid_at": placed,
            }
        ],
    }


def _request(name: str) -> dict[str, Any]:
    return {
        "order_id": name,
        "items": [{"line_id": "l1", "quantity": 1}],
        "reason": "CHANGED_MIND",
        "destination": {"kind": "BALANCE"},
        "contact": {"email": f"{name}@example.com", "locale": "zh-CN"},
    }


async def place(
    http: httpx.AsyncClient, names: list[str], concurrency: int, amount: int
) -> list[float]:
    """PUT each order (not timed), then POST the refunds ``concurrency`` at a time; the POST
    latencies in seconds."""
    gate = asyncio.Semaphore(concurrency)

    async def put(name: str) -> None:
        async with gate:
            done = await http.put(f"/v1/orders/{name}", json=_order(name, amount))
            assert done.status_code == 200, done.text

    await asyncio.gather(*(put(n) for n in names))
    latencies: list[float] = []

    async def post(name: str) -> None:
        async with gate:
            began = time.perf_counter()
            made = await http.post(
                "/v1/refunds", json=_request(name), headers={"Idempotency-Key": name}
            )
            latencies.append(time.perf_counter() - began)
            assert made.status_code == 202, made.text

    await asyncio.gather(*(post(n) for n in names))
    return latencies


def count(stack: ChaosStack, prefix: str, status: str) -> int:
    with session_scope(stack.engine, readonly=True) as session:
        query = select(func.count()).where(
            RefundRow.status == status, RefundRow.order_id.startswith(prefix)
        )
        return int(session.exec(query).one())


async def wait_for(stack: ChaosStack, prefix: str, status: str, n: int) -> None:
    deadline = time.monotonic() + 900
    while count(stack, prefix, status) < n:
        assert time.monotonic() < deadline, f"{count(stack, prefix, status)}/{n} {status}"
        await asyncio.sleep(0.1)


async def at_rest(stack: ChaosStack) -> None:
    """Until the stack's processes together use under a quarter of a core for 3 s (at most
    180 s): the burst's notices and the server's own writes have followed it."""
    pids = [p.pid for p in stack.processes._running.values()]
    quiet, deadline = 0, time.monotonic() + 180
    while quiet < 3 and time.monotonic() < deadline:
        before = sum(cpu_seconds(pid) for pid in pids)
        await asyncio.sleep(1)
        quiet = quiet + 1 if sum(cpu_seconds(pid) for pid in pids) - before < 0.25 else 0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def batch(
    stack: ChaosStack,
    http: httpx.AsyncClient,
    n: int,
    concurrency: int,
    *,
    label: str,
    profile: str | None = None,
) -> dict[str, float]:
    worker = stack.processes._running["worker-1"].pid
    api = stack.processes._running["api"].pid
    server = stack.processes._running["temporal"].pid
    prefix = f"{label}-{uuid.uuid4().hex[:6]}-"
    names = [f"{prefix}{i}" for i in range(n)]
    spy = None
    if profile:
        spy = _py_spy(worker, profile)
        await asyncio.sleep(1)
    cpu0, api0, t0 = cpu_seconds(worker), cpu_seconds(api), time.monotonic()
    server0 = cpu_seconds(server)
    latencies = await place(http, names, concurrency, 5900)
    await wait_for(stack, prefix, "COMPLETED", n)
    elapsed = time.monotonic() - t0
    cpu1, api1, server1 = cpu_seconds(worker), cpu_seconds(api), cpu_seconds(server)
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait()
    return {
        "worker_cpu_s_per_refund": (cpu1 - cpu0) / n,
        "api_cpu_s_per_refund": (api1 - api0) / n,
        "server_cpu_s_per_refund": (server1 - server0) / n,
        "refunds_per_s": n / elapsed,
        "post_p50_ms": pct(latencies, 0.5),
        "post_p99_ms": pct(latencies, 0.99),
        "post_mean_ms": statistics.mean(latencies) * 1000,
        "worker_rss_mb": rss_mb(worker),
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--refunds", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--open", type=int, default=0)
    parser.add_argument(
        "--rounds-open",
        type=int,
        default=0,
        help="timed rounds again after the --open refunds are waiting (what open runs cost)",
    )
    parser.add_argument("--profile")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the worker")
    parser.add_argument("--postgres", help="a PostgreSQL server URL: a fresh database on it")
    parser.add_argument(
        "--api-only", action="store_true", help="no worker: POST latency of the API alone"
    )
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.env)
    with tempfile.TemporaryDirectory(prefix="worker-cost-") as folder:
        root = Path(folder)
        url = f"sqlite:///{root / 'refunds.db'}"
        if args.postgres:
            url = fresh_postgres(args.postgres, root.name.replace("-", "_"))
        stack = ChaosStack(root, url, workers=0 if args.api_only else 1)
        base_env = stack.env
        stack.env = lambda: base_env() | extra  # type: ignore[method-assign]
        try:
            await stack.start()
            async with stack.http() as http:
                if args.api_only:
                    await api_only(stack, http, args)
                    return
                await batch(stack, http, args.warmup, args.concurrency, label="warm")
                await timed_rounds(stack, http, args, "run", args.rounds, args.profile)
                if args.open:
                    await open_runs(stack, http, args.open, args.concurrency)
                open_profile = args.profile and _with_suffix(args.profile, "-open")
                await timed_rounds(stack, http, args, "open", args.rounds_open, open_profile)
        finally:
            await stack.close()


async def timed_rounds(
    stack: ChaosStack,
    http: httpx.AsyncClient,
    args: argparse.Namespace,
    label: str,
    count: int,
    profile: str | None,
) -> None:
    """``count`` timed batches, each printed; ``profile`` records the last one."""
    for i in range(count):
        last = i == count - 1
        figures = await batch(
            stack,
            http,
            args.refunds,
            args.concurrency,
            label=f"{label}{i}",
            profile=profile if last else None,
        )
        print(" ".join(f"{k}={v:.4f}" for k, v in figures.items()), flush=True)


async def api_only(stack: ChaosStack, http: httpx.AsyncClient, args: argparse.Namespace) -> None:
    api = stack.processes._running["api"].pid
    for i in range(args.rounds + 1):  # the first round warms up
        names = [f"api{i}-{uuid.uuid4().hex[:6]}-{n}" for n in range(args.refunds)]
        spy = _py_spy(api, args.profile) if args.profile and i == args.rounds else None
        cpu0, t0 = cpu_seconds(api), time.monotonic()
        latencies = await place(http, names, args.concurrency, 5900)
        elapsed, cpu = time.monotonic() - t0, cpu_seconds(api) - cpu0
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait()
        if i:
            print(
                f"api_cpu_s_per_put_and_post={cpu / args.refunds:.4f}"
                f" posts_per_s={args.refunds / elapsed:.1f}"
                f" post_p50_ms={pct(latencies, 0.5):.1f} post_p99_ms={pct(latencies, 0.99):.1f}",
                flush=True,
            )


def _py_spy(pid: int, profile: str) -> subprocess.Popen[bytes]:
    """py-spy recording ``pid`` (GIL holders) into ``profile`` until it gets SIGINT."""
    py_spy = str(Path(sys.executable).parent / "py-spy")
    return subprocess.Popen(
        [py_spy, "record", "-p", str(pid), "-o", profile]
        + ["--rate", "200", "--nonblocking", "--gil"]
        + (["--format", "speedscope"] if profile.endswith(".json") else [])
        + (["--format", "raw"] if profile.endswith(".txt") else []),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _with_suffix(profile: str, suffix: str) -> str:
    path = Path(profile)
    return str(path.with_name(path.stem + suffix + path.suffix))


def fresh_postgres(server: str, name: str) -> str:
    admin = create_engine(normalize_url(server), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    return normalize_url(server).set(database=name).render_as_string(hide_password=False)


async def open_runs(stack: ChaosStack, http: httpx.AsyncClient, n: int, concurrency: int) -> None:
    """RSS growth per run the worker keeps cached: refunds that wait for an approver."""
    worker = stack.processes._running["worker-1"].pid
    before = rss_mb(worker)
    prefix = f"open-{uuid.uuid4().hex[:6]}-"
    await place(http, [f"{prefix}{i}" for i in range(n)], concurrency, 89900)
    await wait_for(stack, prefix, "AWAITING_APPROVAL", n)
    await at_rest(stack)
    after = rss_mb(worker)
    # What the open runs cost while nothing happens: sweeps, timers, the server's own work.
    idle = {name: cpu_seconds(proc.pid) for name, proc in stack.processes._running.items()}
    await asyncio.sleep(10)
    print(
        " ".join(
            f"idle_cores_{name}={(cpu_seconds(stack.processes._running[name].pid) - cpu) / 10:.3f}"
            for name, cpu in idle.items()
        ),
        flush=True,
    )
    print(
        f"open_runs={n} rss_before_mb={before:.1f} rss_after_mb={after:.1f}"
        f" kb_per_cached_run={(after - before) * 1024 / n:.1f}",
        flush=True,
    )


if __name__ == "__main__":
    # A stopped measurement still stops the stack it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    asyncio.run(main())
