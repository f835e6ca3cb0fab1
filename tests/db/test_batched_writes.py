"""A run's batch of writes (``record_steps``) on both databases: retried, it writes nothing twice,
and the refund row keeps the status of the run's latest entry whatever order batches arrive in."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from refundflow.activities.contracts import (
    DbStep,
    Notification,
    RecordPayoutInput,
    RecordStepsInput,
    ReleaseInput,
    TransitionInput,
)
from refundflow.activities.refund import RefundActivities
from refundflow.db.models import AuditEventRow, OutboxRow, PayoutRow, RefundRow
from refundflow.db.repository import upsert_order
from refundflow.domain.orders import PaymentMethod
from refundflow.domain.states import PayoutRecord, RefundStatus, Stage
from tests.db import builders as b
from tests.db.helpers import balances, count

AT = datetime(2026, 5, 1, 12, tzinfo=UTC)


def _entry(seq: int, kind: str, status: RefundStatus, notify: bool = False) -> DbStep:
    return DbStep(
        transition=TransitionInput(
            refund_id="r-1",
            status=status,
            stage=Stage.PAYOUT,
            kind=kind,
            message=kind,
            at=AT,
            seq=seq,
            notifications=[Notification(channel="customer", template=kind)] if notify else [],
        )
    )


def _status(engine: Engine) -> str:
    with Session(engine) as session:
        row = session.get(RefundRow, "r-1")
        assert row is not None
        return row.status


def test_a_batch_retried_writes_nothing_twice_and_keeps_the_latest_status(
    session: Session, engine: Engine
) -> None:
    snapshot = b.order(payments=[b.payment("p1", 10000)])
    upsert_order(session, order=snapshot)
    b.refund(session, snapshot, {"p1": 4000})
    session.commit()
    activities = RefundActivities(engine, {})
    record = PayoutRecord(
        seq=1,
        installment=1,
        generation=1,
        key="r-1:1:1",
        route=PaymentMethod.ALIPAY,
        amount=4000,
        payout_currency="CNY",
        payout_amount=4000,
    )
    later = RecordStepsInput(
        refund_id="r-1",
        steps=[
            _entry(3, "payout_started", RefundStatus.PAYING),
            DbStep(register_payout=RecordPayoutInput(refund_id="r-1", record=record, at=AT)),
        ],
    )
    earlier = RecordStepsInput(
        refund_id="r-1", steps=[_entry(2, "accepted", RefundStatus.UNDER_REVIEW, notify=True)]
    )
    activities.record_steps(later)
    activities.record_steps(earlier)  # an Update's batch reaching the database late
    activities.record_steps(later)  # a retry after the commit
    assert _status(engine) == RefundStatus.PAYING.value
    with Session(engine) as s:
        kinds = s.exec(select(AuditEventRow.kind).order_by(col(AuditEventRow.id))).all()
    assert list(kinds) == ["payout_started", "accepted"]
    assert count(engine, OutboxRow) == 1 and count(engine, PayoutRow) == 1

    ended = RecordStepsInput(
        refund_id="r-1",
        steps=[
            DbStep(release=ReleaseInput(refund_id="r-1", at=AT)),
            _entry(4, "cancelled", RefundStatus.CANCELLED),
        ],
    )
    activities.record_steps(ended)
    activities.record_steps(ended)
    assert _status(engine) == RefundStatus.CANCELLED.value
    assert balances(engine) == {"p1": (10000, 0, 0)}  # the hold given back, once
