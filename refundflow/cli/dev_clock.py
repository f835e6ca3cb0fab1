"""The dev stack's fast follow-up (``refundflow dev --business-day-seconds N``).

A delayed refund tells its customer once the arrival window has passed: days later with real
business days, too late for a demo. In the dev stack a business day can last ``N`` seconds
instead. The ``plan_arrival`` activity is replaced, under its own name, by one that measures
windows in those seconds, and so is the review's own answer for a payout that follows at once
(``RefundActivities.arrival_planner``); the workflow and the product's activity are unchanged, and
the setting is refused outside the dev stack (``refundflow worker`` will not start with it).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio import activity

from refundflow.activities.contracts import ArrivalInput
from refundflow.activities.decisions import all_decisions, plan_arrival
from refundflow.domain.calendar import ArrivalPlan


def compressed_arrival_plan(
    inp: ArrivalInput, *, business_day: timedelta, now: datetime
) -> ArrivalPlan:
    """The arrival window of :func:`refundflow.domain.calendar.arrival_plan` with every
    business day lasting ``business_day`` from ``now`` (no weekends, no holidays)."""
    days = [inp.policy.arrival(route) for route in inp.routes]
    latest = (now + business_day * max(d.max for d in days)).date()
    if inp.not_before is not None and inp.not_before > latest:
        latest = inp.not_before
    immediate = all(inp.policy.arrival(route).max == 0 for route in inp.open_routes)
    return ArrivalPlan(
        earliest=(now + business_day * min(d.min for d in days)).date(),
        latest=latest,
        # As in the real plan: late from the start of the business day after the last one.
        window_ends_at=None if immediate else now + business_day * (max(d.max for d in days) + 1),
    )


def fast_arrival(business_day: timedelta) -> Callable[[ArrivalInput], ArrivalPlan]:
    """``plan_arrival`` on the fast clock: what the dev worker's decision activity answers, and
    what its review answers when it works out a first payout's arrival ahead."""

    def plan_arrival(inp: ArrivalInput) -> ArrivalPlan:
        # The dev server's clock is the wall clock: no time skipping there.
        return compressed_arrival_plan(inp, business_day=business_day, now=datetime.now(UTC))

    return plan_arrival


def fast_decisions(plan: Callable[[ArrivalInput], ArrivalPlan]) -> list[Callable[..., Any]]:
    """The decision activities a dev worker registers: ``plan_arrival`` on the fast clock."""
    fast = activity.defn(name="plan_arrival")(plan)
    return [fast if decision is plan_arrival else decision for decision in all_decisions()]
