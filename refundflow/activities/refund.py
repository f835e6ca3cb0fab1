"""The side effects RefundWorkflow needs: database steps, and (``payout_calls.py``) the calls
to providers.

Database activities are plain functions run on the worker's thread pool, each one transaction
(the writes themselves are in ``refund_writes.py``). Every one of them is safe to run twice (a
local activity is retried if the worker dies after the commit and before the result is
recorded): audit and outbox rows carry the timeline index of the transition, and the
repositories treat a repeated reservation, payout key or approval as the same one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session
from temporalio import activity
from temporalio.exceptions import ApplicationError

from refundflow.activities import decisions
from refundflow.activities.contracts import (
    ApprovalInput,
    ArrivalInput,
    RecheckInput,
    RecheckResult,
    RecordPayoutInput,
    RecordStepsInput,
    RefundContext,
    ReleaseInput,
    ReserveInput,
    ReserveResult,
    ReviewAndReserveInput,
    ReviewAndReserveResult,
    ReviewInput,
    ReviewResult,
    TransitionInput,
)
from refundflow.activities.decisions import first_arrival
from refundflow.activities.payout_calls import ProviderCalls
from refundflow.activities.refund_writes import (
    write_approval,
    write_payout,
    write_payout_key,
    write_release,
    write_steps,
    write_transition,
)
from refundflow.crypto import Keyring
from refundflow.db.engine import make_engine, session_scope
from refundflow.db.models import RefundRow
from refundflow.db.personal import personal_columns
from refundflow.db.repository import (
    count_recent_refunds,
    create_refund,
    get_order,
    get_policy,
    get_refund,
    latest_policy,
    prior_refunds,
    refund_exists,
    refund_for_recheck,
)
from refundflow.domain.calculation import compute_quote
from refundflow.domain.calendar import ArrivalPlan
from refundflow.domain.errors import DomainError, OverRefund
from refundflow.domain.orders import PaymentMethod, RefundRequest
from refundflow.domain.policy import DEFAULT_POLICY, Policy
from refundflow.domain.quote import Quote
from refundflow.domain.review import ReviewOutcome, pays_at_once, review
from refundflow.domain.states import RefundStatus
from refundflow.gateways.base import (
    Gateway,
)
from refundflow.settings import Settings


class RefundActivities(ProviderCalls):
    def __init__(
        self,
        engine: Engine,
        gateways: Mapping[PaymentMethod, Gateway],
        *,
        keyring: Keyring | None = None,
        arrival_planner: Callable[[ArrivalInput], ArrivalPlan] = decisions.plan_arrival,
    ) -> None:
        self.engine = engine
        self.gateways = dict(gateways)
        self.keyring = keyring
        """Seals the customer's data in the refund's row; without it, such a refund fails."""
        self.arrival_planner = arrival_planner
        """How review works out a first payout's arrival ahead: the ``plan_arrival`` decision
        activity's own function (the dev stack's fast clock replaces both alike)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> RefundActivities:
        from refundflow.gateways.registry import build_gateways

        keyring = settings.keyring()  # before anything: no keys, no worker
        engine = make_engine(settings.resolved_database_url)
        return cls(engine, build_gateways(settings, engine), keyring=keyring)

    def close(self) -> None:
        self.engine.dispose()

    def all(self) -> list[Callable[..., Any]]:
        return [
            self.review_refund,
            self.record_transition,
            self.record_steps,
            self.review_and_reserve,
            self.reserve_refund,
            self.release_reservation,
            self.record_approval,
            self.recheck_quote,
            self.register_payout,
            self.record_payout,
            self.send_payout,
            self.query_payout,
        ]

    # ------------------------------------------------------------------ database
    @activity.defn
    def review_refund(self, inp: ReviewInput) -> ReviewResult:
        """Load the order, the merchant's policy and the prior refunds, and review the request
        against them: the run's first step, and every answer in it is recorded."""
        with session_scope(self.engine, readonly=True) as session:
            order = get_order(session, merchant_id=inp.merchant_id, order_id=inp.order_id)
            if order is None:
                raise ApplicationError(
                    f"order {inp.order_id} of merchant {inp.merchant_id} is unknown",
                    type="order_not_found",
                    non_retryable=True,
                )
            policy = latest_policy(session, merchant_id=inp.merchant_id) or DEFAULT_POLICY
            priors = prior_refunds(
                session,
                merchant_id=inp.merchant_id,
                order_id=inp.order_id,
                exclude_refund_id=inp.refund_id,
            )
            recent = count_recent_refunds(
                session,
                merchant_id=inp.merchant_id,
                customer_id=order.customer_id,
                since=inp.as_of - timedelta(days=30),
            )
            mine = refund_exists(session, refund_id=inp.refund_id)
        context = RefundContext(
            order=order,
            policy=policy,
            prior_refunds=priors,
            recent_customer_refunds=recent - int(mine),
        )
        decision = review(
            order=order,
            request=inp.request,
            policy=policy,
            as_of=inp.as_of,
            prior_refunds=priors,
            recent_customer_refunds=context.recent_customer_refunds,
            fx_rate=inp.fx_rate,
        )
        return ReviewResult(context=context, decision=decision)

    @activity.defn
    def record_transition(self, inp: TransitionInput) -> None:
        with session_scope(self.engine) as session:
            write_transition(session, inp)

    @activity.defn
    def record_steps(self, inp: RecordStepsInput) -> None:
        """A run's writes since its last batch (entries with their notices, payouts, releases,
        approvals), in one transaction: one local activity instead of one per write."""
        with session_scope(self.engine) as session:
            write_steps(session, inp.steps)

    @activity.defn
    def review_and_reserve(self, inp: ReviewAndReserveInput) -> ReviewAndReserveResult:
        """The review's steps in one local activity: the review (a read), then in one
        transaction the writes before it and the refund's row with its hold (without one when
        review rejects)."""
        reviewed = self.review_refund(inp.review)
        decision, context = reviewed.decision, reviewed.context
        accepted = decision.outcome is not ReviewOutcome.REJECT and decision.quote is not None
        reserve = ReserveInput(
            refund_id=inp.review.refund_id,
            request=inp.review.request,
            order=context.order,
            quote=decision.quote if accepted else None,
            policy_version=context.policy.version,
            status=RefundStatus.UNDER_REVIEW if accepted else RefundStatus.REJECTED,
            at=inp.review.as_of,
        )
        with session_scope(self.engine) as session:
            # The entry first, as the run made it; the review read nothing it writes.
            write_steps(session, inp.steps)
            reserved = self._reserve(session, reserve)
        if not (reserved.ok and decision.quote is not None and pays_at_once(decision)):
            return ReviewAndReserveResult(review=reviewed, reserved=reserved)
        # The payout follows in this workflow task: its check reads what was just committed,
        # as its own local activity would a moment later; its expected arrival likewise.
        second_check = self.recheck_quote(
            RecheckInput(
                refund_id=inp.review.refund_id,
                expected_fingerprint=decision.quote.fingerprint(),
                fx_rate=inp.review.fx_rate,
            )
        )
        return ReviewAndReserveResult(
            review=reviewed,
            reserved=reserved,
            second_check=second_check,
            first_arrival=first_arrival(
                context, decision.quote, inp.review.as_of.date(), plan=self.arrival_planner
            ),
        )

    @activity.defn
    def reserve_refund(self, inp: ReserveInput) -> ReserveResult:
        with session_scope(self.engine) as session:
            return self._reserve(session, inp)

    def _reserve(self, session: Session, inp: ReserveInput) -> ReserveResult:
        """The refund's row, with its hold when it has a quote, in the caller's transaction."""
        if inp.quote is None:
            if get_refund(session, refund_id=inp.refund_id) is None:
                session.add(_unreserved_row(inp, status=inp.status, keyring=self.keyring))
            return ReserveResult(ok=True)
        try:
            create_refund(
                session,
                refund_id=inp.refund_id,
                order=inp.order,
                request=inp.request,
                quote=inp.quote,
                requested_by=inp.request.requested_by,
                policy_version=inp.policy_version,
                status=inp.status,
                at=inp.at,
                keyring=self.keyring,
            )
        except OverRefund as exc:
            # Another refund of the order took the money first (nothing of this one was
            # written: its savepoint rolled back). Its id was given to a client, so the refund
            # keeps a row and reads REJECTED; the run's "rejected" entry carries the code. A
            # requote that no longer fits has its row already.
            if get_refund(session, refund_id=inp.refund_id) is None:
                session.add(
                    _unreserved_row(inp, status=RefundStatus.REJECTED, keyring=self.keyring)
                )
            return ReserveResult(ok=False, code=exc.code, message=exc.message)
        return ReserveResult(ok=True)

    @activity.defn
    def release_reservation(self, inp: ReleaseInput) -> None:
        with session_scope(self.engine) as session:
            write_release(session, inp)

    @activity.defn
    def record_approval(self, inp: ApprovalInput) -> None:
        with session_scope(self.engine) as session:
            write_approval(session, inp)

    @activity.defn
    def recheck_quote(self, inp: RecheckInput) -> RecheckResult:
        """The second check: recompute the quote from what the database holds, independently
        of the workflow's copy, before any money moves."""
        with session_scope(self.engine, readonly=True) as session:
            row = refund_for_recheck(session, refund_id=inp.refund_id)
            if row is None:
                return RecheckResult(matches=False, fingerprint="", total=0, detail="no refund row")
            order = get_order(session, merchant_id=row.merchant_id, order_id=row.order_id)
            policy = _policy(session, merchant_id=row.merchant_id, version=row.policy_version)
            priors = [
                p
                for p in prior_refunds(
                    session,
                    merchant_id=row.merchant_id,
                    order_id=row.order_id,
                    exclude_refund_id=row.refund_id,
                )
                if p.created_at is not None and p.created_at < row.created_at
            ]
        stored = Quote.model_validate(row.quote)
        if order is None:
            return RecheckResult(matches=False, fingerprint="", total=0, detail="order vanished")
        try:
            fresh = compute_quote(
                order=order,
                request=RefundRequest.model_validate(row.request),
                policy=policy,
                prior_refunds=priors,
                deductions=stored.deductions,
                fx_rate=inp.fx_rate,
            )
        except DomainError as exc:
            return RecheckResult(matches=False, fingerprint="", total=0, detail=exc.message)
        fp = fresh.fingerprint()
        matches = fp == inp.expected_fingerprint == row.quote_fingerprint
        detail = (
            ""
            if matches
            else (
                f"recomputed total {fresh.total} (fingerprint {fp[:8]}), workflow has "
                f"{inp.expected_fingerprint[:8]}, "
                f"database has {row.quote_fingerprint[:8]} / {row.total}"
            )
        )
        return RecheckResult(matches=matches, fingerprint=fp, total=fresh.total, detail=detail)

    @activity.defn
    def register_payout(self, inp: RecordPayoutInput) -> None:
        with session_scope(self.engine) as session:
            write_payout_key(session, inp)

    @activity.defn
    def record_payout(self, inp: RecordPayoutInput) -> None:
        with session_scope(self.engine) as session:
            write_payout(session, inp)


def _unreserved_row(
    inp: ReserveInput, *, status: RefundStatus, keyring: Keyring | None
) -> RefundRow:
    """The row of a refund that holds no money: rejected at review or at its reservation."""
    order, req = inp.order, inp.request
    return RefundRow(
        refund_id=inp.refund_id,
        merchant_id=order.merchant_id,
        order_id=order.order_id,
        customer_id=order.customer_id,
        status=status.value,
        reason=req.reason.value,
        currency=order.currency,
        total=0,
        requested_by=req.requested_by,
        policy_version=inp.policy_version,
        quote={},
        quote_fingerprint="",
        request_fingerprint=req.fingerprint(),
        created_at=inp.at,
        updated_at=inp.at,
        **personal_columns(keyring, inp.refund_id, req.model_dump(mode="json")),
    )


def _policy(session: Session, *, merchant_id: str, version: int) -> Policy:
    return (
        get_policy(session, merchant_id=merchant_id, version=version)
        or latest_policy(session, merchant_id=merchant_id)
        or DEFAULT_POLICY
    )
