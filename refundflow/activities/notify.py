"""The activities that deliver a refund's notices (docs/architecture.md, "Notifications").

The workflow has already written the outbox rows with each transition; these send them.
``record_and_deliver`` writes a run's batch and makes one round, as one local activity (runs
that batch their writes): what fails is left to the outbox sweep. ``deliver_notifications``
(runs recorded before) is an activity of its own: while some row fails retryably it raises,
and Temporal retries it with backoff (the workflow's retry policy should allow at least
``max_attempts`` attempts); the last attempt marks what still fails as failed for good and
returns, so a dead mail server never blocks a refund.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine
from temporalio import activity

from refundflow.activities.contracts import (
    DeliverInput,
    DeliverResult,
    RecordStepsInput,
    SweepInput,
    SweepResult,
)
from refundflow.activities.refund_writes import write_steps
from refundflow.activities.retries import retry_later
from refundflow.crypto import Keyring
from refundflow.db.engine import session_scope
from refundflow.notify.config import NotifyConfig, build_dispatcher
from refundflow.notify.dispatcher import LeasedRound, NotificationDispatcher

log = logging.getLogger(__name__)
# The run's task waits for the round: slow channels hold it this long at most (the rows they
# hold are the sweep's once their lease runs out).
DELIVER_NOW_SECONDS = 15.0


class NotifyActivities:
    def __init__(self, dispatcher: NotificationDispatcher) -> None:
        self.dispatcher = dispatcher

    @classmethod
    def from_config(
        cls, engine: Engine, config: NotifyConfig, *, keyring: Keyring | None = None
    ) -> NotifyActivities:
        return cls(build_dispatcher(engine, config, keyring=keyring))

    async def aclose(self) -> None:
        await self.dispatcher.aclose()

    def all(self) -> list[Callable[..., Any]]:
        return [self.deliver_notifications, self.record_and_deliver, self.sweep_outbox_batch]

    @activity.defn
    async def deliver_notifications(self, inp: DeliverInput) -> DeliverResult:
        final = activity.info().attempt >= inp.max_attempts
        report = await self.dispatcher.deliver_refund(inp.refund_id, final=final)
        if report.pending and not final:
            # Rows another sender holds count too: if that sender died, its lease runs out
            # and a later attempt here delivers them. Only a failed channel is worth a warning.
            raise retry_later(
                log,
                f"{report.pending} notice(s) of {inp.refund_id} not delivered yet: "
                + ("; ".join(report.errors) or f"{report.held} held by another sender"),
                error_type="notifications_pending",
                level=logging.WARNING if report.errors else logging.INFO,
            )
        return DeliverResult(sent=report.sent, failed=report.failed, pending=report.pending)

    @activity.defn
    async def record_and_deliver(self, inp: RecordStepsInput) -> DeliverResult:
        """A run's batch of writes with notices among them (one transaction, as
        ``RefundActivities.record_steps``), then one delivery round of the refund's notices:
        one local activity for both, no delivery activity of its own. What fails to deliver
        stays pending for the outbox sweep, which retries it and counts its attempts."""
        leased = await asyncio.to_thread(self._write, inp)
        try:
            report = await asyncio.wait_for(
                self.dispatcher.deliver_round(leased), DELIVER_NOW_SECONDS
            )
        except Exception as exc:  # written is what counts: the sweep delivers the rest
            log.warning("notices of %s left to the sweep: %r", inp.refund_id, exc)
            return DeliverResult(sent=0, failed=0, pending=0)
        if report.errors:
            log.info("notices of %s left to the sweep: %s", inp.refund_id, "; ".join(report.errors))
        return DeliverResult(sent=report.sent, failed=report.failed, pending=report.pending)

    def _write(self, inp: RecordStepsInput) -> LeasedRound:
        # The notices are leased in the transaction that writes them: the round starts with
        # no writing transaction of its own. Their recipient is read after the commit.
        with session_scope(self.dispatcher.engine) as session:
            write_steps(session, inp.steps)
            leased = self.dispatcher.lease_round(session, inp.refund_id)
        return self.dispatcher.with_recipient(leased)

    @activity.defn
    async def sweep_outbox_batch(self, inp: SweepInput) -> SweepResult:
        """Deliver the oldest pending rows of any refund: what a finished run left behind (a
        mail server down past every retry, a worker that died mid-delivery). Run by the
        ``refundflow-outbox-sweep`` schedule (refundflow.workflows.outbox)."""
        report = await self.dispatcher.deliver_batch()
        return SweepResult(sent=report.sent, failed=report.failed)
