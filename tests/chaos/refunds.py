"""The refunds a fault round makes, each through one provider with a scripted behaviour and,
for some, a crash point: its order, the payment the provider holds, its request through the
API, and what it must end as."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel import select

from refundflow.db.engine import session_scope
from refundflow.db.models import PayoutRow, RefundRow
from refundflow.devstack.simulators.gates import AFTER_COMMIT, BEFORE_COMMIT
from refundflow.workflows.client import refund_id_for
from tests.chaos.stack import MERCHANT, ChaosStack
from tests.workflows.conftest import ACCOUNT

METHODS = {
    "alipay": "alipay",
    "wechat": "wechat",
    "stripe": "card",
    "paypal": "paypal",
    "bank_transfer": "bank_transfer",
}
"""Which payment method each provider pays (cards through Stripe)."""
FAILURES: dict[str, tuple[str, str]] = {
    "alipay": ("permanent", "ACQ.TRADE_HAS_CLOSE"),
    "wechat": ("fail_later", "ABNORMAL"),
    "stripe": ("fail_later", "expired_or_canceled_card"),
    "paypal": ("permanent", "REFUND_TIME_LIMIT_EXCEEDED"),
    "bank_transfer": ("fail_later", "AC04"),
}
"""A failure for good of each provider's own kind: refused at once, or after acceptance."""
BEHAVIOURS = ("ok", "twice", "transient", "timeout_after_commit", "fallback", "late", "reorder")
CRASH_POINTS = ("before_send", "after_send", "after_record")
"""Where a worker dies: the provider has the request and has not stored it; has stored the
refund and not answered; has answered, we recorded it, and it has not settled yet."""
CAPTURED, REFUNDED = 10_000, 5_000  # CNY 100.00 paid, one of two mugs refunded


@dataclass(frozen=True)
class Planned:
    name: str
    """Unique in the round: the order id and the Idempotency-Key."""
    provider: str
    behaviour: str = "ok"
    crash: str = ""

    @property
    def refund_id(self) -> str:
        return refund_id_for(MERCHANT, self.name)

    @property
    def key(self) -> str:
        """The first payout's key (tranche 1, generation 1)."""
        return f"{self.refund_id}:1:1"

    @property
    def txn(self) -> str:
        return ("pi_" if self.provider == "stripe" else "txn") + self.name.replace("-", "")

    @property
    def paid_route(self) -> str:
        """The route that must pay this refund, once."""
        return "balance" if self.behaviour == "fallback" else METHODS[self.provider]


def plan_round(count: int, crashes: list[tuple[str, str]]) -> list[Planned]:
    """``count`` refunds spread over the providers and behaviours, plus one per crash
    (provider, point); names are unique per round."""
    stamp = f"{int(time.time() * 1000) % 10**9:09d}"
    providers = sorted(METHODS)
    # Five providers, seven behaviours: every pair comes up once in 35 refunds.
    plans = [
        Planned(f"r{stamp}-{i}", providers[i % len(providers)], BEHAVIOURS[i % len(BEHAVIOURS)])
        for i in range(count)
    ]
    plans += [
        Planned(f"k{stamp}-{i}", provider, crash=point)
        for i, (provider, point) in enumerate(crashes)
    ]
    return plans


def _script(stack: ChaosStack, plan: Planned) -> None:
    ledger = stack.ledgers[plan.provider]
    number = stack.refund_no(plan.provider, plan.key)
    if plan.provider != "bank_transfer":  # a bank pays from the merchant's own account
        paid_at = time.time() - 2 * 86400
        ledger.add_payment(plan.txn, amount=CAPTURED, currency="CNY", paid_at=paid_at)
    scripts: dict[str, Any] = {
        "twice": lambda: ledger.script_webhooks(number, ["twice"]),
        "late": lambda: ledger.script_webhooks(number, [("late", "3")]),
        "reorder": lambda: ledger.script_webhooks(number, ["out_of_order"]),
        "transient": lambda: ledger.script(number, ["transient"]),
        "timeout_after_commit": lambda: ledger.script(number, ["timeout_after_commit"]),
        "fallback": lambda: ledger.script(number, [FAILURES[plan.provider]]),
        "before_send": lambda: ledger.gates.arm(number, BEFORE_COMMIT),
        "after_send": lambda: ledger.gates.arm(number, AFTER_COMMIT),
        # Accepted, and settled only when the test says so (after the crash).
        "after_record": lambda: ledger.script(number, [("ok", "never")]),
    }
    for what in (plan.behaviour, plan.crash):
        if what in scripts:
            scripts[what]()


async def place(stack: ChaosStack, plan: Planned) -> None:
    """The order, as the shop's order system sends it, and the refund request (202)."""
    _script(stack, plan)
    now = datetime.now(UTC)
    order = {
        "channel": "own_store",
        "customer_id": f"c-{plan.name}",
        "country": "CN",
        "currency": "CNY",
        "placed_at": (now - timedelta(days=2)).isoformat(),
        "status": "DELIVERED",
        "delivered_at": (now - timedelta(days=1)).isoformat(),
        "lines": [{"line_id": "l1", "sku": "MUG", "quantity": 2, "unit_price": CAPTURED // 2}],
        "payments": [
            {
                "payment_id": "p1",
                "method": METHODS[plan.provider],
                "provider_txn_id": plan.txn,
                "captured": CAPTURED,
                "currency": "CNY",
                "paid_at": (now - timedelta(days=2)).isoformat(),
            }
        ],
    }
    request: dict[str, Any] = {
        "order_id": plan.name,
        "items": [{"line_id": "l1", "quantity": 1}],
        "reason": "LATE_DELIVERY",
        "contact": {"email": f"{plan.name}@example.com", "locale": "zh-CN"},
    }
    if plan.provider == "bank_transfer":
        request["destination"] = {"kind": "BANK_TRANSFER", "bank_account": ACCOUNT}
    async with stack.http() as http:
        put = await _retrying(http, "PUT", f"/v1/orders/{plan.name}", json=order)
        assert put.status_code == 200, put.text
        headers = {"Idempotency-Key": plan.name}
        made = await _retrying(http, "POST", "/v1/refunds", json=request, headers=headers)
        assert made.status_code == 202, made.text
        assert made.json()["refund_id"] == plan.refund_id


async def _retrying(http: Any, method: str, url: str, **kw: Any) -> Any:
    """A call the API may answer 503 while Temporal restarts; the same call is safe again."""
    for _ in range(60):
        response = await http.request(method, url, **kw)
        if response.status_code != 503:
            return response
        await asyncio.sleep(1)
    return response


def payouts(stack: ChaosStack, refund_id: str) -> list[PayoutRow]:
    with session_scope(stack.engine, readonly=True) as session:
        rows = session.exec(select(PayoutRow).where(PayoutRow.refund_id == refund_id))
        return list(rows.all())


def refund_status(stack: ChaosStack, refund_id: str) -> str:
    with session_scope(stack.engine, readonly=True) as session:
        row = session.get(RefundRow, refund_id)
        return "" if row is None else row.status


def all_paid(stack: ChaosStack, plan: Planned) -> bool:
    """Every tranche's newest payout settled, and the run waiting for the customer's word (or
    done already: money paid to the store balance needs none)."""
    newest: dict[int, PayoutRow] = {}
    for row in payouts(stack, plan.refund_id):
        if row.seq not in newest or row.generation > newest[row.seq].generation:
            newest[row.seq] = row
    settled = bool(newest) and all(row.status == "settled" for row in newest.values())
    return settled and refund_status(stack, plan.refund_id) in ("AWAITING_FUNDS", "COMPLETED")
