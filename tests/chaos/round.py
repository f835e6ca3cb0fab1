"""One fault round: refunds through every provider with scripted behaviour, the worker killed
with SIGKILL at each payout point asked for and the Temporal server once, both restarted (or,
with several workers, one of them killed midway and left dead: the others take over), then
every refund followed to its end and the books checked against every provider's."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from tests.chaos.refunds import Planned, all_paid, payouts, place, plan_round, refund_status
from tests.chaos.stack import ChaosStack
from tests.chaos.verify import Findings, verify

_PLACING = 8  # refunds requested at once


@dataclass
class RoundResult:
    plans: list[Planned]
    report: RoundReport
    findings: Findings


@dataclass
class RoundReport:
    refunds: int
    completed: int
    worker_kills: int
    temporal_kills: int
    duplicates: int
    lost: int
    over_refunded: int
    unbalanced: int
    seconds: float

    def line(self) -> str:
        return "chaos round: " + json.dumps(asdict(self))


async def run_round(
    stack: ChaosStack,
    count: int,
    crashes: list[tuple[str, str]],
    *,
    kill_temporal: bool = True,
    kill_worker_midway: bool = False,
    patience_s: float = 600,
) -> RoundResult:
    """``count`` refunds plus one per (provider, crash point) in ``crashes``; ``patience_s``
    only bounds a hang (a refund not finished by then is reported lost).
    ``kill_worker_midway``: SIGKILL worker 1 once half the ordinary refunds are placed and one
    of them has reached its payout; it is started again only if it was the only worker."""
    started = time.monotonic()
    plans = plan_round(count, crashes)
    ordinary = [plan for plan in plans if not plan.crash]
    crashing = [plan for plan in plans if plan.crash]
    placing = asyncio.Semaphore(_PLACING)

    async def place_one(plan: Planned) -> None:
        async with placing:
            await place(stack, plan)

    # Every ordinary refund is in flight while the crashes happen, each at a random point.
    half = len(ordinary) // 2 if kill_worker_midway else len(ordinary)
    await asyncio.gather(*(place_one(plan) for plan in ordinary[:half]))
    if kill_worker_midway:
        paying = lambda: any(payouts(stack, plan.refund_id) for plan in ordinary[:half])  # noqa: E731
        await _until(paying, time.monotonic() + 120)
        stack.kill_worker()
        if stack.workers == 1:
            stack.start_worker()
        await asyncio.gather(*(place_one(plan) for plan in ordinary[half:]))
    middle = len(crashing) // 2
    for index, plan in enumerate(crashing):
        if kill_temporal and index == middle:
            await stack.kill_temporal()
        await place(stack, plan)
        await _crash_at(stack, plan)
    if kill_temporal and not crashing:
        await stack.kill_temporal()

    deadline = started + patience_s
    await _until(lambda: all(all_paid(stack, plan) for plan in plans), deadline)
    async with stack.http() as http:
        for plan in plans:
            # Only once paid: the customer's receipt settles whatever is still open.
            waiting = refund_status(stack, plan.refund_id) == "AWAITING_FUNDS"
            if waiting and all_paid(stack, plan):
                url = f"/v1/refunds/{plan.refund_id}/receipt"
                answer = await http.post(url, json={"received": True})
                assert answer.status_code == 200, answer.text
    await _until(
        lambda: all(refund_status(stack, plan.refund_id) == "COMPLETED" for plan in plans),
        deadline,
    )
    findings = verify(stack, plans)
    report = RoundReport(
        refunds=findings.refunds,
        completed=findings.completed,
        worker_kills=stack.worker_kills,
        temporal_kills=stack.processes.kills.get("temporal", 0),
        duplicates=len(findings.duplicates),
        lost=len(findings.lost),
        over_refunded=len(findings.over_refunded),
        unbalanced=len(findings.unbalanced),
        seconds=round(time.monotonic() - started, 1),
    )
    return RoundResult(plans, report, findings)


async def _crash_at(stack: ChaosStack, plan: Planned) -> None:
    """Wait for the worker to be at ``plan``'s crash point, kill it, let the provider go on,
    and start a new worker."""
    ledger = stack.ledgers[plan.provider]
    number = stack.refund_no(plan.provider, plan.key)
    if plan.crash == "after_record":
        recorded = lambda: any(  # noqa: E731
            row.payout_key == plan.key and row.status == "accepted"
            for row in payouts(stack, plan.refund_id)
        )
        reached = await _until(recorded, time.monotonic() + 120)
    else:
        reached = await _until(lambda: ledger.gates.arrived(number), time.monotonic() + 120)
    assert reached, f"{plan.name} ({plan.provider}) never reached {plan.crash}"
    stack.kill_worker()
    if plan.crash == "before_send":
        ledger.gates.release(number, drop=True)  # the request never reached the provider
    elif plan.crash == "after_send":
        ledger.gates.release(number)  # stored; its answer goes to a dead worker
    else:
        ledger.settle(number)  # the money moves while no worker is alive
    stack.start_worker()


async def _until(check: Callable[[], bool], deadline: float) -> bool:
    """Wait for a state; the deadline only bounds a hang (the verifier says what is missing)."""
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.25)
    return True
