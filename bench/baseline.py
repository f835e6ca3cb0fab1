"""The baseline the refund runs are measured against: workflows that do nothing but call four
no-op activities one after another (remote in ``RemoteActivities``, local in
``LocalActivities``), served by a worker of their own in a process of its own (``python -m
bench.baseline``), through the same encrypting payload codec as refundflow's worker. What a
refund costs beyond this is refundflow's own cost, whatever the machine."""

from __future__ import annotations

import asyncio
import os
import signal
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker

TASK_QUEUE = "bench-baseline"
ACTIVITIES = 4
_STEP = timedelta(seconds=30)


@activity.defn
async def noop(step: int) -> int:
    return step


@workflow.defn
class RemoteActivities:
    @workflow.run
    async def run(self) -> int:
        done = 0
        for step in range(ACTIVITIES):
            done += await workflow.execute_activity(noop, step, start_to_close_timeout=_STEP)
        return done


@workflow.defn
class LocalActivities:
    @workflow.run
    async def run(self) -> int:
        done = 0
        for step in range(ACTIVITIES):
            done += await workflow.execute_local_activity(noop, step, start_to_close_timeout=_STEP)
        return done


async def serve(address: str, payload_keys: str) -> None:
    from refundflow.crypto import Keyring
    from refundflow.payload_codec import encrypted_data_converter

    keyring = Keyring.parse(payload_keys, source="REFUNDFLOW_PAYLOAD_KEYS")
    client = await Client.connect(address, data_converter=encrypted_data_converter(keyring))
    worker = Worker(
        client,
        task_queue=TASK_QUEUE,
        workflows=[RemoteActivities, LocalActivities],
        activities=[noop],
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with worker:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(
        serve(os.environ["REFUNDFLOW_TEMPORAL_ADDRESS"], os.environ["REFUNDFLOW_PAYLOAD_KEYS"])
    )
