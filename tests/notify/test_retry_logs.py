"""A retry Temporal makes anyway is one log line, not a traceback: notices another sender holds,
and a provider's transient error, each on a real worker and the Temporal test server."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from refundflow.activities.contracts import DeliverInput, DeliverResult
from refundflow.activities.notify import NotifyActivities
from refundflow.db.engine import session_scope
from refundflow.db.repository import lease_outbox
from refundflow.domain.states import RefundStatus
from refundflow.notify.dispatcher import NotificationDispatcher
from tests.notify.test_dispatcher import seed
from tests.workflows.conftest import Stack, open_stack


@workflow.defn(sandboxed=False)
class DeliverTwice:
    """The run's delivery step alone: a second attempt after the first one."""

    @workflow.run
    async def run(self, refund_id: str) -> DeliverResult:
        return await workflow.execute_activity_method(
            NotifyActivities.deliver_notifications,
            DeliverInput(refund_id=refund_id, max_attempts=2),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(initial_interval=timedelta(seconds=10), maximum_attempts=2),
        )


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info and r.levelno >= logging.INFO]


def lines_about(caplog: pytest.LogCaptureFixture, needle: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if needle in r.getMessage() and r.levelno >= logging.INFO]


async def test_notices_held_by_another_sender_are_one_line_per_retry(
    env: WorkflowEnvironment, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    refund_id = seed(engine, webhook=None)
    with session_scope(engine) as s:  # the outbox sweeper of another worker holds them
        assert lease_outbox(s, refund_id=refund_id, lease_seconds=3600)
    notify = NotifyActivities(NotificationDispatcher(engine))
    queue = f"notify-{uuid.uuid4().hex[:8]}"
    caplog.set_level(logging.DEBUG)
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[DeliverTwice],
        activities=[notify.deliver_notifications],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        result = await env.client.execute_workflow(
            DeliverTwice.run, refund_id, id=f"deliver-{refund_id}", task_queue=queue
        )
    assert result.pending == 2  # still held on the last attempt: left to the sweeper
    assert tracebacks(caplog) == []
    [retry] = lines_about(caplog, refund_id)
    assert retry.levelno == logging.INFO and "\n" not in retry.getMessage()
    assert "held by another sender" in retry.getMessage()


async def test_transient_provider_errors_are_one_line_per_retry(
    env: WorkflowEnvironment, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with open_stack(env, tmp_path) as stack:
        await pay_through_two_transient_errors(stack)
    assert tracebacks(caplog) == []
    retries = lines_about(caplog, "r-noisy:1:1")
    assert [r.levelno for r in retries] == [logging.WARNING] * 3
    assert all("\n" not in r.getMessage() for r in retries)


async def pay_through_two_transient_errors(stack: Stack) -> None:
    stack.sandbox.script("r-noisy:", ["transient", "transient", "timeout_after_commit"])
    order = await stack.order()
    result = await stack.finish(await stack.start("r-noisy", order))
    assert result.status is RefundStatus.COMPLETED
