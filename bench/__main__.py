"""``python -m bench``: start the stack, run every section, write the results, print a summary.

python -m bench --quick                   # a small round (tests/test_bench.py runs it)
python -m bench                           # the full round (make bench)
python -m bench --open 10000              # the scale section with 10,000 refunds open
python -m bench --db postgresql           # a fresh database on 127.0.0.1:5432"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine

from bench import report
from bench.scale import scale_figures
from bench.stack import BenchStack
from bench.tasks import workflow_task_figures
from bench.throughput import api_overhead, history_figures, run_rounds, throughput_figures
from refundflow.db.engine import normalize_url

PRESETS: dict[str, dict[str, int]] = {
    "quick": {
        "rounds": 2, "baseline": 20, "refunds": 15, "open": 200,
        "reads": 30, "approvals": 5, "inbox_loads": 10,
    },
    "full": {
        "rounds": 3, "baseline": 200, "refunds": 150, "open": 2000,
        "reads": 200, "approvals": 20, "inbox_loads": 30,
    },
}  # fmt: skip
POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
RESULTS = Path(__file__).resolve().parent / "results"


def options(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the small round")
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--postgres-url", default=POSTGRES, help="the server for --db postgresql")
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS,
        help="a folder for <date>-<commit>.json, or a .json file",
    )
    for name in PRESETS["full"]:
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, help="overrides the preset")
    return parser.parse_args(argv)


@contextmanager
def database(kind: str, root: Path, postgres_url: str) -> Iterator[str]:
    """SQLite (WAL) in the run's folder, or a PostgreSQL database of the run's own, dropped
    afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{root / 'refunds.db'}"
        return
    name = f"rf_bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(normalize_url(postgres_url), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        yield normalize_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    preset = "quick" if args.quick else "full"
    chosen = {
        name: getattr(args, name) if getattr(args, name) is not None else value
        for name, value in PRESETS[preset].items()
    }
    results: dict[str, Any] = {
        "commit": report.commit(),
        "options": {"preset": preset, "db": args.db, **chosen},
        "machine": report.machine(),
    }
    with tempfile.TemporaryDirectory(prefix="refundflow-bench-") as folder:
        root = Path(folder)
        with database(args.db, root, args.postgres_url) as url:
            stack = BenchStack(root, url)
            try:
                await stack.start()
                rounds = await run_rounds(
                    stack, chosen["rounds"], chosen["baseline"], chosen["refunds"]
                )
                results["throughput"] = throughput_figures(rounds)
                results["api_overhead"] = api_overhead(rounds)
                results["workflow_tasks"] = await workflow_task_figures(stack.metrics_url)
                results["history"] = await history_figures(stack, rounds.last_refund)
                results["scale"] = await scale_figures(
                    stack,
                    rounds,
                    open_refunds=chosen["open"],
                    refunds=chosen["refunds"],
                    reads=chosen["reads"],
                    approvals=chosen["approvals"],
                    inbox_loads=chosen["inbox_loads"],
                )
            finally:
                await stack.close()
    results["machine"]["load_after"] = [round(x, 2) for x in os.getloadavg()]
    return results


async def run_stoppable(args: argparse.Namespace) -> dict[str, Any]:
    """``run``, cancelled by SIGTERM or SIGINT so the stack's processes are stopped (a shell
    running the bench in the background ignores SIGINT for it)."""
    task = asyncio.create_task(run(args))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    return await task


def main(argv: list[str] | None = None) -> Path:
    args = options(argv)
    results = asyncio.run(run_stoppable(args))
    path = report.write(results, args.results)
    report.print_summary(results)
    print(f"results: {path}")
    return path


if __name__ == "__main__":
    main()
