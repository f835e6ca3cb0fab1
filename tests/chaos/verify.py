"""After a fault round: our books against every provider's. Each refund must be in its final
state, every tranche paid exactly once (at the provider our books name, for the amount they
name), no payment refunded beyond what it captured, and every ledger posting balanced."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from sqlmodel import select

from refundflow.db.engine import session_scope
from refundflow.db.models import LedgerEntryRow, LedgerPostingRow, PayoutRow, RefundRow
from refundflow.devstack.simulators.core import FAILED, PROCESSING, SUCCESS
from refundflow.gateways.balance import refunds_account
from refundflow.gateways.wechat import payout_key_of
from tests.chaos.refunds import CAPTURED, METHODS, Planned
from tests.chaos.stack import MERCHANT, ChaosStack


@dataclass
class Findings:
    refunds: int = 0
    completed: int = 0
    duplicates: list[str] = field(default_factory=list)
    """A tranche paid more than once (by one provider or across routes)."""
    lost: list[str] = field(default_factory=list)
    """A refund short of its final state, or money our books and a provider disagree on."""
    over_refunded: list[str] = field(default_factory=list)
    unbalanced: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        return [*self.duplicates, *self.lost, *self.over_refunded, *self.unbalanced]


def verify(stack: ChaosStack, plans: list[Planned]) -> Findings:
    found = Findings(refunds=len(plans))
    ours = {plan.refund_id: plan for plan in plans}
    with session_scope(stack.engine, readonly=True) as session:
        rows = {r.refund_id: r for r in session.exec(select(RefundRow)).all()}
        payouts = list(session.exec(select(PayoutRow)).all())
        postings = {p.posting_id: p for p in session.exec(select(LedgerPostingRow)).all()}
        entries = list(session.exec(select(LedgerEntryRow)).all())
    settled = [p for p in payouts if p.status == "settled"]
    paid: dict[tuple[str, int], list[str]] = defaultdict(list)
    """(refund, tranche) -> every payment of it: our settled balance payouts, and every
    provider refund that moved money."""
    for payout in settled:
        if payout.route == "balance":
            paid[(payout.refund_id, payout.seq)].append(f"balance {payout.payout_key}")

    for refund_id, plan in ours.items():
        row = rows.get(refund_id)
        if row is None or row.status != "COMPLETED":
            found.lost.append(
                f"{plan.name} ({plan.provider}, {plan.behaviour or plan.crash}):"
                f" {row.status if row else 'no refund row'}"
            )
            continue
        found.completed += 1
        routes = {p.route for p in settled if p.refund_id == refund_id}
        if routes != {plan.paid_route}:
            found.lost.append(f"{plan.name}: paid via {sorted(routes)}, not {plan.paid_route}")

    by_key = {p.payout_key: p for p in payouts}
    for provider, ledger in stack.ledgers.items():
        taken: dict[str, int] = defaultdict(int)
        for refund in ledger.refunds():
            key = payout_key_of(refund.refund_no) if provider == "wechat" else refund.refund_no
            ours_row = by_key.get(key)
            where = f"{provider} {refund.refund_no} ({refund.status})"
            if refund.status != FAILED:
                taken[refund.payment_id] += refund.amount
            tranche = key.rsplit(":", 2)
            if refund.status == SUCCESS:
                paid[(tranche[0], int(tranche[1]))].append(where)
            if ours_row is None:
                found.lost.append(f"{where}: no payout of ours has this key")
                continue
            if refund.status == SUCCESS:
                if ours_row.status != "settled" or ours_row.route != METHODS[provider]:
                    found.lost.append(f"{where}: paid, our books say {ours_row.status}")
                if (refund.amount, refund.currency) != (ours_row.amount, ours_row.currency):
                    found.lost.append(f"{where}: {refund.amount} {refund.currency} paid")
            elif refund.status == PROCESSING:
                found.lost.append(f"{where}: still in flight at the provider")
            elif ours_row.status == "settled":
                found.lost.append(f"{where}: failed, our books say settled")
        for payment_id, amount in taken.items():
            if provider != "bank_transfer" and amount > CAPTURED:
                found.over_refunded.append(f"{provider} {payment_id}: {amount} of {CAPTURED}")

    for (paid_refund, seq), payments in paid.items():
        if len(payments) > 1:
            found.duplicates.append(
                f"{paid_refund} tranche {seq} paid {len(payments)}x: {payments}"
            )

    sums: dict[str, int] = defaultdict(int)
    refunds_out: dict[str, int] = defaultdict(int)
    for entry in entries:
        sums[entry.posting_id] += entry.amount
        posting = postings[entry.posting_id]
        if entry.account == refunds_account(MERCHANT) and posting.refund_id:
            refunds_out[posting.refund_id] += entry.amount
    found.unbalanced += [f"posting {pid} sums to {total}" for pid, total in sums.items() if total]
    for refund_id in ours:
        row = rows.get(refund_id)
        booked = sum(p.amount for p in settled if p.refund_id == refund_id)
        if row is not None and row.status == "COMPLETED" and row.total != booked:
            found.unbalanced.append(f"{refund_id}: total {row.total}, settled {booked}")
        if refunds_out[refund_id] != booked:
            found.unbalanced.append(f"{refund_id}: ledger {refunds_out[refund_id]}, {booked}")
    return found
