"""The workflow side of a worker alone, in this process: CPU seconds to replay the committed
histories (tests/workflows/histories) through the worker's sandbox and data converter, i.e.
a sandbox per run, every activation, every payload decoded and encoded. No server, no
activities, so other processes on the machine hardly move it.

    .venv/bin/python -m bench.tools.replay_cost --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path

from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from refundflow.worker import WORKFLOWS, workflow_runner
from tests.payload_keys import CONVERTER

HISTORIES = Path(__file__).parents[2] / "tests" / "workflows" / "histories"


async def each(histories: list[WorkflowHistory]) -> AsyncIterator[WorkflowHistory]:
    for history in histories:
        yield history


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=5, help="each history per round")
    args = parser.parse_args()
    histories = [
        WorkflowHistory.from_json(path.stem, json.loads(path.read_text()))
        for path in sorted(HISTORIES.glob("**/*.json"))
    ]
    replayer = Replayer(
        workflows=list(WORKFLOWS), data_converter=CONVERTER, workflow_runner=workflow_runner()
    )
    await replayer.replay_workflows(each(histories))  # warm: imports, first compiles
    per_run = []
    for _ in range(args.rounds):
        began = time.process_time()
        await replayer.replay_workflows(each(histories * args.repeat))
        per_run.append((time.process_time() - began) / len(histories) / args.repeat)
    events = sum(len(h.events) for h in histories) / len(histories)
    print(
        f"histories={len(histories)} mean_events={events:.0f}"
        f" cpu_ms_per_replayed_run median={statistics.median(per_run) * 1000:.2f}"
        f" min={min(per_run) * 1000:.2f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
