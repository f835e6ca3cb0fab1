"""Business days over a country's holiday calendar (the maintained ``holidays`` package).

``HolidayBase.is_working_day`` knows both public holidays and a country's weekend make-up
working days (China moves weekend days around its Golden Weeks), so a refund sent just before
National Day is expected on the date a customer there would expect it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Self

import holidays
from pydantic import BaseModel, ConfigDict, model_validator

from refundflow.domain.errors import DomainError
from refundflow.domain.orders import PaymentMethod
from refundflow.domain.policy import Policy


class ArrivalWindow(BaseModel):
    """The first and the last day the money may reach the customer."""

    model_config = ConfigDict(frozen=True)

    earliest: date
    latest: date

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.earliest > self.latest:
            raise ValueError("earliest must not be after latest")
        return self


@lru_cache(maxsize=256)
def _calendar(country: str, year: int) -> holidays.HolidayBase:
    # One year per object: the calendar is only ever asked about days of its own year, so the
    # cached object is never expanded (mutated) behind the cache's back.
    try:
        return holidays.country_holidays(country, years=year)
    except NotImplementedError:
        raise DomainError(
            f"no holiday calendar for country {country!r}", code="unknown_country", country=country
        ) from None


def is_business_day(day: date, country: str) -> bool:
    """Not a weekend and not a public holiday in ``country``, or a make-up working day."""
    return bool(_calendar(country, day.year).is_working_day(day))


def add_business_days(start: date, days: int, country: str) -> date:
    """The ``days``-th business day after ``start``; ``start`` itself for 0 days.

    Counting starts on the day after ``start``, whether or not ``start`` is a business day.
    """
    if days < 0:
        raise ValueError("days must not be negative")
    _calendar(country, start.year)  # an unknown country fails even when days == 0
    day = start
    left = days
    while left:
        day += timedelta(days=1)
        if is_business_day(day, country):
            left -= 1
    return day


def expected_arrival(
    sent_on: date, method: PaymentMethod, policy: Policy, country: str
) -> ArrivalWindow:
    """When money sent on ``sent_on`` by ``method`` should arrive, in business days.

    The policy's ``holiday_country`` wins over ``country`` (the order's country), for merchants
    whose payment provider works to one calendar whatever the customer's country.
    """
    days = policy.arrival(method)
    calendar = policy.holiday_country or country
    return ArrivalWindow(
        earliest=add_business_days(sent_on, days.min, calendar),
        latest=add_business_days(sent_on, days.max, calendar),
    )


class ArrivalPlan(BaseModel):
    """When the customer should have the money of every payout sent so far."""

    model_config = ConfigDict(frozen=True)

    earliest: date
    """The first day money sent now may arrive."""
    latest: date
    """The last expected day over every payout sent: this one and those before it."""
    window_ends_at: datetime | None
    """Start of the next business day after ``latest``, when a payout not confirmed by then is
    late; ``None`` when every open route pays at once (the store balance)."""
    first_poll_seconds: int | None = None
    """When follow-up first asks the providers: their typical settle time. ``None`` in plans
    recorded before this was planned: the policy's ``first_poll_minutes`` then."""


def arrival_plan(
    start: date,
    routes: Sequence[PaymentMethod],
    policy: Policy,
    country: str,
    *,
    open_routes: Sequence[PaymentMethod],
    not_before: date | None = None,
) -> ArrivalPlan:
    """The arrival window of money sent on ``start`` through ``routes``, widened to
    ``not_before`` (what earlier payouts already promised). ``open_routes`` are the routes of
    every tranche the customer waits for: only if all of them pay at once is there no window."""
    if not routes:
        raise ValueError("an arrival plan needs at least one route")
    windows = [expected_arrival(start, route, policy, country) for route in routes]
    latest = max(w.latest for w in windows)
    if not_before is not None and not_before > latest:
        latest = not_before
    immediate = all(policy.arrival(route).max == 0 for route in open_routes)
    calendar = policy.holiday_country or country
    ends = datetime.combine(add_business_days(latest, 1, calendar), time(0), tzinfo=UTC)
    return ArrivalPlan(
        earliest=min(w.earliest for w in windows),
        latest=latest,
        window_ends_at=None if immediate else ends,
    )
