"""Payout and follow-up paths: installments, provider failures, delayed arrival."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from refundflow.domain.states import CustomerConfirmation, OpsAction, ReceiptReport, RefundStatus
from refundflow.workflows.refund import RefundWorkflow
from tests.workflows.conftest import Stack, local_activities, open_stack, payment
from tests.workflows.test_refund_paths import decide, kinds, view, wait_status, wait_until


async def test_large_refund_with_customer_confirmation_and_three_installments(stack: Stack) -> None:
    # 25,000.01 CNY: large (two approvers), above the 20,000 installment threshold and tranches
    # of at most 10,000 -> 833334 + 833334 + 833333, seven days apart.
    now = await stack.now()
    order = await stack.order(
        lines=[{"line_id": "l1", "sku": "PIANO", "quantity": 1, "unit_price": 2500001}],
        payments=[payment("p1", "wechat", 2500001, now)],
    )
    handle = await stack.start("r-inst", order)
    await wait_status(stack, handle, RefundStatus.AWAITING_APPROVAL)
    await decide(handle, "alice")
    await decide(handle, "bob")
    state = await wait_status(stack, handle, RefundStatus.AWAITING_CUSTOMER)
    assert "confirm_amount" in stack.templates("r-inst")
    assert {"large", "installments"} <= set(state.tags)
    answer = await handle.execute_update(
        RefundWorkflow.customer_confirmation, CustomerConfirmation(confirmed=True)
    )
    assert answer.status is RefundStatus.PAYING
    state = await wait_until(
        stack, handle, lambda s: bool(s.payouts) and s.payouts[0].sent_at is not None
    )
    assert [p.status.value for p in state.payouts][1:] == ["pending", "pending"]
    assert state.status is RefundStatus.PAYING  # the second installment waits its interval
    await stack.env.sleep(timedelta(days=7, hours=1))
    state = await view(handle)
    assert state.payouts[1].sent_at is not None and state.payouts[2].sent_at is None
    result = await stack.finish(handle)
    assert result.status is RefundStatus.COMPLETED
    sent = [p.sent_at for p in result.payouts]
    assert all(s is not None for s in sent)
    gaps = [round((b - a) / timedelta(days=1), 2) for a, b in itertools.pairwise(sent)]  # type: ignore[operator]
    assert gaps == [7.0, 7.0]
    rows = stack.payouts("r-inst")
    assert [(r.payout_key, r.amount, r.status) for r in rows] == [
        ("r-inst:1:1", 833334, "settled"),
        ("r-inst:2:1", 833334, "settled"),
        ("r-inst:3:1", 833333, "settled"),
    ]
    assert stack.templates("r-inst").count("payout_sent") == 3
    confirmed = next(t for t in result.timeline if t.kind == "customer_confirmed")
    assert confirmed.message == "customer confirmed CN¥25,000.01" and confirmed.actor == "customer"
    assert stack.tender("p1").refunded == 2500001
    stack.assert_books_balance(result)


async def test_a_payout_is_first_polled_after_its_providers_typical_settle_time(
    stack: Stack,
) -> None:
    # The sandbox settles at the first query and sends no webhook: the poll finds it. Alipay
    # typically settles in seconds, so the first poll comes after two minutes, not thirty.
    result = await stack.finish(await stack.start("r-poll", await stack.order()))
    sent = next(t.at for t in result.timeline if t.kind == "payout_sent")
    settled = next(t.at for t in result.timeline if t.kind == "payout_settled")
    assert timedelta(minutes=2) <= settled - sent < timedelta(minutes=3)


async def test_transient_gateway_errors_are_retried(stack: Stack) -> None:
    stack.sandbox.script("r-flaky:", ["transient", "transient", "ok"])
    order = await stack.order()
    result = await stack.finish(await stack.start("r-flaky", order))
    assert result.status is RefundStatus.COMPLETED
    assert stack.sandbox.count("r-flaky:") == 1
    assert [p.payout_key for p in stack.payouts("r-flaky")] == ["r-flaky:1:1"]


async def test_timeout_after_commit_is_resolved_by_query_with_one_payout(stack: Stack) -> None:
    stack.sandbox.script("r-lost:", ["timeout_after_commit"])
    order = await stack.order()
    result = await stack.finish(await stack.start("r-lost", order))
    assert result.status is RefundStatus.COMPLETED
    # The provider committed on the first call; the retry asked before sending again.
    assert [r.payout_key for r in stack.sandbox.refunds("r-lost:")] == ["r-lost:1:1"]
    assert [p.status for p in stack.payouts("r-lost")] == ["settled"]
    assert stack.tender("p1").refunded == 4000


async def test_permanent_failure_falls_back_to_balance(stack: Stack) -> None:
    stack.sandbox.script("r-closed:", [("permanent", "CARD_CLOSED")])
    now = await stack.now()
    order = await stack.order(payments=[payment("p1", "card", 10000, now)])
    handle = await stack.start("r-closed", order)
    result = await stack.finish(handle)
    assert result.status is RefundStatus.COMPLETED
    # The fallback route is a recorded decision (a changed rule reaches new fallbacks only).
    assert "choose_fallback" in local_activities(await handle.fetch_history())
    assert [(p.key, p.route.value, p.status.value) for p in result.payouts] == [
        ("r-closed:1:1", "card", "failed_permanent"),
        ("r-closed:1:2", "balance", "settled"),
    ]
    assert "payout_fallback" in kinds(result)
    rows = stack.payouts("r-closed")
    assert [(r.payout_key, r.status) for r in rows] == [
        ("r-closed:1:1", "failed_permanent"),
        ("r-closed:1:2", "settled"),
    ]
    assert stack.tender("p1").refunded == 4000
    from refundflow.db.engine import session_scope
    from refundflow.db.repository import account_balance
    from refundflow.gateways.balance import wallet_account

    with session_scope(stack.engine, readonly=True) as s:
        wallet = account_balance(s, account=wallet_account("shop-1", "cust-1"), currency="CNY")
    assert wallet == -4000  # credit of 40.00 to the customer's wallet


async def test_permanent_failure_without_fallback_escalates_and_ops_switch(stack: Stack) -> None:
    stack.policy({"on_permanent_failure": ["escalate"]})
    stack.sandbox.script("r-esc:", [("permanent", "ORIGINAL_ROUTE_EXPIRED")])
    order = await stack.order()
    handle = await stack.start("r-esc", order)
    state = await wait_status(stack, handle, RefundStatus.NEEDS_ATTENTION)
    assert "ORIGINAL_ROUTE_EXPIRED" in state.escalation_reason
    await handle.execute_update(
        RefundWorkflow.ops_action,
        OpsAction(actor="ops", action="switch_destination", destination={"kind": "BALANCE"}),
    )
    result = await stack.finish(handle)
    assert result.status is RefundStatus.COMPLETED
    assert [p.route.value for p in result.latest_payouts()] == ["balance"]
    stack.assert_books_balance(result)


@pytest.fixture
async def dated_stack(fresh_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Stack]:
    # Its own server: the shared one's clock may already be past the date this test needs.
    async with open_stack(fresh_env, tmp_path) as opened:
        yield opened


async def test_delay_notice_on_the_right_business_day_across_national_day(
    dated_stack: Stack,
) -> None:
    """Payout sent Thursday 2027-09-30 by Alipay (1-3 CN business days). Oct 1-5 are the
    National Day holidays (the 2nd and 3rd a weekend), so the business days are Oct 6, 7, 8:
    expected by Friday Oct 8. The delay notice is due on the next business day, Monday Oct 11."""
    stack = dated_stack
    now = await stack.now()
    target = datetime(2027, 9, 30, 2, 0, tzinfo=UTC)
    assert now < target, "a fresh test server starts at today's date"
    await stack.env.sleep(target - now)
    stack.sandbox.default_settlement("never")
    order = await stack.order("o-nd")
    handle = await stack.start("r-nd", order)
    state = await wait_status(stack, handle, RefundStatus.AWAITING_FUNDS)
    assert state.expected_by == "2027-10-08"
    sent = next(r for r in stack.outbox("r-nd", "customer") if r.template == "payout_sent")
    assert sent.payload["expected_by"] == "2027-10-08"

    await stack.env.sleep(datetime(2027, 10, 11, 6, tzinfo=UTC) - await stack.now())
    delayed = [r for r in stack.outbox("r-nd", "customer") if r.template == "refund_delayed"]
    assert len(delayed) == 1
    assert delayed[0].created_at.date().isoformat() == "2027-10-11"

    # The provider settles; the customer says the money is not there: trace reference sent,
    # follow-up reopened rather than completed.
    stack.sandbox.settle("r-nd:1:1")
    await handle.execute_update(
        RefundWorkflow.receipt, ReceiptReport(received=False, note="nothing in my account")
    )
    state = await view(handle)
    assert state.status is RefundStatus.AWAITING_FUNDS
    assert state.not_received_reports == 1
    trace = [r for r in stack.outbox("r-nd", "customer") if r.template == "trace_reference"]
    assert len(trace) == 1 and trace[0].payload["trace_refs"][0]
    await handle.execute_update(RefundWorkflow.receipt, ReceiptReport(received=True))
    result = await stack.finish(handle)
    assert result.status is RefundStatus.COMPLETED
    assert stack.refund("r-nd").status == "COMPLETED"
