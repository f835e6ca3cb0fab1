"""Histories: replay of recorded runs (determinism), continue-as-new, history size, and the
search attributes on a real dev server."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from datetime import timedelta
from pathlib import Path

from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from refundflow.activities.refund import RefundActivities
from refundflow.db.engine import make_engine, session_scope
from refundflow.db.migrate import upgrade
from refundflow.db.repository import upsert_merchant
from refundflow.domain.orders import PaymentMethod
from refundflow.domain.states import ReceiptReport, RefundStatus
from refundflow.gateways.balance import BalanceGateway
from refundflow.gateways.sandbox import SandboxGateway
from refundflow.worker import build_worker, workflow_runner
from refundflow.workflows import search_attributes as sa
from refundflow.workflows.refund import RefundWorkflow
from tests.workflows.conftest import MERCHANT, Stack
from tests.workflows.test_refund_paths import wait_status

HISTORIES = Path(__file__).parent / "histories"


async def test_recorded_histories_replay_deterministically() -> None:
    """Histories recorded from the path tests (``REFUNDFLOW_RECORD_HISTORIES=1 make test``)
    must replay against today's workflow code: a non-deterministic change fails here."""
    # Also the runs recorded before notices were delivered from the workflow (a patch).
    files = sorted(HISTORIES.glob("**/*.json"))
    assert len(files) >= 5, "record histories with REFUNDFLOW_RECORD_HISTORIES=1"
    replayer = Replayer(
        workflows=[RefundWorkflow],
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner(),
    )
    for path in files:
        history = WorkflowHistory.from_json(path.stem, json.loads(path.read_text()))
        await replayer.replay_workflow(history)


async def test_happy_path_history_is_small(stack: Stack) -> None:
    order = await stack.order()
    handle = await stack.start("r-count", order)
    await stack.finish(handle)
    history = await handle.fetch_history()
    count = len(history.events)
    # 45 events before notices were delivered from the run, 65 with it (one patch marker and
    # a few delivery activities: one runs at a time and sends every pending row). The bound
    # catches an accidental per-step regression.
    assert count <= 75, count
    kinds = [e.activity_task_scheduled_event_attributes.activity_type.name for e in history.events]
    assert 1 <= kinds.count("deliver_notifications") <= 4


async def test_continue_as_new_keeps_the_refund_going(stack: Stack) -> None:
    stack.sandbox.default_settlement("never")
    order = await stack.order()
    handle = await stack.start("r-can", order, history_limit=40)
    await wait_status(stack, handle, RefundStatus.AWAITING_FUNDS)
    # Days of follow-up polls push the history past the limit: the run continues as new.
    await stack.env.sleep(timedelta(days=3))
    latest = stack.client.get_workflow_handle_for(RefundWorkflow.run, handle.id)
    assert (await latest.describe()).run_id != handle.result_run_id
    stack.sandbox.settle("r-can:1:1")
    await latest.execute_update(RefundWorkflow.receipt, ReceiptReport(received=True))
    result = await stack.finish(latest)
    assert result.status is RefundStatus.COMPLETED
    assert [t.kind for t in result.timeline][:2] == ["review_started", "accepted"]
    assert stack.refund("r-can").status == "COMPLETED"
    assert [p.payout_key for p in stack.payouts("r-can")] == ["r-can:1:1"]
    history = await latest.fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    assert started.continued_execution_run_id


async def test_dev_server_lists_refunds_by_status(tmp_path: Path) -> None:
    temporal = Path(sys.executable).parent / "temporal"
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal),
        data_converter=pydantic_data_converter,
        search_attributes=sa.ALL,
        ui=False,
    )
    url = f"sqlite:///{tmp_path / 'dev.db'}"
    upgrade(url)
    engine = make_engine(url)
    with session_scope(engine) as s:
        upsert_merchant(s, merchant_id=MERCHANT)
    sandbox = SandboxGateway(path=tmp_path / "sandbox.db", settle_after_queries=1)
    gateways = {m: sandbox for m in PaymentMethod} | {PaymentMethod.BALANCE: BalanceGateway(engine)}
    queue = f"dev-{uuid.uuid4().hex[:6]}"
    try:
        async with build_worker(env.client, RefundActivities(engine, gateways), task_queue=queue):
            stack = Stack(env=env, engine=engine, sandbox=sandbox, task_queue=queue)
            order = await stack.order("o-dev")
            handle = await stack.start("r-dev", order)
            for _ in range(100):
                if (await handle.query(RefundWorkflow.view)).status is RefundStatus.AWAITING_FUNDS:
                    break
                await asyncio.sleep(0.2)
            # The customer confirms at once; a real-time follow-up would take days.
            await handle.execute_update(RefundWorkflow.receipt, ReceiptReport(received=True))
            result = await asyncio.wait_for(handle.result(), timeout=60)
            assert result.status is RefundStatus.COMPLETED
            query = f"RefundStatus = 'COMPLETED' AND RefundMerchant = '{MERCHANT}'"
            for _ in range(50):
                found = [wf.id async for wf in env.client.list_workflows(query)]
                if found:
                    break
                await asyncio.sleep(0.2)
            assert found == ["refund-r-dev"]
            described = await handle.describe()
            assert described.typed_search_attributes.get(sa.REFUND_ORDER_ID) == "o-dev"
            summary = await described.static_summary()
            assert summary is not None and "o-dev" in summary
    finally:
        await env.shutdown()
        engine.dispose()
