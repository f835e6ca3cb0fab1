"""The outbox sweep as the cluster runs it: a Temporal Schedule on a real dev server starts the
sweep workflow, whose activity mails what no run is left to send."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from sqlmodel import select

from refundflow.db.engine import session_scope
from refundflow.db.migrate import upgrade
from refundflow.db.models import OutboxRow
from refundflow.notify.config import NotifyConfig
from refundflow.workflows.outbox import SCHEDULE_ID, ensure_outbox_schedule
from tests.conftest import dev_server
from tests.notify.conftest import SmtpServer
from tests.notify.test_dispatcher import seed
from tests.workflows.conftest import open_stack


async def test_the_schedule_sweeps_the_outbox(tmp_path: Path, smtp: SmtpServer) -> None:
    url = f"sqlite:///{tmp_path / 'refundflow.db'}"
    upgrade(url)
    mail = NotifyConfig(smtp_host="127.0.0.1", smtp_port=smtp.port, mail_from="shop@example.com")
    async with (
        dev_server() as env,
        open_stack(env, tmp_path, notify=mail, database_url=url) as stack,
    ):
        refund_id = seed(stack.engine, webhook=None)  # as a run that died left them
        every = timedelta(seconds=1)
        assert await ensure_outbox_schedule(env.client, task_queue=stack.task_queue, every=every)
        # Once per cluster: a second worker's start leaves the schedule as it is.
        assert not await ensure_outbox_schedule(env.client, task_queue=stack.task_queue)
        for _ in range(150):
            with session_scope(stack.engine, readonly=True) as session:
                rows = session.exec(select(OutboxRow).where(OutboxRow.refund_id == refund_id))
                statuses = [row.status for row in rows]
            if statuses and all(s == "sent" for s in statuses):
                break
            await asyncio.sleep(0.2)
        assert statuses == ["sent", "sent"]
        assert len(smtp.mailbox.received) == 1
        await env.client.get_schedule_handle(SCHEDULE_ID).delete()
