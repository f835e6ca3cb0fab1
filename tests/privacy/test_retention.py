"""The retention rule as the cluster runs it: a Temporal Schedule on a real dev server starts
the retention workflow, whose activity erases the customer data of refunds finished longer
ago than the retention period, and nothing else."""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

from temporalio.worker import Worker

from refundflow.activities.retention import RetentionActivities
from refundflow.db.engine import make_engine, session_scope
from refundflow.db.migrate import upgrade
from refundflow.db.models import RefundRow
from refundflow.db.repository import list_audit, upsert_merchant
from refundflow.domain.states import RefundStatus
from refundflow.workflows.retention import (
    SCHEDULE_ID,
    PersonalDataRetentionWorkflow,
    ensure_retention_schedule,
)
from tests.conftest import dev_server
from tests.db.builders import MERCHANT
from tests.db.test_personal_data import add_refund


async def test_the_schedule_erases_what_retention_says_and_keeps_the_rest(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'refundflow.db'}"
    upgrade(url)
    engine = make_engine(url)
    with session_scope(engine) as session:
        upsert_merchant(session, merchant_id=MERCHANT)
        add_refund(session, "rf-old", days_ago=40)
        add_refund(session, "rf-recent", days_ago=2)
        add_refund(session, "rf-open", status=RefundStatus.PAYING, days_ago=40)
    queue = f"retention-{uuid.uuid4().hex[:8]}"
    retention = RetentionActivities(engine, retention=timedelta(days=30))
    async with dev_server() as env:
        worker = Worker(
            env.client,
            task_queue=queue,
            workflows=[PersonalDataRetentionWorkflow],
            activities=retention.all(),
            activity_executor=ThreadPoolExecutor(max_workers=2),
        )
        async with worker:
            every = timedelta(seconds=1)
            assert await ensure_retention_schedule(env.client, task_queue=queue, every=every)
            assert not await ensure_retention_schedule(env.client, task_queue=queue)
            for _ in range(150):
                with session_scope(engine, readonly=True) as session:
                    old = session.get(RefundRow, "rf-old")
                    assert old is not None
                    if old.personal_erased_at is not None:
                        break
                await asyncio.sleep(0.2)
            await env.client.get_schedule_handle(SCHEDULE_ID).delete()
    with session_scope(engine, readonly=True) as session:
        rows = {r: session.get(RefundRow, r) for r in ("rf-old", "rf-recent", "rf-open")}
        kinds = [e.kind for e in list_audit(session, refund_id="rf-old")]
    old, recent, still_open = rows["rf-old"], rows["rf-recent"], rows["rf-open"]
    assert old is not None and recent is not None and still_open is not None
    assert old.personal_erased_at is not None and old.personal_sealed is None
    assert old.total == 4000 and "personal_data_erased" in kinds
    assert recent.personal_sealed is not None and recent.personal_erased_at is None
    assert still_open.personal_sealed is not None and still_open.personal_erased_at is None
    engine.dispose()
