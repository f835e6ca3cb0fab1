"""The dev stack's fast follow-up: business days of arrival windows last seconds, only when
asked for, and a worker outside the dev stack refuses the setting."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta

import pytest

from refundflow.activities.contracts import ArrivalInput
from refundflow.cli.dev_clock import compressed_arrival_plan
from refundflow.domain.orders import PaymentMethod
from refundflow.domain.policy import DEFAULT_POLICY

NOW = datetime(2027, 10, 1, 9, 30, tzinfo=UTC)  # National Day: no business day for a week
BANK, BALANCE = PaymentMethod.BANK_TRANSFER, PaymentMethod.BALANCE


def _input(routes: list[PaymentMethod], **extra: object) -> ArrivalInput:
    return ArrivalInput(
        start=NOW.date(),
        routes=routes,
        open_routes=routes,
        policy=DEFAULT_POLICY,
        country="CN",
        **extra,
    )


def test_a_business_day_lasts_what_the_dev_stack_was_told() -> None:
    day = timedelta(seconds=20)
    plan = compressed_arrival_plan(_input([BANK]), business_day=day, now=NOW)
    # Bank transfers take up to 3 business days; the window ends at the start of the 4th.
    assert plan.window_ends_at == NOW + 4 * day
    assert plan.earliest == plan.latest == NOW.date()
    later = compressed_arrival_plan(
        _input([BANK], not_before=date(2027, 10, 2)), business_day=day, now=NOW
    )
    assert later.latest == date(2027, 10, 2)  # what an earlier payout promised stands
    paid_at_once = compressed_arrival_plan(_input([BALANCE]), business_day=day, now=NOW)
    assert paid_at_once.window_ends_at is None


@pytest.mark.parametrize("command", [["worker"], ["api", "--port", "1"]])
def test_a_process_outside_the_dev_stack_refuses_the_dev_setting(command: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFUNDFLOW_")}
    env["REFUNDFLOW_DEV_BUSINESS_DAY_SECONDS"] = "20"
    done = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "refundflow"), *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error dev_only_setting: REFUNDFLOW_DEV_BUSINESS_DAY_SECONDS")
    assert done.stderr.count("\n") == 1
