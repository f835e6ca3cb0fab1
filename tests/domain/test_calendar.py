"""Business days and expected arrival over real holiday calendars.

Expected dates are counted by hand from the official calendars and written as literals, so a
change in the ``holidays`` data or in the counting shows up here.
"""

from __future__ import annotations

from datetime import date

import pytest

from refundflow.domain.calendar import (
    ArrivalWindow,
    add_business_days,
    expected_arrival,
    is_business_day,
)
from refundflow.domain.errors import DomainError
from refundflow.domain.orders import PaymentMethod
from refundflow.domain.policy import DEFAULT_POLICY, Policy

# China, National Day 2026 (State Council notice): Oct 1-7 off; Sun Sep 20 and Sat Oct 10 are
# make-up working days.
# Sep 2026:  Mon 28  Tue 29  Wed 30
# Oct 2026:  Thu 1 - Wed 7 holiday | Thu 8  Fri 9  Sat 10 (work) | Sun 11 | Mon 12 ... Thu 15


def test_china_national_day_week_is_no_business_day() -> None:
    for day in range(1, 8):
        assert not is_business_day(date(2026, 10, day), "CN")
    assert is_business_day(date(2026, 9, 30), "CN")
    assert is_business_day(date(2026, 10, 8), "CN")


def test_china_make_up_weekend_days_are_business_days() -> None:
    assert is_business_day(date(2026, 10, 10), "CN")  # Saturday, worked for National Day
    assert is_business_day(date(2026, 9, 20), "CN")  # Sunday, worked for National Day
    assert not is_business_day(date(2026, 10, 11), "CN")  # an ordinary Sunday


def test_alipay_sent_before_national_day_skips_the_golden_week() -> None:
    # Alipay takes 1-3 business days. Sent Wed 2026-09-30; Oct 1-7 are holidays, so:
    #   1st business day Thu Oct 8, 2nd Fri Oct 9, 3rd Sat Oct 10 (make-up working day).
    window = expected_arrival(date(2026, 9, 30), PaymentMethod.ALIPAY, DEFAULT_POLICY, "CN")
    assert window == ArrivalWindow(earliest=date(2026, 10, 8), latest=date(2026, 10, 10))


def test_card_sent_before_national_day() -> None:
    # Card takes 3-7 business days. Sent Wed 2026-09-30:
    #   1 Thu Oct 8, 2 Fri Oct 9, 3 Sat Oct 10 (make-up), [Sun Oct 11 off],
    #   4 Mon Oct 12, 5 Tue Oct 13, 6 Wed Oct 14, 7 Thu Oct 15.
    window = expected_arrival(date(2026, 9, 30), PaymentMethod.CARD, DEFAULT_POLICY, "CN")
    assert window == ArrivalWindow(earliest=date(2026, 10, 10), latest=date(2026, 10, 15))


def test_same_dates_in_the_us_ignore_chinese_holidays() -> None:
    # Sent Wed 2026-09-30 in the US: 1 Thu Oct 1, 2 Fri Oct 2, [weekend], 3 Mon Oct 5.
    window = expected_arrival(date(2026, 9, 30), PaymentMethod.ALIPAY, DEFAULT_POLICY, "US")
    assert window == ArrivalWindow(earliest=date(2026, 10, 1), latest=date(2026, 10, 5))


def test_us_christmas_and_new_year_across_the_year_end() -> None:
    # Card 3-7 business days, sent Wed 2026-12-23 in the US:
    #   1 Thu Dec 24, [Fri Dec 25 Christmas, Sat 26, Sun 27], 2 Mon Dec 28, 3 Tue Dec 29,
    #   4 Wed Dec 30, 5 Thu Dec 31, [Fri Jan 1 New Year's Day, Sat 2, Sun 3],
    #   6 Mon Jan 4 2027, 7 Tue Jan 5 2027.
    window = expected_arrival(date(2026, 12, 23), PaymentMethod.CARD, DEFAULT_POLICY, "US")
    assert window == ArrivalWindow(earliest=date(2026, 12, 29), latest=date(2027, 1, 5))


def test_weekend_is_skipped() -> None:
    # Sent Fri 2026-03-13 (no US holiday near): 1 Mon Mar 16, 2 Tue Mar 17, 3 Wed Mar 18.
    assert add_business_days(date(2026, 3, 13), 1, "US") == date(2026, 3, 16)
    assert add_business_days(date(2026, 3, 13), 3, "US") == date(2026, 3, 18)
    # Counting from a Saturday starts on the Monday.
    assert add_business_days(date(2026, 3, 14), 1, "US") == date(2026, 3, 16)


def test_zero_days_is_the_same_day_even_on_a_holiday() -> None:
    assert add_business_days(date(2026, 10, 3), 0, "CN") == date(2026, 10, 3)
    window = expected_arrival(date(2026, 10, 3), PaymentMethod.BALANCE, DEFAULT_POLICY, "CN")
    assert window == ArrivalWindow(earliest=date(2026, 10, 3), latest=date(2026, 10, 3))


def test_policy_holiday_country_overrides_the_order_country() -> None:
    policy = Policy(holiday_country="CN")
    window = expected_arrival(date(2026, 9, 30), PaymentMethod.ALIPAY, policy, "US")
    assert window.latest == date(2026, 10, 10)


def test_unknown_country_is_a_domain_error() -> None:
    with pytest.raises(DomainError) as info:
        is_business_day(date(2026, 1, 5), "XX")
    assert info.value.code == "unknown_country"
    with pytest.raises(DomainError) as info:
        add_business_days(date(2026, 1, 5), 0, "XX")
    assert info.value.code == "unknown_country"


def test_negative_days_are_refused() -> None:
    with pytest.raises(ValueError):
        add_business_days(date(2026, 1, 5), -1, "US")
