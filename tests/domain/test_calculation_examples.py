"""Worked examples. Every expected number is computed by hand in the comments."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from refundflow.domain.calculation import compute_quote
from refundflow.domain.errors import (
    CurrencyMismatch,
    DomainError,
    FxRateMissing,
    OverRefund,
    UnknownLine,
)
from refundflow.domain.money import FxRate
from refundflow.domain.policy import DEFAULT_POLICY, Policy
from refundflow.domain.quote import Deduction, PriorRefund
from tests.domain.factories import order, payment, request

# Three lines, a 30.00 coupon over all of them, 10.00 shipping, paid 200.00 by Alipay and the
# rest (128.99) from the store balance.
#   l1: 2 x 100.00               net 200.00
#   l2: 3 x  33.33, -1.00 line   net  98.99
#   l3: 1 x  50.00               net  50.00          items 348.99
# Coupon 3000 by net [20000, 9899, 5000] / 34899:
#   floors 1719 (rem 8619), 850 (rem 32850), 429 (rem 28329): 2998, two units short -> l2, l3
#   = [1719, 851, 430]; nets after coupon 18281, 9048, 4570 = 31899
# Shipping 1000 by [18281, 9048, 4570] / 31899: floors 573, 283, 143 (rems 2873, 20583, 8443)
#   = [573, 284, 143]. Order total 31899 + 1000 = 32899 = 20000 + 12899.
THREE_LINES = {
    "lines": [
        {"line_id": "l1", "sku": "A", "quantity": 2, "unit_price": 10000},
        {"line_id": "l2", "sku": "B", "quantity": 3, "unit_price": 3333, "line_discount": 100},
        {"line_id": "l3", "sku": "C", "quantity": 1, "unit_price": 5000},
    ],
    "discounts": [{"code": "SPRING30", "amount": 3000}],
    "shipping_fee": 1000,
    "payments": [payment("p-ali", "alipay", 20000), payment("p-bal", "balance", 12899)],
}


def test_three_lines_coupon_partial_quantity_restocking_two_tenders() -> None:
    o = order(**THREE_LINES)
    q = compute_quote(
        order=o,
        request=request(
            items=[{"line_id": "l2", "quantity": 2}, {"line_id": "l3", "quantity": 1}],
            reason="CHANGED_MIND",
        ),
        policy=DEFAULT_POLICY,
    )
    l2, l3 = q.lines
    # l2: 2 of 3 units of 9048 -> 3016 each = 6032; gross 6666; line discount 100 -> 33,33,34
    # spread as 34+33 over the first two units = 67; coupon share 6666 - 6032 - 67 = 567.
    # Restocking 10% (CHANGED_MIND default) of 6032 = 603.2 -> 603.
    assert (l2.gross, l2.net, l2.line_discount, l2.order_discount) == (6666, 6032, 67, 567)
    assert (l2.restocking_fee, l2.shipping, l2.amount) == (603, 0, 5429)
    # l3: the whole line, 4570 after its 430 coupon share; restocking 457.
    assert (l3.net, l3.order_discount, l3.restocking_fee, l3.amount) == (4570, 430, 457, 4113)
    # Shipping is kept for CHANGED_MIND under merchant_fault_only.
    assert q.shipping == 0
    assert (q.items_amount, q.restocking_fee, q.total) == (10602, 1060, 9542)
    # Tenders by what remains, 9542 over [20000, 12899] / 32899:
    #   floors 5800 (rem 25800), 3741 (rem 7099): one unit short -> Alipay = [5801, 3741].
    assert [(t.payment_id, t.amount) for t in q.tenders] == [("p-ali", 5801), ("p-bal", 3741)]
    assert [(p.seq, p.route.value, p.amount) for p in q.payouts] == [
        (1, "alipay", 5801),
        (2, "balance", 3741),
    ]
    assert not q.capped and q.installments == 1 and q.fx is None

    # Then one unit of l1, NOT_AS_DESCRIBED: merchant fault, so its shipping share comes back
    # and no restocking fee. l1 net 18281 over 2 units = 9141 + 9140 -> first unit 9141;
    # shipping 573 -> 287 + 286 -> 287. Amount 9428.
    prior = PriorRefund(
        refund_id="r-1",
        state="completed",
        reason=q.reason,
        items=[{"line_id": "l2", "quantity": 2}, {"line_id": "l3", "quantity": 1}],
        tender_amounts={"p-ali": 5801, "p-bal": 3741},
    )
    q2 = compute_quote(
        order=o,
        request=request(items=[{"line_id": "l1", "quantity": 1}], reason="NOT_AS_DESCRIBED"),
        policy=DEFAULT_POLICY,
        prior_refunds=[prior],
    )
    assert (q2.lines[0].net, q2.lines[0].shipping, q2.total) == (9141, 287, 9428)
    # Remaining 14199 / 9158 (23357): floors 5731 (rem 9205), 3696 (rem 14152) -> balance +1.
    assert q2.remaining_before == 23357
    assert [t.amount for t in q2.tenders] == [5731, 3697]


def test_international_order_refunded_by_bank_transfer_in_another_currency() -> None:
    o = order(
        country="US",
        currency="USD",
        lines=[{"line_id": "l1", "sku": "A", "quantity": 1, "unit_price": 12000}],
        payments=[payment("p-card", "card", 12000, "USD")],
    )
    req = request(
        reason="DAMAGED",
        destination={
            "kind": "BANK_TRANSFER",
            "bank_account": {
                "holder_name": "Li Lei",
                "account_number": "6222020200112233",
                "bank_name": "ICBC",
                "bank_code": "ICBKCNBJ",
                "country": "CN",
                "currency": "CNY",
            },
        },
    )
    rate = FxRate(
        base="USD",
        quote="CNY",
        rate=Decimal("7.1234"),
        source="manual",
        as_of=datetime(2026, 3, 5, tzinfo=UTC),
    )
    q = compute_quote(order=o, request=req, policy=DEFAULT_POLICY, fx_rate=rate)
    # 120.00 USD x 7.1234 = 854.808 CNY = 85480.8 fen -> 85481 (half-even, .8 rounds up).
    # Cross-border fee 1.5% of 85481 = 1282.215 -> 1282, borne by the merchant by default.
    assert q.total == 12000 and q.currency == "USD"
    assert q.fx is not None
    assert (q.fx.converted_total, q.fx.cross_border_fee) == (85481, 1282)
    assert (q.payout_currency, q.payout_total) == ("CNY", 85481)
    assert [(p.route.value, p.payout_amount) for p in q.payouts] == [("bank_transfer", 85481)]

    customer_pays = Policy.parse({"international": {"cross_border_fee_bearer": "customer"}})
    q_c = compute_quote(order=o, request=req, policy=customer_pays, fx_rate=rate)
    assert q_c.payout_total == 85481 - 1282 == 84199

    with pytest.raises(FxRateMissing):
        compute_quote(order=o, request=req, policy=DEFAULT_POLICY)
    ecb_policy = Policy.parse({"international": {"fx_rate_source": "ecb"}})
    with pytest.raises(DomainError) as exc:
        compute_quote(order=o, request=req, policy=ecb_policy, fx_rate=rate)
    assert exc.value.code == "fx_source_mismatch"


def test_large_refund_split_into_installments() -> None:
    # 25,000.01 CNY is above the 20,000 threshold; tranches of at most 10,000 -> 3 tranches,
    # 2500001 / 3 = 833333 rem 2 -> [833334, 833334, 833333], 7 days apart.
    o = order(
        lines=[{"line_id": "l1", "sku": "A", "quantity": 1, "unit_price": 2500001}],
        payments=[payment("p1", "wechat", 2500001)],
    )
    q = compute_quote(order=o, request=request(), policy=DEFAULT_POLICY)
    assert q.installments == 3
    assert [(p.seq, p.amount, p.due_after_days) for p in q.payouts] == [
        (1, 833334, 0),
        (2, 833334, 7),
        (3, 833333, 14),
    ]
    fixed = Policy.parse({"installments": {"count": 2, "interval_days": 30}})
    q2 = compute_quote(order=o, request=request(), policy=fixed)
    assert [(p.amount, p.due_after_days) for p in q2.payouts] == [(1250001, 0), (1250000, 30)]


def test_zero_and_three_decimal_currencies() -> None:
    # JPY: 3 x 1000 yen with a 100 yen coupon -> 2900; one unit = 967 (967, 967, 966).
    jpy = order(
        currency="JPY",
        country="JP",
        lines=[{"line_id": "l1", "sku": "A", "quantity": 3, "unit_price": 1000}],
        discounts=[{"code": "C", "amount": 100}],
        payments=[payment("p1", "card", 2900, "JPY")],
    )
    q = compute_quote(order=jpy, request=request(), policy=DEFAULT_POLICY)
    assert q.total == 967
    # KWD (3 decimals): 1.000 KWD = 1000 fils x 3 units, refund 2 units = 2000 fils.
    kwd = order(
        currency="KWD",
        country="KW",
        lines=[{"line_id": "l1", "sku": "A", "quantity": 3, "unit_price": 1000}],
        payments=[payment("p1", "card", 3000, "KWD")],
    )
    q = compute_quote(
        order=kwd, request=request(items=[{"line_id": "l1", "quantity": 2}]), policy=DEFAULT_POLICY
    )
    assert q.total == 2000
    # KWD limits: auto-approve at 200 KWD = 200000 fils.
    assert DEFAULT_POLICY.limit("auto_approve_max", "KWD") == 200_000
    assert DEFAULT_POLICY.limit("auto_approve_max", "JPY") == 200


def test_goodwill_is_capped_by_what_remains_and_deductions_reduce() -> None:
    o = order()  # 100.00 captured on one tender
    prior = PriorRefund(
        refund_id="r-1", state="active", reason="OTHER", tender_amounts={"p1": 7000}
    )
    q = compute_quote(
        order=o,
        request=request(items=[], goodwill_amount=5000, reason="OTHER"),
        policy=DEFAULT_POLICY,
        prior_refunds=[prior],
    )
    assert (q.requested_total, q.remaining_before, q.total, q.capped) == (5000, 3000, 3000, True)
    q = compute_quote(
        order=o,
        request=request(),
        policy=DEFAULT_POLICY,
        deductions=[Deduction(kind="inspection_damage", amount=2500, line_id="l1", note="scratch")],
    )
    assert (q.total, q.deductions_total) == (7500, 2500)


def test_bad_input_raises_typed_errors() -> None:
    o = order()
    with pytest.raises(UnknownLine) as unknown:
        compute_quote(
            order=o,
            request=request(items=[{"line_id": "nope", "quantity": 1}]),
            policy=DEFAULT_POLICY,
        )
    assert unknown.value.code == "unknown_line"
    with pytest.raises(CurrencyMismatch) as wrong:
        compute_quote(order=o, request=request(currency="USD"), policy=DEFAULT_POLICY)
    assert wrong.value.code == "currency_mismatch"
    with pytest.raises(OverRefund) as over:
        compute_quote(
            order=o,
            request=request(items=[{"line_id": "l1", "quantity": 2}]),
            policy=DEFAULT_POLICY,
        )
    assert over.value.code == "quantity_exceeds_remaining"
    spent = PriorRefund(
        refund_id="r", state="completed", reason="OTHER", tender_amounts={"p1": 10000}
    )
    with pytest.raises(OverRefund) as nothing:
        compute_quote(
            order=o,
            request=request(items=[], goodwill_amount=1, reason="OTHER"),
            policy=DEFAULT_POLICY,
            prior_refunds=[spent],
        )
    assert nothing.value.code == "nothing_refundable"
