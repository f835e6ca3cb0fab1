"""Review rules (docs/architecture.md, "Review"): one test per reject reason, the approval
thresholds, the stage plan.

Default policy limits (CNY): auto-approve up to 200.00, one approver up to 5,000.00, customer
confirmation above 5,000.00, installments from 20,000.00 in tranches of at most 10,000.00.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from refundflow.domain.errors import CurrencyMismatch, FxRateMissing, InvalidInput, UnknownLine
from refundflow.domain.money import FxRate
from refundflow.domain.orders import OrderSnapshot, RefundRequest
from refundflow.domain.policy import DEFAULT_POLICY, Policy
from refundflow.domain.quote import PriorRefund
from refundflow.domain.review import ReasonCode, ReviewDecision, ReviewOutcome, review

# Delivered 2026-03-03 10:00 Beijing time; reviewed two days later.
DELIVERED_AT = "2026-03-03T10:00:00+08:00"
AS_OF = datetime(2026, 3, 5, 4, 0, tzinfo=UTC)


def make_order(
    *,
    unit_price: int = 10000,
    quantity: int = 1,
    currency: str = "CNY",
    status: str = "DELIVERED",
    captured: int | None = None,
    payment_currency: str | None = None,
    **overrides: Any,
) -> OrderSnapshot:
    """A one-line order paid by one Alipay tender that captured exactly the total."""
    data: dict[str, Any] = {
        "order_id": "o-1",
        "merchant_id": "m-1",
        "channel": "own_store",
        "customer_id": "c-1",
        "country": "CN",
        "currency": currency,
        "placed_at": "2026-03-01T10:00:00+08:00",
        "status": status,
        "delivered_at": DELIVERED_AT if status in ("DELIVERED", "COMPLETED") else None,
        "lines": [
            {"line_id": "l1", "sku": "MUG-01", "quantity": quantity, "unit_price": unit_price}
        ],
        "payments": [
            {
                "payment_id": "p1",
                "method": "alipay",
                "provider_txn_id": "txn-1",
                "captured": unit_price * quantity if captured is None else captured,
                "currency": payment_currency or currency,
                "paid_at": "2026-03-01T10:00:05+08:00",
            }
        ],
    }
    data.update(overrides)
    return OrderSnapshot.parse(data)


def make_request(**overrides: Any) -> RefundRequest:
    data: dict[str, Any] = {
        "order_id": "o-1",
        "items": [{"line_id": "l1", "quantity": 1}],
        "reason": "DAMAGED",
        "requested_by": "desk-1",
    }
    data.update(overrides)
    return RefundRequest.parse(data)


def run(
    order: OrderSnapshot | None = None,
    request: RefundRequest | None = None,
    policy: Policy = DEFAULT_POLICY,
    as_of: datetime = AS_OF,
    **kwargs: Any,
) -> ReviewDecision:
    return review(
        order=order or make_order(),
        request=request or make_request(),
        policy=policy,
        as_of=as_of,
        **kwargs,
    )


def prior(refund_id: str, amount: int, *, units: int = 0, **overrides: Any) -> PriorRefund:
    data: dict[str, Any] = {
        "refund_id": refund_id,
        "state": "completed",
        "reason": "DAMAGED",
        "items": [{"line_id": "l1", "quantity": units}] if units else [],
        "tender_amounts": {"p1": amount},
    }
    data.update(overrides)
    return PriorRefund.model_validate(data)


def assert_rejected(decision: ReviewDecision, *codes: ReasonCode) -> None:
    assert decision.outcome is ReviewOutcome.REJECT
    assert decision.approvers_required == 0
    assert decision.reasons == list(codes)
    assert decision.messages["en"].startswith("We're sorry, but we cannot accept")
    assert decision.messages["zh-CN"].startswith("很抱歉，我们无法受理您的退款申请。")


# ------------------------------------------------------------------------------ reject reasons


def test_outside_window() -> None:
    # CHANGED_MIND has a 7-day window: delivered 03-03 10:00 +08:00, closes 03-10 10:00 +08:00.
    request = make_request(reason="CHANGED_MIND")
    just_after = datetime(2026, 3, 10, 2, 0, 1, tzinfo=UTC)
    decision = run(request=request, as_of=just_after)
    assert_rejected(decision, ReasonCode.OUTSIDE_WINDOW)
    assert (
        "The refund window for this reason is 7 days and ended on 2026-03-10."
        in (decision.messages["en"])
    )
    assert "该原因的退款申请期限为 7 天，已于 2026-03-10 截止。" in decision.messages["zh-CN"]


def test_last_moment_of_the_window_is_inside() -> None:
    request = make_request(reason="CHANGED_MIND")
    decision = run(request=request, as_of=datetime(2026, 3, 10, 2, 0, tzinfo=UTC))
    assert decision.outcome is ReviewOutcome.AUTO_APPROVE


def test_window_runs_from_payment_when_not_delivered() -> None:
    # PAID order placed 03-01 10:00 +08:00; CHANGED_MIND closes 03-08 10:00 +08:00.
    order = make_order(status="PAID")
    decision = run(
        order, make_request(reason="CHANGED_MIND"), as_of=datetime(2026, 3, 9, tzinfo=UTC)
    )
    assert_rejected(decision, ReasonCode.OUTSIDE_WINDOW)
    assert "ended on 2026-03-08" in decision.messages["en"]
    assert "已于 2026-03-08 截止" in decision.messages["zh-CN"]


def test_naive_timestamps_are_read_as_utc() -> None:
    order = make_order(delivered_at="2026-03-03T10:00:00")
    naive_as_of = datetime(2026, 3, 18, 10, 0, 1)  # DAMAGED: 15 days, one second late
    decision = run(order, as_of=naive_as_of)
    assert_rejected(decision, ReasonCode.OUTSIDE_WINDOW)
    assert "15 days and ended on 2026-03-18" in decision.messages["en"]


def test_in_transit() -> None:
    decision = run(make_order(status="SHIPPED"))
    assert_rejected(decision, ReasonCode.IN_TRANSIT)
    assert "Your order is still on its way." in decision.messages["en"]
    assert "您的订单仍在运输途中，签收后即可申请退款。" in decision.messages["zh-CN"]


def test_shipped_order_is_refundable_when_not_received() -> None:
    # Policy lists SHIPPED as an exception for NOT_RECEIVED.
    decision = run(make_order(status="SHIPPED"), make_request(reason="NOT_RECEIVED"))
    assert decision.outcome is ReviewOutcome.AUTO_APPROVE


def test_return_not_received() -> None:
    decision = run(make_order(status="RETURN_IN_PROGRESS"))
    assert_rejected(decision, ReasonCode.RETURN_NOT_RECEIVED)
    assert "A return is already in progress for this order." in decision.messages["en"]
    assert "我们收到退回的商品后会尽快为您退款" in decision.messages["zh-CN"]


def test_status_not_refundable() -> None:
    decision = run(make_order(status="CANCELLED"))
    assert_rejected(decision, ReasonCode.STATUS_NOT_REFUNDABLE)
    assert (
        "Orders that are cancelled cannot be refunded for this reason." in (decision.messages["en"])
    )
    assert "订单当前状态为“已取消”" in decision.messages["zh-CN"]


def test_status_exception_lets_a_cancelled_order_refund_a_duplicate_payment() -> None:
    decision = run(make_order(status="CANCELLED"), make_request(reason="DUPLICATE_PAYMENT"))
    assert decision.outcome is ReviewOutcome.AUTO_APPROVE


def test_payment_inconsistent_captured_total() -> None:
    decision = run(make_order(captured=9000))  # order total 100.00, tender captured 90.00
    assert_rejected(decision, ReasonCode.PAYMENT_INCONSISTENT)
    assert "The payment records of this order do not match the order." in (decision.messages["en"])
    assert "该订单的支付记录与订单信息不一致" in decision.messages["zh-CN"]


def test_payment_inconsistent_currency_has_no_quote() -> None:
    decision = run(make_order(payment_currency="USD"))
    assert_rejected(decision, ReasonCode.PAYMENT_INCONSISTENT)
    assert decision.quote is None


def test_amount_above_remaining_units() -> None:
    # 2 mugs; one already refunded; the customer asks for both.
    order = make_order(unit_price=5000, quantity=2)
    request = make_request(items=[{"line_id": "l1", "quantity": 2}])
    decision = run(order, request, prior_refunds=[prior("r-0", 5000, units=1)])
    assert_rejected(decision, ReasonCode.AMOUNT_ABOVE_REMAINING)
    assert (
        "You asked to refund 2 units of item MUG-01, but only 1 unit can still be refunded."
        in (decision.messages["en"])
    )
    assert "您申请退款的商品 MUG-01 为 2 件，但目前仅剩 1 件可退。" in decision.messages["zh-CN"]


def test_amount_above_remaining_goodwill() -> None:
    # 100.00 paid, 60.00 refunded already: a 50.00 goodwill refund is 10.00 too much.
    request = make_request(items=[], goodwill_amount=5000, reason="OTHER")
    decision = run(request=request, prior_refunds=[prior("r-0", 6000)])
    assert_rejected(decision, ReasonCode.AMOUNT_ABOVE_REMAINING)
    assert (
        "You asked for CN¥50.00, but only CN¥40.00 can still be refunded on this order."
        in (decision.messages["en"])
    )
    assert "您申请退款 ¥50.00，但该订单目前仅剩 ¥40.00 可退。" in decision.messages["zh-CN"]
    assert decision.quote is not None and decision.quote.capped


def test_amount_above_remaining_nothing_left() -> None:
    request = make_request(items=[], goodwill_amount=100, reason="OTHER")
    decision = run(request=request, prior_refunds=[prior("r-0", 10000)])
    assert_rejected(decision, ReasonCode.AMOUNT_ABOVE_REMAINING)
    assert "Everything paid for this order has already been refunded" in decision.messages["en"]
    assert "该订单的已付款项已全部退款或正在退款中" in decision.messages["zh-CN"]


def test_goodwill_within_remaining_is_accepted() -> None:
    request = make_request(items=[], goodwill_amount=4000, reason="OTHER")
    decision = run(request=request, prior_refunds=[prior("r-0", 6000)])
    assert decision.outcome is ReviewOutcome.AUTO_APPROVE
    assert decision.quote is not None and decision.quote.total == 4000


def test_duplicate_request() -> None:
    order = make_order(unit_price=5000, quantity=2)
    request = make_request()
    in_flight = prior(
        "r-0", 5000, units=1, state="active", request_fingerprint=request.fingerprint()
    )
    decision = run(order, request, prior_refunds=[in_flight])
    assert_rejected(decision, ReasonCode.DUPLICATE_REQUEST)
    assert (
        "An identical refund request for this order is already being processed"
        in (decision.messages["en"])
    )
    assert "该订单已有相同的退款申请正在处理中，无需重复提交。" in decision.messages["zh-CN"]


def test_same_request_after_a_completed_refund_is_no_duplicate() -> None:
    order = make_order(unit_price=5000, quantity=2)
    request = make_request()
    done = prior("r-0", 5000, units=1, request_fingerprint=request.fingerprint())
    assert run(order, request, prior_refunds=[done]).outcome is ReviewOutcome.AUTO_APPROVE


def test_too_many_refunds() -> None:
    decision = run(recent_customer_refunds=10)
    assert_rejected(decision, ReasonCode.TOO_MANY_REFUNDS)
    assert (
        "This account has reached the limit of 10 refunds in 30 days." in (decision.messages["en"])
    )
    assert "该账户近 30 天的退款次数已达上限（10 次）" in decision.messages["zh-CN"]
    assert run(recent_customer_refunds=9).outcome is ReviewOutcome.AUTO_APPROVE


def test_presale_not_eligible() -> None:
    decision = run(make_order(status="PAID"), make_request(reason="PRESALE_CANCEL"))
    assert_rejected(decision, ReasonCode.PRESALE_NOT_ELIGIBLE)
    assert "This is not a presale order" in decision.messages["en"]
    assert "该订单不是预售订单，不适用预售取消退款。" in decision.messages["zh-CN"]


def test_all_reasons_are_collected_in_one_decision() -> None:
    order = make_order(status="RETURN_IN_PROGRESS", captured=9000)
    request = make_request(reason="CHANGED_MIND")
    in_flight = prior(
        "r-0", 9000, units=1, state="active", request_fingerprint=request.fingerprint()
    )
    decision = run(
        order,
        request,
        as_of=datetime(2026, 4, 1, tzinfo=UTC),
        prior_refunds=[in_flight],
        recent_customer_refunds=12,
    )
    assert_rejected(
        decision,
        ReasonCode.OUTSIDE_WINDOW,
        ReasonCode.RETURN_NOT_RECEIVED,
        ReasonCode.PAYMENT_INCONSISTENT,
        ReasonCode.DUPLICATE_REQUEST,
        ReasonCode.TOO_MANY_REFUNDS,
        ReasonCode.AMOUNT_ABOVE_REMAINING,
    )
    en, zh = decision.messages["en"], decision.messages["zh-CN"]
    for part in (
        "ended on 2026-03-08",  # not delivered: the window runs from payment
        "A return is already in progress",
        "payment records",
        "identical refund request",
        "limit of 10 refunds",
        "Item MUG-01 has already been refunded in full",
    ):
        assert part in en
    assert "。该原因的退款申请期限为 7 天，已于 2026-03-08 截止。" in zh
    assert "商品 MUG-01 已全部退款或正在退款中。" in zh


# ---------------------------------------------------------------------------- bad input raises


def test_unknown_line_raises_even_when_payments_are_inconsistent() -> None:
    request = make_request(items=[{"line_id": "nope", "quantity": 1}])
    with pytest.raises(UnknownLine):
        run(make_order(payment_currency="USD"), request)


def test_request_currency_mismatch_raises() -> None:
    with pytest.raises(CurrencyMismatch):
        run(request=make_request(currency="USD"))


def test_request_for_another_order_raises() -> None:
    with pytest.raises(InvalidInput) as info:
        run(request=make_request(order_id="o-2"))
    assert info.value.code == "order_mismatch"


def test_missing_fx_rate_raises() -> None:
    with pytest.raises(FxRateMissing):
        run(request=bank_transfer_request("USD"))


# ------------------------------------------------------------------------- approval thresholds


@pytest.mark.parametrize(
    ("total", "outcome", "approvers"),
    [
        (20000, ReviewOutcome.AUTO_APPROVE, 0),  # exactly 200.00
        (20001, ReviewOutcome.NEEDS_APPROVAL, 1),  # 200.01
        (500000, ReviewOutcome.NEEDS_APPROVAL, 1),  # exactly 5,000.00
        (500001, ReviewOutcome.NEEDS_APPROVAL, 2),  # 5,000.01: large
    ],
)
def test_cny_thresholds(total: int, outcome: ReviewOutcome, approvers: int) -> None:
    decision = run(make_order(unit_price=total))
    assert decision.outcome is outcome
    assert decision.approvers_required == approvers
    assert decision.reasons == []
    assert ("large" in decision.tags) is (approvers == 2)


def test_auto_approve_message() -> None:
    decision = run(make_order(unit_price=20000))
    assert decision.messages["en"] == (
        "Good news: your refund of CN¥200.00 has been approved and will be on its way shortly."
    )
    assert decision.messages["zh-CN"] == "您的 ¥200.00 退款申请已审核通过，我们将尽快为您退款。"


def test_needs_approval_message() -> None:
    decision = run(make_order(unit_price=500001))
    assert (
        "Your refund request for CN¥5,000.01 has been passed to our team for approval."
        in (decision.messages["en"])
    )
    assert "您的 ¥5,000.01 退款申请已提交人工审核" in decision.messages["zh-CN"]


JPY_POLICY = Policy(
    limits_by_currency={"JPY": {"auto_approve_max": "5000", "single_approver_max": "100000"}}
)


@pytest.mark.parametrize(
    ("total", "outcome", "approvers"),
    [
        (5000, ReviewOutcome.AUTO_APPROVE, 0),
        (5001, ReviewOutcome.NEEDS_APPROVAL, 1),
        (100000, ReviewOutcome.NEEDS_APPROVAL, 1),
        (100001, ReviewOutcome.NEEDS_APPROVAL, 2),
    ],
)
def test_jpy_limits_have_no_minor_digits(
    total: int, outcome: ReviewOutcome, approvers: int
) -> None:
    decision = run(make_order(unit_price=total, currency="JPY"), policy=JPY_POLICY)
    assert (decision.outcome, decision.approvers_required) == (outcome, approvers)


def test_jpy_amount_in_messages() -> None:
    decision = run(make_order(unit_price=5000, currency="JPY"), policy=JPY_POLICY)
    assert "your refund of ¥5,000 has been approved" in decision.messages["en"]
    assert "您的 JP¥5,000 退款申请已审核通过" in decision.messages["zh-CN"]


def test_jpy_default_limits_read_as_yen() -> None:
    # Without a JPY override, "200" means 200 yen, not 200.00.
    assert run(make_order(unit_price=200, currency="JPY")).outcome is ReviewOutcome.AUTO_APPROVE
    assert run(make_order(unit_price=201, currency="JPY")).outcome is ReviewOutcome.NEEDS_APPROVAL


@pytest.mark.parametrize(
    ("total", "outcome", "approvers"),
    [
        (200000, ReviewOutcome.AUTO_APPROVE, 0),  # 200.000 KWD
        (200001, ReviewOutcome.NEEDS_APPROVAL, 1),  # 200.001 KWD
        (5000000, ReviewOutcome.NEEDS_APPROVAL, 1),
        (5000001, ReviewOutcome.NEEDS_APPROVAL, 2),
    ],
)
def test_kwd_limits_have_three_minor_digits(
    total: int, outcome: ReviewOutcome, approvers: int
) -> None:
    decision = run(make_order(unit_price=total, currency="KWD"))
    assert (decision.outcome, decision.approvers_required) == (outcome, approvers)


def test_kwd_amount_in_messages() -> None:
    decision = run(make_order(unit_price=200001, currency="KWD"))
    assert "KWD200.001" in decision.messages["en"]
    assert "KWD200.001" in decision.messages["zh-CN"]


# ----------------------------------------------------------------------------------- the plan


def test_return_required_for_delivered_goods() -> None:
    decision = run()  # DAMAGED, delivered, with items
    assert decision.return_required


@pytest.mark.parametrize(
    ("order", "request_"),
    [
        (make_order(), make_request(reason="NOT_RECEIVED")),  # reason needs no return
        (make_order(), make_request(items=[], goodwill_amount=1000)),  # nothing to send back
        (make_order(status="PAID"), make_request()),  # never left the warehouse
    ],
)
def test_return_not_required(order: OrderSnapshot, request_: RefundRequest) -> None:
    decision = run(order, request_)
    assert decision.outcome is ReviewOutcome.AUTO_APPROVE
    assert not decision.return_required


def presale_order(production_starts_on: str | None, status: str = "PAID") -> OrderSnapshot:
    presale: dict[str, Any] = {"supplier_ref": "factory-9", "expected_ship_date": "2026-04-30"}
    if production_starts_on is not None:
        presale["production_starts_on"] = production_starts_on
    return make_order(status=status, presale=presale)


def test_presale_before_production_is_free_and_automatic() -> None:
    decision = run(presale_order("2026-03-06"), make_request(reason="PRESALE_CANCEL"))
    assert decision.outcome is ReviewOutcome.AUTO_APPROVE
    assert not decision.supplier_check
    assert decision.tags == ["presale"]


@pytest.mark.parametrize("starts_on", ["2026-03-05", "2026-02-20", None])
def test_presale_in_production_asks_supplier_and_a_person(starts_on: str | None) -> None:
    # Started on the review day, earlier, or never told: the supplier must be asked.
    decision = run(presale_order(starts_on), make_request(reason="PRESALE_CANCEL"))
    assert decision.supplier_check
    assert decision.outcome is ReviewOutcome.NEEDS_APPROVAL
    assert decision.approvers_required == 1
    assert "presale" in decision.tags


def test_presale_before_production_without_free_cancel_asks_supplier() -> None:
    policy = Policy(presale={"free_cancel_before_production": False})
    decision = run(presale_order("2026-03-06"), make_request(reason="PRESALE_CANCEL"), policy)
    assert decision.supplier_check
    assert decision.outcome is ReviewOutcome.AUTO_APPROVE


def test_delivered_presale_order_needs_no_supplier() -> None:
    decision = run(presale_order("2026-02-20", status="DELIVERED"))
    assert not decision.supplier_check
    assert decision.outcome is ReviewOutcome.AUTO_APPROVE
    assert decision.tags == ["presale"]


def test_customer_confirmation_above_its_limit() -> None:
    assert not run(make_order(unit_price=500000)).customer_confirmation
    assert run(make_order(unit_price=500001)).customer_confirmation
    off = Policy(customer_confirmation={"enabled": False})
    assert not run(make_order(unit_price=500001), policy=off).customer_confirmation


def test_installments_from_the_threshold() -> None:
    decision = run(make_order(unit_price=2000000))  # exactly 20,000.00
    assert decision.installments
    assert decision.quote is not None and decision.quote.installments == 2
    assert decision.tags == ["large", "installments"]
    assert decision.approvers_required == 2
    assert decision.customer_confirmation
    assert not run(make_order(unit_price=1999999)).installments


def bank_transfer_request(currency: str) -> RefundRequest:
    account = {
        "holder_name": "Li Lei",
        "account_number": "12345678",
        "bank_name": "Bank of Example",
        "bank_code": "EXAMPLEXX",
        "country": "US",
        "currency": currency,
    }
    return make_request(destination={"kind": "BANK_TRANSFER", "bank_account": account})


def test_international_payout_is_tagged() -> None:
    rate = FxRate(
        base="CNY",
        quote="USD",
        rate=Decimal("0.14"),
        source="manual",
        as_of=datetime(2026, 3, 5, tzinfo=UTC),
    )
    decision = run(request=bank_transfer_request("USD"), fx_rate=rate)
    assert decision.outcome is ReviewOutcome.AUTO_APPROVE
    assert decision.tags == ["international"]
    assert decision.quote is not None and decision.quote.payout_currency == "USD"


def test_rejection_carries_no_plan() -> None:
    decision = run(make_order(unit_price=2000000, status="SHIPPED"))
    assert decision.outcome is ReviewOutcome.REJECT
    assert decision.quote is not None and decision.quote.total == 2000000
    assert not (decision.return_required or decision.installments or decision.tags)
