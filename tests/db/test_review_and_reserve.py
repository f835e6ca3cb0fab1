"""The review's local activity (``review_and_reserve``) on both databases: the refund's row and
hold, and, when nothing stands between review and payment, the payout's second check and its
expected arrival."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session

from refundflow.activities.contracts import (
    ArrivalInput,
    RecheckInput,
    ReviewAndReserveInput,
    ReviewInput,
)
from refundflow.activities.decisions import plan_arrival
from refundflow.activities.refund import RefundActivities
from refundflow.cli.dev_clock import fast_arrival
from refundflow.db.repository import upsert_order
from refundflow.domain.orders import PaymentMethod
from refundflow.domain.review import ReviewOutcome
from tests.db import builders as b

AS_OF = datetime(2026, 3, 6, 12, tzinfo=UTC)


def _review(
    engine: Engine,
    session: Session,
    order_id: str,
    activities: RefundActivities | None = None,
    **order: Any,
) -> Any:
    # Paid, not shipped yet: nothing to send back.
    snapshot = b.order(order_id, status="PAID", delivered_at=None, **order)
    upsert_order(session, order=snapshot)
    session.commit()
    request = b.request(snapshot, items=[{"line_id": "l1", "quantity": 1}], reason="CHANGED_MIND")
    review = ReviewInput(
        refund_id=f"r-{order_id}",
        merchant_id=b.MERCHANT,
        order_id=order_id,
        request=request,
        as_of=AS_OF,
    )
    activities = activities or RefundActivities(engine, {})
    return activities.review_and_reserve(ReviewAndReserveInput(review=review))


def test_a_refund_paid_at_once_gets_its_second_check_with_the_review(
    session: Session, engine: Engine
) -> None:
    result = _review(engine, session, "o-small")
    decision = result.review.decision
    assert decision.outcome is ReviewOutcome.AUTO_APPROVE and result.reserved.ok
    check = result.second_check
    assert check is not None and check.matches, check
    assert check.fingerprint == decision.quote.fingerprint()
    assert check.total == decision.quote.total
    # And the first payout's expected arrival, as plan_arrival answers it for that day.
    ahead = result.first_arrival
    assert ahead is not None and ahead.start == AS_OF.date()
    asked = ArrivalInput(
        start=AS_OF.date(),
        routes=ahead.routes,
        open_routes=ahead.open_routes,
        policy=result.review.context.policy,
        country="CN",
    )
    assert ahead.routes == [PaymentMethod.ALIPAY] and ahead.answers(asked)
    assert ahead.plan == plan_arrival(asked)
    assert not ahead.answers(asked.model_copy(update={"start": date(2026, 3, 7)}))


def test_a_refund_that_waits_for_an_approver_gets_no_second_check_yet(
    session: Session, engine: Engine
) -> None:
    lines = [{"line_id": "l1", "sku": "A", "quantity": 1, "unit_price": 90000}]
    result = _review(engine, session, "o-big", lines=lines, payments=[b.payment("p1", 90000)])
    assert result.review.decision.outcome is ReviewOutcome.NEEDS_APPROVAL
    assert result.reserved.ok and result.second_check is None and result.first_arrival is None


def test_the_arrival_ahead_comes_from_the_workers_own_planner(
    session: Session, engine: Engine
) -> None:
    """The dev stack's fast clock replaces the ``plan_arrival`` activity; its review must
    answer the same way, or a run would take the real calendar's window after all."""
    activities = RefundActivities(engine, {}, arrival_planner=fast_arrival(timedelta(seconds=2)))
    result = _review(engine, session, "o-fast", activities)
    ahead = result.first_arrival
    assert ahead is not None
    # Alipay's business days of 2 seconds each, from now: the window ends within seconds
    # (the real calendar's would end days after the review's date, in March).
    ends = ahead.plan.window_ends_at
    assert ends is not None
    assert timedelta(0) < ends - datetime.now(UTC) < timedelta(seconds=30), ends


def test_the_second_check_recomputes_from_the_stored_refund(
    session: Session, engine: Engine
) -> None:
    result = _review(engine, session, "o-again")
    quote = result.review.decision.quote
    activities = RefundActivities(engine, {})
    fingerprint = quote.fingerprint()
    same = activities.recheck_quote(
        RecheckInput(refund_id="r-o-again", expected_fingerprint=fingerprint)
    )
    assert same.matches and same.fingerprint == fingerprint and same.total == quote.total
    # The run's copy is not the database's: the check says which is which.
    other = activities.recheck_quote(
        RecheckInput(refund_id="r-o-again", expected_fingerprint="0" * 64)
    )
    assert not other.matches
    assert f"database has {fingerprint[:8]} / {quote.total}" in other.detail
    missing = activities.recheck_quote(RecheckInput(refund_id="r-none", expected_fingerprint=""))
    assert not missing.matches and missing.detail == "no refund row"
