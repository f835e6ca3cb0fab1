"""Decisions that could change with a deploy, run as local activities so each answer is recorded
in the run's history: a rounding fix or a new year of holiday data changes new refunds, never the
replay of one already running (docs/architecture.md, "What runs where").

No database or network here: plain functions of their input.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

from temporalio import activity

from refundflow.activities.contracts import (
    ArrivalAhead,
    ArrivalInput,
    FallbackInput,
    FallbackResult,
    RefundContext,
    RequoteInput,
    RequoteResult,
)
from refundflow.domain.calculation import compute_quote
from refundflow.domain.calendar import ArrivalPlan, arrival_plan
from refundflow.domain.errors import DomainError
from refundflow.domain.payout_rules import fallback_route
from refundflow.domain.provider_rules import first_poll_after
from refundflow.domain.quote import Quote


@activity.defn
def requote(inp: RequoteInput) -> RequoteResult:
    context = inp.context
    try:
        quote = compute_quote(
            order=context.order,
            request=inp.request,
            policy=context.policy,
            prior_refunds=context.prior_refunds,
            deductions=inp.deductions,
            fx_rate=inp.fx_rate,
        )
    except DomainError as err:
        return RequoteResult(quote=None, error=err.message)
    return RequoteResult(quote=quote)


@activity.defn
def plan_arrival(inp: ArrivalInput) -> ArrivalPlan:
    plan = arrival_plan(
        inp.start,
        inp.routes,
        inp.policy,
        inp.country,
        open_routes=inp.open_routes,
        not_before=inp.not_before,
    )
    default = timedelta(minutes=inp.policy.follow_up.first_poll_minutes)
    first_poll = first_poll_after(inp.open_routes, default)
    return plan.model_copy(update={"first_poll_seconds": int(first_poll.total_seconds())})


@activity.defn
def choose_fallback(inp: FallbackInput) -> FallbackResult:
    route = fallback_route(inp.actions, tried=set(inp.tried), has_bank_account=inp.has_bank_account)
    return FallbackResult(route=route)


def first_arrival(
    context: RefundContext,
    quote: Quote,
    start: date,
    *,
    plan: Callable[[ArrivalInput], ArrivalPlan],
) -> ArrivalAhead | None:
    """What ``plan`` (the worker's ``plan_arrival``) will answer when the first payout of
    ``quote`` is sent on ``start``, if it is due at once (the refund pays as soon as it is
    reviewed)."""
    planned = sorted(quote.payouts, key=lambda payout: payout.seq)
    if not planned or planned[0].due_after_days:
        return None
    routes, open_routes = [planned[0].route], [payout.route for payout in planned]
    asked = ArrivalInput(
        start=start,
        routes=routes,
        open_routes=open_routes,
        policy=context.policy,
        country=context.order.country,
    )
    return ArrivalAhead(start=start, routes=routes, open_routes=open_routes, plan=plan(asked))


def all_decisions() -> list[Callable[..., Any]]:
    return [requote, plan_arrival, choose_fallback]
