"""The database side of a refund alone, in this process: CPU milliseconds per refund of the
activities' database work on the happy path (the review with its entry and hold, the second
check, two batches of timeline entries, the payout's key, and its settlement with the
refund's holds consumed and the ledger posted). No Temporal, no other process, so it
moves little with what else the machine does: the figure to compare two builds of the
repositories by (each from its own checkout, ``PYTHONPATH`` set to it).

    .venv/bin/python -m bench.tools.db_cost --refunds 300
    .venv/bin/python -m bench.tools.db_cost --url postgresql://postgres@127.0.0.1:5432/test
    .venv/bin/python -m bench.tools.db_cost --profile tottime   # and cProfile's top functions

``--url`` is a database to migrate and fill (use an empty one); by default a fresh SQLite file.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from datetime import UTC, datetime

from sqlmodel import col, func, select

from refundflow.activities.contracts import (
    DbStep,
    RecheckInput,
    RecordPayoutInput,
    RecordStepsInput,
    ReviewAndReserveInput,
    ReviewInput,
    TransitionInput,
)
from refundflow.activities.refund import RefundActivities
from refundflow.db.engine import make_engine, session_scope
from refundflow.db.migrate import upgrade
from refundflow.db.models import PayoutRow
from refundflow.db.repository import upsert_merchant, upsert_order
from refundflow.domain.orders import OrderSnapshot
from refundflow.domain.states import PayoutRecord, PayoutStatus, RefundStatus, Stage
from tests.db import builders

AT = datetime(2026, 3, 10, 12, tzinfo=UTC)
"""Within the builders' order's return window: every refund is accepted."""


def entry(refund_id: str, seq: int, status: RefundStatus, stage: Stage) -> DbStep:
    transition = TransitionInput(
        refund_id=refund_id,
        status=status,
        stage=stage,
        kind=f"step-{seq}",
        message="",
        at=AT,
        seq=seq,
    )
    return DbStep(transition=transition)


def one_refund(activities: RefundActivities, order: OrderSnapshot, refund_id: str) -> None:
    review = ReviewInput(
        refund_id=refund_id,
        merchant_id=builders.MERCHANT,
        order_id=order.order_id,
        request=builders.request(order),
        as_of=AT,
    )
    started = [entry(refund_id, 1, RefundStatus.UNDER_REVIEW, Stage.REVIEW)]
    reviewed = activities.review_and_reserve(ReviewAndReserveInput(review=review, steps=started))
    quote = reviewed.review.decision.quote
    assert quote is not None and reviewed.reserved.ok, "the bench's refunds are accepted"
    check = activities.recheck_quote(
        RecheckInput(refund_id=refund_id, expected_fingerprint=quote.fingerprint())
    )
    assert check.matches, check.detail
    for seq in (2, 3):
        steps = [entry(refund_id, seq, RefundStatus.PAYING, Stage.PAYOUT)]
        activities.record_steps(RecordStepsInput(refund_id=refund_id, steps=steps))
    planned = quote.payouts[0]
    record = PayoutRecord(
        seq=planned.seq,
        installment=planned.installment,
        generation=1,
        key=f"{refund_id}:{planned.seq}:1",
        route=planned.route,
        amount=planned.amount,
        payout_currency=planned.payout_currency,
        payout_amount=planned.payout_amount,
    )
    payout = RecordPayoutInput(refund_id=refund_id, record=record, at=AT)
    steps = [DbStep(register_payout=payout), entry(refund_id, 4, RefundStatus.PAYING, Stage.PAYOUT)]
    activities.record_steps(RecordStepsInput(refund_id=refund_id, steps=steps))
    settled = record.model_copy(update={"status": PayoutStatus.SETTLED, "provider_ref": "p-1"})
    charges = {charge.payment_id: charge.amount for charge in planned.charges}
    done = payout.model_copy(update={"record": settled, "charges": charges})
    steps = [
        DbStep(record_payout=done),
        entry(refund_id, 5, RefundStatus.AWAITING_FUNDS, Stage.FOLLOW_UP),
    ]
    activities.record_steps(RecordStepsInput(refund_id=refund_id, steps=steps))


def main(argv: list[str] | None = None) -> float:
    """Runs the measure; returns (and prints) the CPU milliseconds per refund."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--refunds", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--url", default="")
    parser.add_argument("--profile", default="", help="a pstats sort key, e.g. tottime")
    args = parser.parse_args(argv)
    url = args.url or f"sqlite:///{tempfile.mkdtemp(prefix='db-cost-')}/refundflow.db"
    upgrade(url)
    engine = make_engine(url)
    activities = RefundActivities(engine, {})
    orders = []
    with session_scope(engine) as session:
        upsert_merchant(session, merchant_id=builders.MERCHANT, name="bench")
        for n in range(args.warmup + args.refunds):
            # One customer per order: the policy's cap on a customer's refunds stays out.
            order = builders.order(f"o-{n}", customer_id=f"c-{n}")
            upsert_order(session, order=order)
            orders.append(order)
    for n in range(args.warmup):
        one_refund(activities, orders[n], f"r-{n}")
    profile = cProfile.Profile() if args.profile else None
    began = time.process_time()
    if profile is not None:
        profile.enable()
    for n in range(args.warmup, args.warmup + args.refunds):
        one_refund(activities, orders[n], f"r-{n}")
    if profile is not None:
        profile.disable()
    spent = time.process_time() - began
    with session_scope(engine, readonly=True) as session:
        settled = session.exec(
            select(func.count()).where(col(PayoutRow.status) == PayoutStatus.SETTLED.value)
        ).one()
    assert settled == args.warmup + args.refunds, f"{settled} payouts settled"
    engine.dispose()
    per_refund_ms = 1000 * spent / args.refunds
    print(f"db_cpu_ms_per_refund={per_refund_ms:.2f} refunds={args.refunds}")
    if profile is not None:
        pstats.Stats(profile).sort_stats(args.profile).print_stats(30)
    return per_refund_ms


if __name__ == "__main__":
    main()
