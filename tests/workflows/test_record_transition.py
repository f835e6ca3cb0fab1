"""The refund row shows the status of the run's latest timeline entry, whichever of two
concurrent entries (an Update's and the run loop's) is written to the database last."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import Engine

from refundflow.activities.contracts import TransitionInput
from refundflow.activities.refund import RefundActivities
from refundflow.db.engine import session_scope
from refundflow.db.repository import create_refund, get_refund, upsert_merchant, upsert_order
from refundflow.domain.states import RefundStatus, Stage
from tests.db.builders import MERCHANT, order, quote, request
from tests.db.conftest import db_url, engine, postgres_problem  # noqa: F401  (fixtures)
from tests.payload_keys import DB_KEYRING


def test_an_earlier_entry_written_late_does_not_undo_a_later_status(engine: Engine) -> None:  # noqa: F811
    refund_id = f"rf_{uuid.uuid4().hex[:12]}"
    snap = order()
    with session_scope(engine) as s:
        upsert_merchant(s, merchant_id=MERCHANT)
        upsert_order(s, order=snap)
        create_refund(
            s,
            refund_id=refund_id,
            order=snap,
            request=request(snap),
            quote=quote(snap, {"p1": 4000}),
            requested_by="desk-1",
            policy_version=1,
            status=RefundStatus.AWAITING_APPROVAL,
        )
    activities = RefundActivities(engine, {}, keyring=DB_KEYRING)
    now = datetime.now(UTC)

    def entry(seq: int, kind: str, status: RefundStatus) -> TransitionInput:
        return TransitionInput(
            refund_id=refund_id,
            status=status,
            stage=Stage.APPROVAL,
            kind=kind,
            message=kind,
            at=now,
            seq=seq,
        )

    # The run rejected (entry 5) while the decision's own entry (4, taken while the refund
    # still waited for approval) was on its way: 4 reaches the database after 5.
    activities.record_transition(entry(5, "rejected", RefundStatus.REJECTED))
    activities.record_transition(entry(4, "decision", RefundStatus.AWAITING_APPROVAL))
    with session_scope(engine, readonly=True) as s:
        row = get_refund(s, refund_id=refund_id)
        assert row is not None and row.status == "REJECTED"
