"""Every provider, through the workflow: the run pays with the real adapter, the simulator
answers in the provider's protocol, and its webhooks come back through the API."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest

from refundflow.domain.orders import PaymentMethod
from refundflow.domain.states import PayoutStatus, RefundStatus
from refundflow.workflows.refund import RefundWorkflow
from tests.providers.conftest import ProviderStack
from tests.workflows.conftest import payment

ALL_ITEMS = [{"line_id": "l1", "quantity": 2}, {"line_id": "l2", "quantity": 1}]


async def _order(p: ProviderStack, order_id: str) -> Any:
    """An order of 100.00 paid through the provider; ids carry the provider's name because the
    Temporal test server is shared by the whole session."""
    txn = f"{p.provider.txn_prefix}{order_id}"
    p.pay(txn, 10000)
    tender = payment("p1", p.provider.method.value, 10000, await p.stack.now())
    return await p.stack.order(order_id, payments=[{**tender, "provider_txn_id": txn}])


async def test_full_refund(provider: ProviderStack) -> None:
    p = provider
    order = await _order(p, f"{p.name}-o-full")
    result = await p.run(f"{p.name}-full", order, items=ALL_ITEMS)
    assert result.status is RefundStatus.COMPLETED
    refunds = p.refunds(f"{p.name}-full")
    assert [(r.amount, r.status) for r in refunds] == [(10000, "SUCCESS")]
    assert result.payouts[0].provider_ref  # the provider's own reference is kept
    assert p.stack.tender("p1").refunded == 10000


async def test_partial_refunds_add_up_to_the_payment(provider: ProviderStack) -> None:
    p = provider
    order = await _order(p, f"{p.name}-o-part")
    first = await p.run(f"{p.name}-part-1", order)
    rest = [{"line_id": "l1", "quantity": 1}, {"line_id": "l2", "quantity": 1}]
    second = await p.run(f"{p.name}-part-2", order, items=rest)
    assert (first.status, second.status) == (RefundStatus.COMPLETED, RefundStatus.COMPLETED)
    amounts = [r.amount for r in p.refunds(f"{p.name}-part-1") + p.refunds(f"{p.name}-part-2")]
    assert amounts == [4000, 6000]
    assert p.stack.tender("p1").refunded == 10000


async def test_a_duplicate_webhook_is_applied_once(provider: ProviderStack) -> None:
    p = provider
    p.ledger.script_webhooks(p.provider.refund_no(f"{p.name}-twice:"), ["twice"])
    order = await _order(p, f"{p.name}-o-twice")
    result = await p.run(f"{p.name}-twice", order)
    assert result.status is RefundStatus.COMPLETED
    rows = await p.wait_for_webhooks(1)
    assert len(rows) == 1  # the second delivery of the same event was recognised
    assert rows[0].payload["payout_key"] == f"{p.name}-twice:1:1"
    # What the provider says it refunded, checked by the run against the payout (Alipay's
    # notification names only the trade's running total, so it names no amount here).
    assert rows[0].payload["amount"] == (None if p.name == "alipay" else 4000)
    assert [k for k in p.stack.audit_kinds(f"{p.name}-twice") if k == "payout_settled"] == [
        "payout_settled"
    ]


async def test_a_webhook_that_never_comes_is_replaced_by_polling(provider: ProviderStack) -> None:
    p = provider
    p.ledger.script_webhooks(p.provider.refund_no(f"{p.name}-quiet:"), ["never"])
    order = await _order(p, f"{p.name}-o-quiet")
    result = await p.run(f"{p.name}-quiet", order)
    assert result.status is RefundStatus.COMPLETED
    assert [r.status for r in p.refunds(f"{p.name}-quiet")] == ["SUCCESS"]
    assert p.webhook_events() == []


async def test_commit_then_timeout_pays_exactly_once(provider: ProviderStack) -> None:
    p = provider
    p.ledger.script(p.provider.refund_no(f"{p.name}-lost:"), ["timeout_after_commit"])
    order = await _order(p, f"{p.name}-o-lost")
    result = await p.run(f"{p.name}-lost", order)
    assert result.status is RefundStatus.COMPLETED
    # The provider committed although our call timed out; the retry asked before resending.
    assert [r.refund_no for r in p.refunds(f"{p.name}-lost")] == [
        p.provider.refund_no(f"{p.name}-lost:1:1")
    ]
    assert [pay.key for pay in result.payouts] == [f"{p.name}-lost:1:1"]
    assert p.stack.tender("p1").refunded == 4000


async def test_a_permanent_failure_falls_back_to_the_store_balance(
    provider: ProviderStack,
) -> None:
    p = provider
    p.ledger.script(p.provider.refund_no(f"{p.name}-dead:"), [p.provider.permanent])
    order = await _order(p, f"{p.name}-o-dead")
    result = await p.run(f"{p.name}-dead", order)
    assert result.status is RefundStatus.COMPLETED
    first, fallback = result.payouts
    assert (first.route, first.status.value) == (p.provider.method, "failed_permanent")
    assert first.code == p.provider.permanent[1]
    assert (fallback.route.value, fallback.status.value) == ("balance", "settled")
    assert p.stack.tender("p1").refunded == 4000


@pytest.mark.parametrize("provider", ["stripe"], indirect=True)
async def test_a_refund_in_another_currency_escalates_without_a_fallback(
    provider: ProviderStack,
) -> None:
    """Our order says CNY, the card was charged in USD: Stripe refunds 40.00 USD. Money moved,
    so neither a retry nor the balance fallback may pay again; ops get the refund's id."""
    p = provider
    txn = f"{p.provider.txn_prefix}{p.name}-o-fx"
    p.ledger.add_payment(txn, amount=10000, currency="USD", paid_at=time.time() - 2 * 86400)
    tender = payment("p1", p.provider.method.value, 10000, await p.stack.now())
    order = await p.stack.order(f"{p.name}-o-fx", payments=[{**tender, "provider_txn_id": txn}])
    handle = await p.stack.start(f"{p.name}-fx", order)
    state = await handle.query(RefundWorkflow.view)
    for _ in range(60):
        state = await handle.query(RefundWorkflow.view)
        if state.status is RefundStatus.NEEDS_ATTENTION:
            break
        await p.stack.env.sleep(timedelta(minutes=1))
    assert state.status is RefundStatus.NEEDS_ATTENTION
    [stored] = p.refunds(f"{p.name}-fx")
    assert (stored.amount, stored.currency) == (4000, "USD")
    assert stored.provider_ref in state.escalation_reason
    assert [(pay.route, pay.status) for pay in state.payouts] == [
        (PaymentMethod.CARD, PayoutStatus.UNKNOWN)
    ]
    assert p.stack.tender("p1").refunded == 0
