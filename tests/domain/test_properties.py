"""Hypothesis properties of money splits and the quote."""

from __future__ import annotations

from typing import Any

from hypothesis import assume, given
from hypothesis import strategies as st

from refundflow.domain.calculation import compute_quote
from refundflow.domain.errors import InvalidInput, OverRefund
from refundflow.domain.money import allocate, cumulative_share
from refundflow.domain.orders import OrderSnapshot, RefundItem, RefundReason, RefundRequest
from refundflow.domain.policy import Policy
from refundflow.domain.quote import PriorRefund, Quote

CURRENCIES = ["CNY", "JPY", "KWD", "USD"]
METHODS = ["alipay", "wechat", "card", "balance", "paypal"]


@given(
    total=st.integers(min_value=-(10**12), max_value=10**12),
    weights=st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=12),
)
def test_allocation_sums_exactly_and_stays_within_one_unit(total: int, weights: list[int]) -> None:
    parts = allocate(total, weights)
    assert sum(parts) == total
    base = weights if sum(weights) else [1] * len(weights)
    for part, w in zip(parts, base, strict=True):
        exact_floor = abs(total) * w // sum(base)
        assert exact_floor <= abs(part) <= exact_floor + 1


@given(
    total=st.integers(min_value=0, max_value=10**9),
    parts=st.integers(min_value=1, max_value=50),
    data=st.data(),
)
def test_cumulative_share_matches_allocation(total: int, parts: int, data: st.DataObject) -> None:
    upto = data.draw(st.integers(min_value=0, max_value=parts))
    assert cumulative_share(total, parts, upto) == sum(allocate(total, [1] * parts)[:upto])


@st.composite
def orders(draw: st.DrawFn) -> OrderSnapshot:
    currency = draw(st.sampled_from(CURRENCIES))
    n_lines = draw(st.integers(min_value=1, max_value=4))
    lines: list[dict[str, Any]] = []
    for i in range(n_lines):
        qty = draw(st.integers(min_value=1, max_value=5))
        price = draw(st.integers(min_value=0, max_value=200_000))
        discount = draw(st.integers(min_value=0, max_value=qty * price))
        lines.append(
            {
                "line_id": f"l{i}",
                "sku": f"S{i}",
                "quantity": qty,
                "unit_price": price,
                "line_discount": discount,
            }
        )
    items_net = sum(ln["quantity"] * ln["unit_price"] - ln["line_discount"] for ln in lines)
    discounts: list[dict[str, Any]] = []
    budget = items_net
    for j in range(draw(st.integers(min_value=0, max_value=2))):
        amount = draw(st.integers(min_value=0, max_value=budget))
        budget -= amount
        covered = draw(
            st.none() | st.lists(st.sampled_from([ln["line_id"] for ln in lines]), min_size=1)
        )
        discounts.append({"code": f"C{j}", "amount": amount, "line_ids": covered})
    # Keep each coupon within half of what its lines are worth, so the order is a real one
    # (the model refuses a coupon larger than its lines; rounding edge cases are filtered).
    for disc in discounts:
        covered_net = sum(
            ln["quantity"] * ln["unit_price"] - ln["line_discount"]
            for ln in lines
            if disc["line_ids"] is None or ln["line_id"] in disc["line_ids"]
        )
        disc["amount"] = min(disc["amount"], covered_net // 2)
    shipping = draw(st.integers(min_value=0, max_value=5_000))
    fees = [{"kind": "payment_fee", "amount": draw(st.integers(min_value=0, max_value=1_000))}]
    total = items_net - sum(d["amount"] for d in discounts) + shipping + fees[0]["amount"]
    n_tenders = draw(st.integers(min_value=1, max_value=3))
    weights = draw(st.lists(st.integers(1, 100), min_size=n_tenders, max_size=n_tenders))
    captured = allocate(total, weights)
    payments = [
        {
            "payment_id": f"p{k}",
            "method": draw(st.sampled_from(METHODS)),
            "provider_txn_id": f"t{k}",
            "captured": amount,
            "currency": currency,
            "paid_at": "2026-01-01T00:00:00Z",
        }
        for k, amount in enumerate(captured)
    ]
    try:
        return OrderSnapshot.parse(
            {
                "order_id": "o",
                "merchant_id": "m",
                "channel": "own_store",
                "customer_id": "c",
                "country": "CN",
                "currency": currency,
                "placed_at": "2026-01-01T00:00:00Z",
                "status": "DELIVERED",
                "lines": lines,
                "discounts": discounts,
                "shipping_fee": shipping,
                "fees": fees,
                "payments": payments,
            }
        )
    except InvalidInput:
        assume(False)
        raise


policies = st.builds(
    lambda ship, fee, bps: Policy.parse(
        {
            "shipping_refund": ship,
            "fee_refund": fee,
            "restocking_fee_bps": {"CHANGED_MIND": bps},
            "installments": {"enabled": False},
        }
    ),
    st.sampled_from(["always", "merchant_fault_only", "never"]),
    st.sampled_from(["always", "merchant_fault_only", "never"]),
    st.integers(min_value=0, max_value=3000),
)
reasons = st.sampled_from([RefundReason.CHANGED_MIND, RefundReason.DAMAGED, RefundReason.OTHER])


def _req(order: OrderSnapshot, items: list[tuple[str, int]], reason: RefundReason) -> RefundRequest:
    return RefundRequest(
        order_id=order.order_id,
        items=[RefundItem(line_id=lid, quantity=q) for lid, q in items],
        reason=reason,
        requested_by="u",
    )


def _as_prior(quote: Quote, request: RefundRequest, n: int) -> PriorRefund:
    return PriorRefund(
        refund_id=f"r{n}",
        state="completed",
        reason=request.reason,
        items=request.items,
        tender_amounts={t.payment_id: t.amount for t in quote.tenders},
    )


@given(order=orders(), policy=policies, reason=reasons, data=st.data())
def test_refunding_unit_by_unit_equals_refunding_all_at_once(
    order: OrderSnapshot, policy: Policy, reason: RefundReason, data: st.DataObject
) -> None:
    all_items = [(ln.line_id, ln.quantity) for ln in order.lines]
    at_once = compute_quote(order=order, request=_req(order, all_items, reason), policy=policy)

    units = [ln.line_id for ln in order.lines for _ in range(ln.quantity)]
    units = data.draw(st.permutations(units))
    priors: list[PriorRefund] = []
    totals, nets, shipping = 0, 0, 0
    for n, line_id in enumerate(units):
        req = _req(order, [(line_id, 1)], reason)
        try:
            q = compute_quote(order=order, request=req, policy=policy, prior_refunds=priors)
        except OverRefund:
            # Only possible once every tender is used up, i.e. nothing at all is left.
            assert totals == order.captured_total
            break
        priors.append(_as_prior(q, req, n))
        totals += q.total
        nets += q.items_amount
        shipping += q.shipping
    assert totals == at_once.total
    assert nets == at_once.items_amount
    assert shipping == at_once.shipping
    assert at_once.total <= order.captured_total


@given(order=orders(), reason=reasons)
def test_full_refund_with_everything_refundable_returns_exactly_what_was_paid(
    order: OrderSnapshot, reason: RefundReason
) -> None:
    policy = Policy.parse(
        {
            "shipping_refund": "always",
            "fee_refund": "always",
            "restocking_fee_bps": {},
            "installments": {"enabled": False},
        }
    )
    items = [(ln.line_id, ln.quantity) for ln in order.lines]
    q = compute_quote(order=order, request=_req(order, items, reason), policy=policy)
    assert q.total == order.total == order.captured_total
    assert [t.amount for t in q.tenders] == [p.captured for p in order.payments]
    assert sum(p.amount for p in q.payouts) == q.total


@given(order=orders(), policy=policies, data=st.data())
def test_no_sequence_of_refunds_exceeds_what_was_captured(
    order: OrderSnapshot, policy: Policy, data: st.DataObject
) -> None:
    priors: list[PriorRefund] = []
    remaining_units = {ln.line_id: ln.quantity for ln in order.lines}
    for n in range(data.draw(st.integers(min_value=1, max_value=6))):
        reason = data.draw(reasons)
        if data.draw(st.booleans()) or not any(remaining_units.values()):
            goodwill = data.draw(st.integers(min_value=1, max_value=order.captured_total + 10_000))
            req = RefundRequest(
                order_id=order.order_id, goodwill_amount=goodwill, reason=reason, requested_by="u"
            )
        else:
            line_id = data.draw(st.sampled_from([k for k, v in remaining_units.items() if v]))
            qty = data.draw(st.integers(min_value=1, max_value=remaining_units[line_id]))
            remaining_units[line_id] -= qty
            req = _req(order, [(line_id, qty)], reason)
        try:
            q = compute_quote(order=order, request=req, policy=policy, prior_refunds=priors)
        except OverRefund as exc:
            assert exc.code == "nothing_refundable"
            continue
        for tender in q.tenders:
            assert 0 <= tender.amount <= tender.captured - tender.refunded_before
        assert q.total <= q.remaining_before
        assert sum(c.amount for p in q.payouts for c in p.charges) == q.total
        priors.append(_as_prior(q, req, n))
    refunded: dict[str, int] = {}
    for prior in priors:
        for pid, amount in prior.tender_amounts.items():
            refunded[pid] = refunded.get(pid, 0) + amount
    for pay in order.payments:
        assert refunded.get(pay.payment_id, 0) <= pay.captured
