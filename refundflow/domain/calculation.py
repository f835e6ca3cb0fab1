"""The quote (docs/architecture.md, "Amounts"): a pure function of order, request, policy, prior
refunds and FX.

Every split goes through ``allocate``/``cumulative_share``. A line's amounts are spread over its
units once, the same way for every refund, so the units ``p+1..p+k`` always cost
``F(p+k) - F(p)``: any sequence of partial refunds telescopes to exactly one full refund.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal

from refundflow.domain.errors import (
    CurrencyMismatch,
    DomainError,
    FxRateMissing,
    InvalidInput,
    OverRefund,
    UnknownLine,
)
from refundflow.domain.money import (
    FxRate,
    allocate,
    apply_bps,
    convert,
    cumulative_share,
    format_minor,
)
from refundflow.domain.orders import (
    DestinationKind,
    OrderLine,
    OrderSnapshot,
    PaymentMethod,
    RefundItem,
    RefundRequest,
)
from refundflow.domain.policy import Bearer, Policy
from refundflow.domain.quote import (
    Deduction,
    FxApplied,
    PlannedPayout,
    PriorRefund,
    Quote,
    QuoteLine,
    TenderCharge,
    TenderShare,
)


def compute_quote(
    *,
    order: OrderSnapshot,
    request: RefundRequest,
    policy: Policy,
    prior_refunds: Sequence[PriorRefund] = (),
    deductions: Sequence[Deduction] = (),
    fx_rate: FxRate | None = None,
) -> Quote:
    _check_inputs(order, request, deductions)
    notes: list[str] = []
    lines = _quote_lines(order, request, policy, _units_refunded(prior_refunds), notes)

    items_amount = sum(ln.net for ln in lines)
    shipping = sum(ln.shipping for ln in lines)
    fees = sum(ln.fees for ln in lines)
    restocking = sum(ln.restocking_fee for ln in lines)
    goodwill = request.goodwill_amount or 0
    deducted = sum(d.amount for d in deductions)
    gross_total = items_amount + shipping + fees - restocking + goodwill
    requested_total = max(0, gross_total - deducted)
    for d in deductions:
        notes.append(f"deduction {d.kind}: -{_fmt(d.amount, order)} {d.note}".rstrip())

    remaining = _remaining_by_tender(order, prior_refunds)
    remaining_before = sum(remaining.values())
    if requested_total > 0 and remaining_before == 0:
        raise OverRefund(
            "nothing is left to refund on this order's payments", code="nothing_refundable"
        )
    total = min(requested_total, remaining_before)
    capped = requested_total > remaining_before
    if capped:
        notes.append(
            f"capped at {_fmt(remaining_before, order)} still refundable "
            f"(requested {_fmt(requested_total, order)})"
        )

    tenders = _split_tenders(order, remaining, total)
    payouts, installments = _plan_payouts(order, request, policy, tenders, total, notes)
    payouts, fx = _apply_fx(order, request, policy, payouts, total, fx_rate, notes)
    payout_currency = payouts[0].payout_currency if payouts else order.currency
    return Quote(
        order_id=order.order_id,
        currency=order.currency,
        reason=request.reason,
        policy_version=policy.version,
        lines=lines,
        items_amount=items_amount,
        shipping=shipping,
        fees=fees,
        restocking_fee=restocking,
        goodwill=goodwill,
        deductions=list(deductions),
        deductions_total=deducted,
        requested_total=requested_total,
        remaining_before=remaining_before,
        total=total,
        capped=capped,
        tenders=tenders,
        fx=fx,
        payout_currency=payout_currency,
        payout_total=sum(p.payout_amount for p in payouts),
        payouts=payouts,
        installments=installments,
        notes=notes,
    )


def check_request(order: OrderSnapshot, request: RefundRequest) -> None:
    """Raise for a request that does not fit its order: another order, another currency, or
    a line the order does not have. Bad input, never a rejection."""
    if request.order_id != order.order_id:
        raise InvalidInput(
            f"request is for order {request.order_id}, not {order.order_id}", code="order_mismatch"
        )
    if request.currency is not None and request.currency != order.currency:
        raise CurrencyMismatch(
            f"request currency {request.currency} differs from order currency {order.currency}"
        )
    _check_lines(order, [item.line_id for item in request.items])


def _check_inputs(
    order: OrderSnapshot, request: RefundRequest, deductions: Sequence[Deduction]
) -> None:
    check_request(order, request)
    for pay in order.payments:
        if pay.currency != order.currency:
            raise CurrencyMismatch(
                f"payment {pay.payment_id} is in {pay.currency}, order in {order.currency}"
            )
    _check_lines(order, [d.line_id for d in deductions if d.line_id])


def _check_lines(order: OrderSnapshot, line_ids: Sequence[str]) -> None:
    known = {ln.line_id for ln in order.lines}
    for line_id in line_ids:
        if line_id not in known:
            raise UnknownLine(f"order {order.order_id} has no line {line_id!r}", line_id=line_id)


def _units_refunded(prior_refunds: Sequence[PriorRefund]) -> dict[str, int]:
    units: dict[str, int] = {}
    for prior in prior_refunds:
        for item in prior.items:
            units[item.line_id] = units.get(item.line_id, 0) + item.quantity
    return units


def _quote_lines(
    order: OrderSnapshot,
    request: RefundRequest,
    policy: Policy,
    refunded_units: dict[str, int],
    notes: list[str],
) -> list[QuoteLine]:
    order_disc = order.discount_shares()
    line_net = {ln.line_id: ln.net - order_disc[ln.line_id] for ln in order.lines}
    weights = [line_net[ln.line_id] for ln in order.lines]
    # Shipping and fees are spread over lines (by what was paid for them) and then over units,
    # so they too come back unit by unit and sum exactly when every unit is refunded.
    ship_by_line = dict(
        zip([ln.line_id for ln in order.lines], allocate(order.shipping_fee, weights), strict=True)
    )
    fees_by_line = dict(
        zip([ln.line_id for ln in order.lines], allocate(order.fees_total, weights), strict=True)
    )
    refund_shipping = policy.refunds_charge(policy.shipping_refund, request.reason)
    refund_fees = policy.refunds_charge(policy.fee_refund, request.reason)
    bps = policy.restocking_fee_bps.get(request.reason, 0)
    if request.items and order.shipping_fee:
        notes.append(
            f"shipping {'refunded' if refund_shipping else 'kept'} for {request.reason.value} "
            f"(rule {policy.shipping_refund.value})"
        )
    if request.items and bps:
        notes.append(f"restocking fee {Decimal(bps) / 100}% for {request.reason.value}")

    result = []
    for item in request.items:
        line = order.line(item.line_id)
        assert line is not None  # checked in _check_inputs
        before = refunded_units.get(line.line_id, 0)
        _check_units(line, item, before)
        span = _unit_span(line.quantity, before, item.quantity)
        net = span(line_net[line.line_id])
        gross = item.quantity * line.unit_price
        line_discount = min(span(line.line_discount), gross - net)
        cum_net_before = cumulative_share(line_net[line.line_id], line.quantity, before)
        restocking = apply_bps(cum_net_before + net, bps) - apply_bps(cum_net_before, bps)
        shipping = span(ship_by_line[line.line_id]) if refund_shipping else 0
        fees = span(fees_by_line[line.line_id]) if refund_fees else 0
        result.append(
            QuoteLine(
                line_id=line.line_id,
                sku=line.sku,
                quantity=item.quantity,
                units_refunded_before=before,
                gross=gross,
                line_discount=line_discount,
                order_discount=gross - net - line_discount,
                net=net,
                shipping=shipping,
                fees=fees,
                restocking_fee=restocking,
                amount=net + shipping + fees - restocking,
            )
        )
    return result


def _check_units(line: OrderLine, item: RefundItem, before: int) -> None:
    if before + item.quantity > line.quantity:
        raise OverRefund(
            f"line {line.line_id}: {item.quantity} requested, "
            f"{line.quantity - before} of {line.quantity} not yet refunded",
            code="quantity_exceeds_remaining",
            line_id=line.line_id,
            remaining_units=line.quantity - before,
        )


def _unit_span(units: int, before: int, count: int) -> Callable[[int], int]:
    """Share of a line amount belonging to units ``before+1 .. before+count``."""

    def span(amount: int) -> int:
        upto = cumulative_share(amount, units, before + count)
        return upto - cumulative_share(amount, units, before)

    return span


def _remaining_by_tender(
    order: OrderSnapshot, prior_refunds: Sequence[PriorRefund]
) -> dict[str, int]:
    remaining = {p.payment_id: p.captured for p in order.payments}
    for prior in prior_refunds:
        for payment_id, amount in prior.tender_amounts.items():
            if payment_id not in remaining:
                raise InvalidInput(
                    f"prior refund {prior.refund_id} names unknown payment {payment_id}",
                    code="unknown_payment",
                )
            remaining[payment_id] = max(0, remaining[payment_id] - amount)
    return remaining


def _split_tenders(
    order: OrderSnapshot, remaining: dict[str, int], total: int
) -> list[TenderShare]:
    """Spread the refund over tenders by what each still has; never above any tender's rest."""
    ids = [p.payment_id for p in order.payments]
    parts = allocate(total, [remaining[i] for i in ids]) if total else [0] * len(ids)
    return [
        TenderShare(
            payment_id=p.payment_id,
            method=p.method,
            captured=p.captured,
            refunded_before=p.captured - remaining[p.payment_id],
            amount=part,
        )
        for p, part in zip(order.payments, parts, strict=True)
    ]


def _installment_count(policy: Policy, currency: str, total: int) -> int:
    rule = policy.installments
    if not rule.enabled or total == 0:
        return 1
    if total < policy.limit("installment_threshold", currency):
        return 1
    if rule.count is not None:
        return rule.count
    max_tranche = policy.limit("installment_max_tranche", currency)
    return max(1, -(-total // max_tranche))


def _plan_payouts(
    order: OrderSnapshot,
    request: RefundRequest,
    policy: Policy,
    tenders: list[TenderShare],
    total: int,
    notes: list[str],
) -> tuple[list[PlannedPayout], int]:
    count = _installment_count(policy, order.currency, total)
    interval = policy.installments.interval_days
    if count > 1:
        notes.append(f"paid in {count} installments, {interval} days apart")
    # Each tender's amount is split into the installments, so every tender's charges add up to
    # exactly its share whatever the routing.
    per_tender = {t.payment_id: allocate(t.amount, [1] * count) for t in tenders}
    kind = request.destination.kind
    merged_route = {
        DestinationKind.BALANCE: PaymentMethod.BALANCE,
        DestinationKind.BANK_TRANSFER: PaymentMethod.BANK_TRANSFER,
    }.get(kind)
    payouts: list[PlannedPayout] = []
    for inst in range(count):
        groups: list[tuple[PaymentMethod, list[TenderCharge]]]
        charges = [
            TenderCharge(payment_id=t.payment_id, amount=per_tender[t.payment_id][inst])
            for t in tenders
            if per_tender[t.payment_id][inst] > 0
        ]
        if merged_route is not None:
            groups = [(merged_route, charges)] if charges else []
        else:
            method = {t.payment_id: t.method for t in tenders}
            groups = [(method[c.payment_id], [c]) for c in charges]
        for route, group in groups:
            amount = sum(c.amount for c in group)
            payouts.append(
                PlannedPayout(
                    seq=len(payouts) + 1,
                    installment=inst + 1,
                    route=route,
                    charges=group,
                    amount=amount,
                    payout_currency=order.currency,
                    payout_amount=amount,
                    due_after_days=inst * interval,
                )
            )
    return payouts, count


def _apply_fx(
    order: OrderSnapshot,
    request: RefundRequest,
    policy: Policy,
    payouts: list[PlannedPayout],
    total: int,
    fx_rate: FxRate | None,
    notes: list[str],
) -> tuple[list[PlannedPayout], FxApplied | None]:
    account = request.destination.bank_account
    target = account.currency if account is not None else order.currency
    if target == order.currency or not payouts:
        return payouts, None
    if fx_rate is None:
        raise FxRateMissing(f"an FX rate {order.currency}/{target} is needed for this payout")
    if {fx_rate.base, fx_rate.quote} != {order.currency, target}:
        raise CurrencyMismatch(
            f"rate {fx_rate.base}/{fx_rate.quote} does not convert {order.currency} to {target}"
        )
    rules = policy.international
    if fx_rate.source != rules.fx_rate_source:
        raise DomainError(
            f"policy requires FX rates from {rules.fx_rate_source!r}, got {fx_rate.source!r}",
            code="fx_source_mismatch",
        )
    converted = convert(total, fx_rate, from_currency=order.currency)
    fee = apply_bps(converted, rules.cross_border_fee_bps)
    paid_out = converted - fee if rules.cross_border_fee_bearer is Bearer.CUSTOMER else converted
    amounts = allocate(paid_out, [p.amount for p in payouts])
    notes.append(
        f"converted {_fmt(total, order)} at {fx_rate.rate} {fx_rate.base}/{fx_rate.quote} "
        f"({fx_rate.source}, {fx_rate.as_of.isoformat()}) = {format_minor(converted, target)}; "
        f"cross-border fee {format_minor(fee, target)} borne by "
        f"{rules.cross_border_fee_bearer.value}"
    )
    converted_payouts = [
        p.model_copy(update={"payout_currency": target, "payout_amount": amount})
        for p, amount in zip(payouts, amounts, strict=True)
    ]
    applied = FxApplied(
        rate=fx_rate,
        from_currency=order.currency,
        to_currency=target,
        converted_total=converted,
        cross_border_fee=fee,
        fee_bearer=rules.cross_border_fee_bearer,
    )
    return converted_payouts, applied


def _fmt(amount: int, order: OrderSnapshot) -> str:
    return format_minor(amount, order.currency)
