"""The retention activity: erase the customer data of refunds finished longer ago than
``REFUNDFLOW_PII_RETENTION_DAYS`` (docs/privacy.md). Amounts, lines, payouts, the ledger and
the audit trail stay; each erasure is itself an audit event."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Engine
from temporalio import activity

from refundflow.db.engine import session_scope
from refundflow.db.repository import erase_personal, expired_personal

log = logging.getLogger(__name__)


class RetentionInput(BaseModel):
    """One pass of the retention rule; the period is the worker's setting, read at each pass,
    so changing it needs no new schedule."""

    batch: int = 200


class RetentionResult(BaseModel):
    erased: int
    finished_before: datetime


class RetentionActivities:
    def __init__(self, engine: Engine, *, retention: timedelta) -> None:
        self.engine = engine
        self.retention = retention

    def all(self) -> list[Callable[..., Any]]:
        return [self.erase_expired_personal_data]

    @activity.defn
    def erase_expired_personal_data(self, inp: RetentionInput) -> RetentionResult:
        cutoff = datetime.now(UTC) - self.retention
        erased = 0
        while True:
            # One transaction per batch: a long pass neither holds the write lock nor loses
            # what it erased when it is cut off.
            with session_scope(self.engine) as session:
                due = expired_personal(session, finished_before=cutoff, limit=inp.batch)
                for refund_id in due:
                    erased += erase_personal(session, refund_id=refund_id)
            if len(due) < inp.batch:
                break
            activity.heartbeat(erased)
        if erased:
            log.info("erased the customer data of %d refund(s) finished before %s", erased, cutoff)
        return RetentionResult(erased=erased, finished_before=cutoff)
