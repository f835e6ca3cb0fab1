"""Crash the worker at every payout point and the Temporal server once, mid-flight, with
refunds running through every provider; then nothing may be lost and nothing paid twice.

A small round runs with the suite; ``make chaos`` runs the full one (every provider at every
point, ``N`` refunds besides) and prints its figures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.chaos.refunds import CAPTURED, CRASH_POINTS, REFUNDED, Planned
from tests.chaos.round import RoundResult, run_round
from tests.chaos.stack import PROVIDERS, ChaosStack, chaos_stack
from tests.chaos.verify import verify


def _assert_sound(result: RoundResult) -> None:
    report, problems = result.report, result.findings.problems
    assert not problems, f"{report.line()}\n" + "\n".join(problems)
    assert report.completed == report.refunds, report.line()


async def test_a_bounded_round_loses_nothing_and_pays_nothing_twice(tmp_path: Path) -> None:
    # One crash at each point, each through another provider; ten refunds around them.
    crashes = list(zip(("wechat", "stripe", "bank_transfer"), CRASH_POINTS, strict=True))
    async with chaos_stack(tmp_path, f"sqlite:///{tmp_path / 'refundflow.db'}") as stack:
        result = await run_round(stack, 10, crashes)
        print(f"\n{result.report.line()}")
        assert (result.report.worker_kills, result.report.temporal_kills) == (3, 1)
        _assert_sound(result)
        _the_verifier_sees_a_second_payment(stack, result.plans)


def _the_verifier_sees_a_second_payment(stack: ChaosStack, plans: list[Planned]) -> None:
    """The same books with one tranche paid again at the provider (a refund under a key our
    books never made) are not sound: the verifier is not blind."""
    refund_id = plans[0].refund_id
    ledger = stack.ledgers["alipay"]
    stray = f"{refund_id}:1:9"
    ledger.add_payment("stray-trade", amount=CAPTURED, currency="CNY")
    outcome = ledger.create_refund(
        refund_no=stray,
        payment_id="stray-trade",
        amount=REFUNDED,
        currency="CNY",
        check=lambda payment, refunds: None,
        make_refs=lambda number: ("stray", ""),
    )
    assert outcome.kind == "created"
    ledger.settle(stray)
    again = verify(stack, plans)
    assert any(f"{refund_id} tranche 1 paid 2x" in d for d in again.duplicates), again.problems
    assert any("no payout of ours has this key" in lost for lost in again.lost), again.problems


@pytest.mark.chaos
async def test_a_full_round(tmp_path: Path, chaos_database: str) -> None:
    count = int(os.environ.get("CHAOS_REFUNDS", "50"))
    crashes = [(provider, point) for point in CRASH_POINTS for provider in PROVIDERS]
    async with chaos_stack(tmp_path, chaos_database) as stack:
        result = await run_round(stack, count, crashes, patience_s=1800)
    print(f"\n{result.report.line()} database={chaos_database.split(':')[0]}")
    _assert_sound(result)
