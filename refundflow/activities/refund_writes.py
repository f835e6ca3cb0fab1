"""The database writes of a refund run, each in the caller's transaction: one per local activity
for runs recorded before batching, or a run's whole batch in one (:class:`DbStep`).

Every write is safe to run twice (a local activity is retried if the worker dies after the
commit and before its result is recorded): audit and outbox rows carry the timeline index of
their entry, and the repositories treat a repeated payout key, release or approval as the same.
"""

from __future__ import annotations

from sqlmodel import Session

from refundflow.activities.contracts import (
    ApprovalInput,
    DbStep,
    RecordPayoutInput,
    ReleaseInput,
    TransitionInput,
)
from refundflow.db.repo_timeline import EntryRows, insert_entries, recorded_entries, set_status
from refundflow.db.repository import (
    payout_status,
    post_ledger,
    record_approval,
    refund_merchant_and_currency,
    register_payout_key,
    release_reservation,
    set_payout_status,
    settle_payout,
)
from refundflow.domain.orders import PaymentMethod
from refundflow.domain.states import PayoutStatus
from refundflow.gateways.balance import refunds_account


def write_steps(session: Session, steps: list[DbStep]) -> None:
    """A run's batch in order. The timeline entries are checked against the database once for
    the whole batch, and the refund row's status is set once, by the batch's last entry."""
    entries = [step.transition for step in steps if step.transition is not None]
    recorded = _recorded_entries(session, entries)
    pending = EntryRows()  # entries not written yet: written together, before other writes
    for step in steps:
        if step.transition is not None:
            _add_entry(pending, step.transition, recorded)
            continue
        insert_entries(session, pending)
        pending = EntryRows()
        if step.register_payout is not None:
            write_payout_key(session, step.register_payout)
        elif step.record_payout is not None:
            write_payout(session, step.record_payout)
        elif step.release is not None:
            write_release(session, step.release)
        elif step.approval is not None:
            write_approval(session, step.approval)
    insert_entries(session, pending)
    _set_status(session, entries, recorded)


def write_transition(session: Session, inp: TransitionInput) -> None:
    """One timeline entry: its audit row and notices, and the refund row's status."""
    write_steps(session, [DbStep(transition=inp)])


class _Recorded:
    """The refund's timeline entries in the database from the batch's first index on."""

    def __init__(self, rows: list[tuple[str, int]]) -> None:
        self.entries = set(rows)
        self.latest = max((seq for _, seq in rows), default=-1)


def _recorded_entries(session: Session, entries: list[TransitionInput]) -> _Recorded:
    if not entries:
        return _Recorded([])
    first = min(entry.seq for entry in entries)
    return _Recorded(recorded_entries(session, refund_id=entries[0].refund_id, from_seq=first))


def _add_entry(rows: EntryRows, inp: TransitionInput, recorded: _Recorded) -> None:
    """The entry's audit row and notices, unless a retry after the commit finds them."""
    if (inp.kind, inp.seq) in recorded.entries:
        return
    data = {**inp.data, "seq": inp.seq, "message": inp.message}
    data |= {"status": inp.status.value, "stage": inp.stage.value}
    rows.add_audit(refund_id=inp.refund_id, kind=inp.kind, actor=inp.actor, data=data, at=inp.at)
    for note in inp.notifications:
        rows.add_notice(
            refund_id=inp.refund_id,
            channel=note.channel,
            template=note.template,
            locale=note.locale,
            payload=note.params,
            at=inp.at,
        )


def _set_status(session: Session, entries: list[TransitionInput], recorded: _Recorded) -> None:
    """The refund row's status: that of the latest entry with no later one recorded. An
    Update's entry and the run loop's may reach the database in either order, so an entry
    that finds a later one leaves the status alone; the update matches only a changed status
    and reads no row."""
    latest, final = recorded.latest, None
    for entry in entries:
        if entry.seq >= latest:
            final, latest = entry, entry.seq
    if final is None:
        return
    set_status(session, refund_id=final.refund_id, status=final.status.value, at=final.at)


def write_payout_key(session: Session, inp: RecordPayoutInput) -> None:
    record = inp.record
    register_payout_key(
        session,
        payout_key=record.key,
        refund_id=inp.refund_id,
        seq=record.seq,
        generation=record.generation,
        route=record.route.value,
        amount=record.amount,
        currency=record.payout_currency,
        at=inp.at,
    )


def write_payout(session: Session, inp: RecordPayoutInput) -> None:
    record = inp.record
    status = payout_status(session, payout_key=record.key)
    if status is None or status == PayoutStatus.SETTLED.value:
        return
    if record.status is not PayoutStatus.SETTLED:
        set_payout_status(
            session,
            payout_key=record.key,
            status=record.status,
            provider_ref=record.provider_ref,
            at=inp.at,
        )
        return
    settle_payout(
        session,
        payout_key=record.key,
        charges=inp.charges,
        provider_ref=record.provider_ref,
        at=inp.at,
    )
    refund = refund_merchant_and_currency(session, refund_id=inp.refund_id)
    by_gateway = record.route is PaymentMethod.BALANCE and record.code != "MARKED_SETTLED"
    if refund is not None and not by_gateway:
        merchant_id, currency = refund
        # The balance gateway books its own wallet posting when it pays; a payout ops
        # settled by hand was paid outside every gateway.
        post_ledger(
            session,
            posting_id=f"settle:{record.key}",
            entries=[
                (refunds_account(merchant_id), record.amount),
                (f"clearing:{record.route.value}", -record.amount),
            ],
            currency=currency,
            refund_id=inp.refund_id,
            memo=f"payout {record.key} settled",
            at=inp.at,
        )


def write_release(session: Session, inp: ReleaseInput) -> None:
    release_reservation(session, refund_id=inp.refund_id, at=inp.at)  # none held: none released


def write_approval(session: Session, inp: ApprovalInput) -> None:
    approval = inp.approval
    record_approval(
        session,
        refund_id=inp.refund_id,
        approver_id=approval.approver_id,
        decision=approval.decision,
        quote_fingerprint=approval.quote_fingerprint,
        comment=approval.comment,
        at=approval.at,
    )
