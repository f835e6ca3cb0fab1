"""Paths where a person or the provider steps in after the payout: ops marking a payout settled,
a customer declining the amount, a fallback to bank transfer, a reversal after settlement, and
ops retrying a payout whose outcome stayed unknown."""

from __future__ import annotations

from datetime import timedelta

from refundflow.db.engine import session_scope
from refundflow.db.repository import count_provider_refunds
from refundflow.domain.states import (
    CustomerConfirmation,
    OpsAction,
    PayoutEvent,
    PayoutStatus,
    RefundStatus,
)
from refundflow.workflows.refund import RefundWorkflow
from tests.workflows.conftest import ACCOUNT, MERCHANT, Stack, payment
from tests.workflows.test_refund_paths import decide, kinds, wait_status


async def test_ops_marks_a_payout_settled_during_follow_up(stack: Stack) -> None:
    stack.sandbox.default_settlement("never")
    handle = await stack.start("r-mark", await stack.order())
    await wait_status(stack, handle, RefundStatus.AWAITING_FUNDS)
    mark = OpsAction(actor="ops-1", action="mark_settled", reference="BANK-REF-77")
    await handle.execute_update(RefundWorkflow.ops_action, mark)
    result = await stack.finish(handle)
    assert result.status is RefundStatus.COMPLETED
    assert [(p.status.value, p.code) for p in result.payouts] == [("settled", "MARKED_SETTLED")]
    assert "marked_settled" in stack.audit_kinds("r-mark")
    assert [p.status for p in stack.payouts("r-mark")] == ["settled"]
    assert stack.tender("p1").refunded == 4000
    stack.assert_books_balance(result)


async def test_customer_declines_the_amount_and_ops_cancel(stack: Stack) -> None:
    order = await stack.order(
        lines=[{"line_id": "l1", "sku": "SOFA", "quantity": 1, "unit_price": 900000}],
        payments=[payment("p1", "card", 900000, await stack.now())],
    )
    handle = await stack.start("r-decline", order)
    await wait_status(stack, handle, RefundStatus.AWAITING_APPROVAL)
    await decide(handle, "alice")
    await decide(handle, "bob")
    await wait_status(stack, handle, RefundStatus.AWAITING_CUSTOMER)
    await handle.execute_update(
        RefundWorkflow.customer_confirmation,
        CustomerConfirmation(confirmed=False, note="expected the full price"),
    )
    state = await wait_status(stack, handle, RefundStatus.NEEDS_ATTENTION)
    assert "declined" in state.escalation_reason and not state.payouts
    await handle.execute_update(RefundWorkflow.ops_action, OpsAction(actor="ops", action="cancel"))
    result = await stack.finish(handle)
    assert result.status is RefundStatus.CANCELLED
    assert stack.tender("p1").reserved == 0 and stack.payouts("r-decline") == []
    stack.assert_books_balance(result)


async def test_permanent_failure_falls_back_to_the_customers_bank_account(stack: Stack) -> None:
    stack.policy({"on_permanent_failure": ["bank_transfer", "escalate"]})
    stack.sandbox.script("r-bank:1:1", [("permanent", "expired_or_canceled_card")])
    order = await stack.order(payments=[payment("p1", "card", 10000, await stack.now())])
    destination = {"kind": "ORIGINAL", "bank_account": ACCOUNT}
    result = await stack.finish(await stack.start("r-bank", order, destination=destination))
    assert result.status is RefundStatus.COMPLETED
    assert [(p.key, p.route.value, p.status.value) for p in result.payouts] == [
        ("r-bank:1:1", "card", "failed_permanent"),
        ("r-bank:1:2", "bank_transfer", "settled"),
    ]
    assert result.payouts[1].bank_account is not None
    assert result.payouts[1].bank_account.account_number == ACCOUNT["account_number"]
    # The refused card refund left nothing at the provider but its record of the refusal.
    assert [(r.route, r.status.value) for r in stack.sandbox.refunds("r-bank:")] == [
        ("card", "failed_permanent"),
        ("bank_transfer", "settled"),
    ]
    assert stack.tender("p1").refunded == 4000


async def test_a_reversal_after_settlement_escalates_instead_of_completing(stack: Stack) -> None:
    handle = await stack.start("r-rev", await stack.order())
    await wait_status(stack, handle, RefundStatus.AWAITING_FUNDS)
    # The provider settles, then the money comes back (a bank return).
    await handle.signal(
        RefundWorkflow.payout_event,
        PayoutEvent(payout_key="r-rev:1:1", status=PayoutStatus.SETTLED, event_id="e1"),
    )
    await handle.signal(
        RefundWorkflow.payout_event,
        PayoutEvent(
            payout_key="r-rev:1:1",
            status=PayoutStatus.FAILED_PERMANENT,
            code="AC04",
            event_id="e2",
        ),
    )
    state = await wait_status(stack, handle, RefundStatus.NEEDS_ATTENTION)
    assert "reversed" in state.escalation_reason and "AC04" in state.escalation_reason
    assert "payout_reversed" in kinds(state)
    # Ops paid the customer another way and say so.
    mark = OpsAction(actor="ops", action="mark_settled", reference="manual-transfer-9")
    await handle.execute_update(RefundWorkflow.ops_action, mark)
    result = await stack.finish(handle)
    assert result.status is RefundStatus.COMPLETED
    stack.assert_books_balance(result)


async def test_ops_retry_after_an_unknown_outcome_keeps_the_key(stack: Stack) -> None:
    # The provider is down for more than the day a payout may take: the outcome stays unknown
    # and the run escalates. About 150 attempts fit in that day (backoff capped at 10 min).
    stack.sandbox.script("r-unk:1:1", ["transient"] * 160)
    handle = await stack.start("r-unk", await stack.order())
    await wait_status(stack, handle, RefundStatus.PAYING)
    await stack.env.sleep(timedelta(hours=25))
    state = await wait_status(stack, handle, RefundStatus.NEEDS_ATTENTION)
    assert [p.status.value for p in state.payouts] == ["unknown"]
    assert stack.sandbox.count("r-unk:") == 0
    retry = OpsAction(actor="ops-1", action="retry_payout", note="provider is back")
    await handle.execute_update(RefundWorkflow.ops_action, retry)
    result = await stack.finish(handle)
    assert result.status is RefundStatus.COMPLETED
    # The same key all along: the provider holds exactly one refund.
    assert [p.key for p in result.payouts] == ["r-unk:1:1"]
    assert [r.payout_key for r in stack.sandbox.refunds("r-unk:")] == ["r-unk:1:1"]
    assert stack.tender("p1").refunded == 4000
    stack.assert_books_balance(result)


async def test_a_payment_past_the_providers_window_is_not_sent_and_falls_back(
    stack: Stack,
) -> None:
    # Paid 400 days ago by WeChat Pay (which refunds for a year), delivered only yesterday.
    paid = await stack.now() - timedelta(days=400)
    tender = {**payment("p1", "wechat", 10000, paid), "paid_at": paid.isoformat()}
    order = await stack.order(placed_at=paid.isoformat(), payments=[tender])
    result = await stack.finish(await stack.start("r-old", order))
    assert result.status is RefundStatus.COMPLETED
    assert [(p.route.value, p.status.value, p.code) for p in result.payouts] == [
        ("wechat", "failed_permanent", "REFUND_WINDOW_EXPIRED"),
        ("balance", "settled", "CREDITED"),
    ]
    assert stack.sandbox.count("r-old:") == 0  # the provider was never asked


async def test_refunds_on_one_payment_are_counted_for_the_providers_cap(stack: Stack) -> None:
    order = await stack.order(payments=[payment("p1", "wechat", 10000, await stack.now())])
    for n in (1, 2):
        assert (await stack.finish(await stack.start(f"r-cap-{n}", order))).status is (
            RefundStatus.COMPLETED
        )
    with session_scope(stack.engine, readonly=True) as s:
        counted = count_provider_refunds(
            s, merchant_id=MERCHANT, order_id=order.order_id, payment_id="p1", route="wechat"
        )
        other_route = count_provider_refunds(
            s, merchant_id=MERCHANT, order_id=order.order_id, payment_id="p1", route="alipay"
        )
    assert (counted, other_route) == (2, 0)


async def test_a_provider_event_naming_another_amount_is_ignored(stack: Stack) -> None:
    stack.sandbox.default_settlement("never")
    handle = await stack.start("r-odd", await stack.order())
    await wait_status(stack, handle, RefundStatus.AWAITING_FUNDS)
    odd = PayoutEvent(
        payout_key="r-odd:1:1",
        status=PayoutStatus.SETTLED,
        event_id="e-odd",
        amount=400,
        currency="CNY",
    )
    await handle.signal(RefundWorkflow.payout_event, odd)
    await stack.env.sleep(timedelta(minutes=1))
    state = await wait_status(stack, handle, RefundStatus.AWAITING_FUNDS)
    ignored = [t for t in state.timeline if t.kind == "message_ignored"]
    assert [t.data["code"] for t in ignored] == ["payout_event_mismatch"]
    assert [p.status.value for p in state.payouts] == ["accepted"]
