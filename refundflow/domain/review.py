"""Review (docs/architecture.md, "Review"): accept, route to approvers, or reject with reasons a
customer can read.

Every rule is checked and every broken one reported, so a customer learns all that stands in
the way at once. Bad input (an unknown line, a request in the wrong currency, a missing FX rate)
is not a rejection: its typed error propagates and the API answers it as invalid input.

The decision also carries the plan of stages the refund goes through, decided here once so the
workflow, the API and ops all read the same answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from refundflow.domain.calculation import check_request, compute_quote
from refundflow.domain.errors import OverRefund
from refundflow.domain.messages import LOCALES, join, render
from refundflow.domain.money import FxRate, Money
from refundflow.domain.orders import OrderSnapshot, OrderStatus, RefundReason, RefundRequest
from refundflow.domain.policy import Policy
from refundflow.domain.quote import Deduction, PriorRefund, Quote


class ReviewOutcome(StrEnum):
    AUTO_APPROVE = "AUTO_APPROVE"
    NEEDS_APPROVAL = "NEEDS_APPROVAL"
    REJECT = "REJECT"


class ReasonCode(StrEnum):
    """Why a request is rejected. Stable: clients, reports and message templates key on it."""

    OUTSIDE_WINDOW = "OUTSIDE_WINDOW"
    IN_TRANSIT = "IN_TRANSIT"
    RETURN_NOT_RECEIVED = "RETURN_NOT_RECEIVED"
    STATUS_NOT_REFUNDABLE = "STATUS_NOT_REFUNDABLE"
    PAYMENT_INCONSISTENT = "PAYMENT_INCONSISTENT"
    AMOUNT_ABOVE_REMAINING = "AMOUNT_ABOVE_REMAINING"
    DUPLICATE_REQUEST = "DUPLICATE_REQUEST"
    TOO_MANY_REFUNDS = "TOO_MANY_REFUNDS"
    PRESALE_NOT_ELIGIBLE = "PRESALE_NOT_ELIGIBLE"


class Tag(StrEnum):
    PRESALE = "presale"
    LARGE = "large"
    INTERNATIONAL = "international"
    INSTALLMENTS = "installments"


class ReviewDecision(BaseModel):
    model_config = ConfigDict(frozen=True)

    outcome: ReviewOutcome
    approvers_required: int
    """0 unless ``NEEDS_APPROVAL``; 2 for a large refund."""
    reasons: list[ReasonCode]
    messages: dict[str, str]
    details: dict[str, str] = {}
    """Per locale, only the reasons' sentences (for a notice that has its own opening)."""
    """What the customer reads, per locale ("zh-CN", "en")."""
    quote: Quote | None
    """Present whenever it could be computed, rejections included (ops see what was asked)."""
    # The stage plan; all False/empty for a rejection.
    return_required: bool = False
    supplier_check: bool = False
    customer_confirmation: bool = False
    installments: bool = False
    tags: list[str] = []


def pays_at_once(decision: ReviewDecision) -> bool:
    """Accepted with no stage before the payout: nothing waits between review and payment."""
    return (
        decision.outcome is ReviewOutcome.AUTO_APPROVE
        and decision.quote is not None
        and not (
            decision.supplier_check or decision.return_required or decision.customer_confirmation
        )
    )


@dataclass(frozen=True)
class _Finding:
    code: ReasonCode
    params: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    """Catalog key when it is more specific than the code itself."""


def review(
    *,
    order: OrderSnapshot,
    request: RefundRequest,
    policy: Policy,
    as_of: datetime,
    prior_refunds: Sequence[PriorRefund] = (),
    recent_customer_refunds: int = 0,
    deductions: Sequence[Deduction] = (),
    fx_rate: FxRate | None = None,
) -> ReviewDecision:
    check_request(order, request)  # bad input is raised, never hidden behind a rejection
    findings = [
        *_window(order, request, policy, as_of),
        *_status(order, request, policy),
        *_payments(order),
        *_duplicate(request, prior_refunds),
        *_frequency(policy, recent_customer_refunds),
        *_presale(order, request),
    ]
    quote: Quote | None = None
    # With tenders in another currency there is no sound quote; PAYMENT_INCONSISTENT says why.
    if all(p.currency == order.currency for p in order.payments):
        try:
            quote = compute_quote(
                order=order,
                request=request,
                policy=policy,
                prior_refunds=prior_refunds,
                deductions=deductions,
                fx_rate=fx_rate,
            )
        except OverRefund as err:
            findings.append(_over_refund(err, order, request))
        else:
            findings += _goodwill_above_remaining(order, request, quote)
    if findings:
        return _reject(findings, quote)
    assert quote is not None  # no findings means the payments were consistent
    return _accept(order, request, policy, as_of, quote)


def _aware(moment: datetime) -> datetime:
    # Snapshots may carry naive timestamps; they are read as UTC rather than failing the
    # comparison with the (aware) review time.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _window(
    order: OrderSnapshot, request: RefundRequest, policy: Policy, as_of: datetime
) -> list[_Finding]:
    days = policy.window_days(request.reason)
    start = _aware(order.delivered_at or order.placed_at)
    deadline = start + timedelta(days=days)
    if _aware(as_of) <= deadline:
        return []
    # The date as the order's own clock shows it: that is the date the customer was told.
    return [_Finding(ReasonCode.OUTSIDE_WINDOW, {"days": days, "deadline": deadline.date()})]


_SPECIFIC_STATUS = {
    OrderStatus.SHIPPED: ReasonCode.IN_TRANSIT,
    OrderStatus.RETURN_IN_PROGRESS: ReasonCode.RETURN_NOT_RECEIVED,
}


def _status(order: OrderSnapshot, request: RefundRequest, policy: Policy) -> list[_Finding]:
    allowed = {*policy.refundable_statuses, *policy.status_exceptions.get(request.reason, [])}
    if order.status in allowed:
        return []
    code = _SPECIFIC_STATUS.get(order.status, ReasonCode.STATUS_NOT_REFUNDABLE)
    return [_Finding(code, {"status": order.status})]


def _payments(order: OrderSnapshot) -> list[_Finding]:
    consistent = (
        bool(order.payments)
        and all(p.currency == order.currency for p in order.payments)
        and order.captured_total == order.total
    )
    return [] if consistent else [_Finding(ReasonCode.PAYMENT_INCONSISTENT)]


def _duplicate(request: RefundRequest, prior_refunds: Sequence[PriorRefund]) -> list[_Finding]:
    fingerprint = request.fingerprint()
    if any(p.state == "active" and p.request_fingerprint == fingerprint for p in prior_refunds):
        return [_Finding(ReasonCode.DUPLICATE_REQUEST)]
    return []


def _frequency(policy: Policy, recent_customer_refunds: int) -> list[_Finding]:
    limit = policy.max_refunds_per_customer_30d
    if recent_customer_refunds >= limit:
        return [_Finding(ReasonCode.TOO_MANY_REFUNDS, {"limit": limit})]
    return []


def _presale(order: OrderSnapshot, request: RefundRequest) -> list[_Finding]:
    if request.reason is RefundReason.PRESALE_CANCEL and order.presale is None:
        return [_Finding(ReasonCode.PRESALE_NOT_ELIGIBLE)]
    return []


def _over_refund(err: OverRefund, order: OrderSnapshot, request: RefundRequest) -> _Finding:
    code = ReasonCode.AMOUNT_ABOVE_REMAINING
    if err.code == "nothing_refundable":
        return _Finding(code, message="AMOUNT_ABOVE_REMAINING.nothing")
    if err.code == "quantity_exceeds_remaining":
        line_id = err.details["line_id"]
        line = order.line(line_id)
        requested = next(i.quantity for i in request.items if i.line_id == line_id)
        params = {
            "sku": line.sku if line else line_id,
            "requested": requested,
            "remaining": err.details["remaining_units"],
        }
        variant = "units" if params["remaining"] else "units_none"
        return _Finding(code, params, message=f"AMOUNT_ABOVE_REMAINING.{variant}")
    raise err  # an over-refund this review has no words for is a bug, not a rejection


def _goodwill_above_remaining(
    order: OrderSnapshot, request: RefundRequest, quote: Quote
) -> list[_Finding]:
    # A unit refund is simply capped at what the tenders still hold; an amount the customer
    # named is not silently reduced.
    if not request.goodwill_amount or not quote.capped:
        return []
    params = {
        "requested": Money(amount=quote.requested_total, currency=order.currency),
        "remaining": Money(amount=quote.remaining_before, currency=order.currency),
    }
    return [_Finding(ReasonCode.AMOUNT_ABOVE_REMAINING, params)]


def _reject(findings: list[_Finding], quote: Quote | None) -> ReviewDecision:
    details = {
        loc: [render(f.message or f.code.value, loc, **f.params) for f in findings]
        for loc in LOCALES
    }
    messages = {loc: join(loc, [render("REJECTED", loc), *details[loc]]) for loc in LOCALES}
    return ReviewDecision(
        outcome=ReviewOutcome.REJECT,
        approvers_required=0,
        reasons=[f.code for f in findings],
        messages=messages,
        details={loc: join(loc, parts) for loc, parts in details.items()},
        quote=quote,
    )


_OUTCOME_MESSAGE = {
    ReviewOutcome.AUTO_APPROVE: "AUTO_APPROVED",
    ReviewOutcome.NEEDS_APPROVAL: "NEEDS_APPROVAL",
}


def _presale_plan(order: OrderSnapshot, policy: Policy, as_of: datetime) -> tuple[bool, bool]:
    """(supplier check needed, a person must approve) for a presale order not yet shipped."""
    presale = order.presale
    # Once the goods have left, there is no production left to cancel: an ordinary refund.
    if presale is None or order.status is not OrderStatus.PAID:
        return False, False
    # Production under way (or of unknown start) means the supplier may charge a fee or refuse,
    # so a person looks at it however small the amount.
    starts = presale.production_starts_on
    in_production = starts is None or starts <= as_of.date()
    supplier_check = in_production or not policy.presale.free_cancel_before_production
    return supplier_check, in_production


def _accept(
    order: OrderSnapshot, request: RefundRequest, policy: Policy, as_of: datetime, quote: Quote
) -> ReviewDecision:
    currency = order.currency
    supplier_check, person_needed = _presale_plan(order, policy, as_of)
    large = quote.total > policy.limit("single_approver_max", currency)
    if quote.total <= policy.limit("auto_approve_max", currency) and not person_needed:
        outcome, approvers = ReviewOutcome.AUTO_APPROVE, 0
    else:
        outcome, approvers = ReviewOutcome.NEEDS_APPROVAL, 2 if large else 1
    amount = Money(amount=quote.total, currency=currency)
    tags = [
        tag
        for tag, on in (
            (Tag.PRESALE, order.presale is not None),
            (Tag.LARGE, large),
            (Tag.INTERNATIONAL, quote.fx is not None),
            (Tag.INSTALLMENTS, quote.installments > 1),
        )
        if on
    ]
    return ReviewDecision(
        outcome=outcome,
        approvers_required=approvers,
        reasons=[],
        messages={loc: render(_OUTCOME_MESSAGE[outcome], loc, amount=amount) for loc in LOCALES},
        quote=quote,
        return_required=(
            request.reason in policy.returns.required_for
            and order.status in (OrderStatus.DELIVERED, OrderStatus.COMPLETED)
            and bool(request.items)
        ),
        supplier_check=supplier_check,
        customer_confirmation=(
            policy.customer_confirmation.enabled
            and quote.total > policy.limit("customer_confirmation_above", currency)
        ),
        installments=quote.installments > 1,
        tags=tags,
    )
