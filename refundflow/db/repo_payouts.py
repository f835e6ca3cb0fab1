"""Payouts (one row per payout key: registered before the provider is called, then its
status) and approvals (one per approver and quote fingerprint)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import bindparam, func
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from refundflow.db.core import expire_copy, flush_pending, table_of
from refundflow.db.guards import atomic, insert_once
from refundflow.db.models import (
    ApprovalRow,
    PayoutRow,
    ReservationRow,
)
from refundflow.db.repo_refunds import refund_exists, require_refund
from refundflow.db.repo_reservations import consume_holds
from refundflow.db.types import utcnow
from refundflow.domain.errors import (
    DomainError,
    InvalidInput,
)
from refundflow.domain.states import PayoutStatus


def register_payout_key(
    session: Session,
    *,
    payout_key: str,
    refund_id: str,
    seq: int,
    generation: int,
    route: str,
    amount: int,
    currency: str,
    at: datetime | None = None,
) -> int:
    """Record a payout before it is sent; returns its row's id. The same key with the same
    data returns the stored row's (a retry); other data under the key, or the same tranche
    and generation under another key, is refused (``duplicate_payout_key``)."""
    now = at or utcnow()
    data = {
        "refund_id": refund_id,
        "seq": seq,
        "generation": generation,
        "route": str(route),
        "amount": amount,
        "currency": currency,
    }
    if not refund_exists(session, refund_id=refund_id):
        raise InvalidInput(f"unknown refund {refund_id!r}", code="unknown_refund")
    flush_pending(session)
    row = {**data, **_NEW_PAYOUT, "payout_key": payout_key, "created_at": now, "updated_at": now}
    # One statement: the key is ours if the insert took. A conflict on either unique key takes
    # nothing (on PostgreSQL after waiting for a concurrent insert of it to end).
    register = _REGISTER[session.get_bind().dialect.name]
    inserted = session.execute(register, row).scalar()
    if inserted is not None:
        return int(inserted)
    existing = session.execute(_REGISTERED, {"payout_key": payout_key}).first()
    if existing is None or {name: existing._mapping[name] for name in data} != data:
        raise DomainError(
            f"payout key {payout_key} is already registered with other data",
            code="duplicate_payout_key",
        )
    return int(existing.id)


def set_payout_status(
    session: Session,
    *,
    payout_key: str,
    status: PayoutStatus,
    provider_ref: str | None = None,
    at: datetime | None = None,
) -> PayoutRow:
    """Record what the provider said. Settling goes through :func:`settle_payout`, which also
    moves the money from reserved to refunded."""
    if PayoutStatus(status) is PayoutStatus.SETTLED:
        raise InvalidInput("use settle_payout to settle a payout", code="invalid_status")
    with atomic(session):
        row = _locked_payout(session, payout_key)
        if row.status == PayoutStatus.SETTLED.value:
            raise DomainError(f"payout {payout_key} is settled", code="payout_settled")
        row.status = PayoutStatus(status).value
        row.provider_ref = provider_ref if provider_ref is not None else row.provider_ref
        row.updated_at = at or utcnow()
        session.add(row)
    return row


def settle_payout(
    session: Session,
    *,
    payout_key: str,
    charges: Mapping[str, int],
    provider_ref: str | None = None,
    at: datetime | None = None,
) -> bool:
    """Mark the payout settled and consume ``charges`` (payment id -> amount) from the
    refund's holds, once: ``False`` if it was already settled (a duplicate webhook). Checked
    in full before anything is written: a refusal writes nothing."""
    now = at or utcnow()
    flush_pending(session)  # Core reads and writes: what the session holds unwritten first
    row = session.execute(_SETTLING, {"payout_key": payout_key}).first()
    if row is None:
        raise InvalidInput(f"unknown payout {payout_key!r}", code="unknown_payout")
    if row.status == PayoutStatus.SETTLED.value:
        return False
    if sum(charges.values()) != row.amount:
        raise InvalidInput(
            f"charges add up to {sum(charges.values())}, payout {payout_key} is {row.amount}",
            code="invalid_charges",
        )
    consume_holds(session, refund_id=row.refund_id, charges=charges, at=now)
    session.execute(_SETTLE, {"of_key": payout_key, "ref": provider_ref, "at": now})
    expire_copy(session, PayoutRow, row.id)
    return True


def count_provider_refunds(
    session: Session,
    *,
    merchant_id: str,
    order_id: str,
    payment_id: str,
    route: str,
    excluding: str = "",
) -> int:
    """Payouts through ``route`` the provider has (or may have) taken on this payment: the
    per-payment refund count some providers cap (WeChat Pay: 50)."""
    refunds_of_payment = select(ReservationRow.refund_id).where(
        ReservationRow.merchant_id == merchant_id,
        ReservationRow.order_id == order_id,
        ReservationRow.payment_id == payment_id,
    )
    statement = select(PayoutRow.payout_key).where(
        col(PayoutRow.refund_id).in_(refunds_of_payment),
        PayoutRow.route == route,
        col(PayoutRow.status).in_(["accepted", "settled", "unknown"]),
        PayoutRow.payout_key != excluding,
    )
    return len(set(session.exec(statement).all()))


def get_payout(session: Session, *, payout_key: str) -> PayoutRow | None:
    return _payout(session, payout_key)


def payout_status(session: Session, *, payout_key: str) -> str | None:
    """The payout's status as stored, or ``None`` when no such key is registered."""
    flush_pending(session)
    row = session.execute(_SETTLING, {"payout_key": payout_key}).first()
    return None if row is None else str(row.status)


# Built once (refundflow.db.core): a refund reads its payout's row three times.
_PAYOUT = (
    select(PayoutRow)
    .where(col(PayoutRow.payout_key) == bindparam("payout_key"))
    .execution_options(populate_existing=True)
)
_LOCKED_PAYOUT = _PAYOUT.with_for_update()
_PAYOUTS = table_of(PayoutRow)
_NEW_PAYOUT = {"status": PayoutStatus.PENDING.value, "provider_ref": ""}
_REGISTER = {
    name: insert(_PAYOUTS).on_conflict_do_nothing().returning(_PAYOUTS.c.id)
    for name, insert in (("postgresql", postgresql.insert), ("sqlite", sqlite.insert))
}
_REGISTERED = _PAYOUTS.select().where(_PAYOUTS.c.payout_key == bindparam("payout_key"))
_SETTLING = (
    _REGISTERED.with_only_columns(
        _PAYOUTS.c.id, _PAYOUTS.c.refund_id, _PAYOUTS.c.amount, _PAYOUTS.c.status
    )
).with_for_update()
_SETTLE = (
    _PAYOUTS.update()
    .where(_PAYOUTS.c.payout_key == bindparam("of_key"))
    .values(
        status=PayoutStatus.SETTLED.value,
        provider_ref=func.coalesce(bindparam("ref"), _PAYOUTS.c.provider_ref),
        updated_at=bindparam("at"),
    )
)


def _payout(session: Session, payout_key: str) -> PayoutRow | None:
    return session.exec(_PAYOUT, params={"payout_key": payout_key}).first()


def _locked_payout(session: Session, payout_key: str) -> PayoutRow:
    row = session.exec(_LOCKED_PAYOUT, params={"payout_key": payout_key}).first()
    if row is None:
        raise InvalidInput(f"unknown payout {payout_key!r}", code="unknown_payout")
    return row


def _payout_data(row: PayoutRow) -> tuple[object, ...]:
    return (row.refund_id, row.seq, row.generation, row.route, row.amount, row.currency)


# ---------------------------------------------------------------------------- approvals


def record_approval(
    session: Session,
    *,
    refund_id: str,
    approver_id: str,
    decision: str,
    quote_fingerprint: str,
    comment: str = "",
    at: datetime | None = None,
) -> ApprovalRow:
    """Record one approver's decision on one quote.

    The requester is taken from the refund, and the database refuses a self-approval
    (``self_approval``) whatever the caller claims. The same approver deciding the same quote
    again returns the first record; a different decision is ``approval_conflict``.
    """
    refund = require_refund(session, refund_id)
    existing = _approval(session, refund_id, approver_id, quote_fingerprint)
    if existing is None:
        row = ApprovalRow(
            refund_id=refund_id,
            approver_id=approver_id,
            requested_by=refund.requested_by,
            decision=decision,
            quote_fingerprint=quote_fingerprint,
            comment=comment,
            created_at=at or utcnow(),
        )
        constraint = "uq_approvals_refund_id_approver_id_quote_fingerprint"
        if insert_once(session, row, constraint=constraint):
            return row
        existing = _approval(session, refund_id, approver_id, quote_fingerprint)
    if existing is None or existing.decision != decision:
        raise DomainError(
            f"{approver_id} already decided differently on this quote", code="approval_conflict"
        )
    return existing


def list_approvals(
    session: Session, *, refund_id: str, quote_fingerprint: str | None = None
) -> list[ApprovalRow]:
    statement = select(ApprovalRow).where(ApprovalRow.refund_id == refund_id)
    if quote_fingerprint is not None:
        statement = statement.where(ApprovalRow.quote_fingerprint == quote_fingerprint)
    return list(session.exec(statement.order_by(col(ApprovalRow.id))).all())


def _approval(
    session: Session, refund_id: str, approver_id: str, fingerprint: str
) -> ApprovalRow | None:
    statement = select(ApprovalRow).where(
        ApprovalRow.refund_id == refund_id,
        ApprovalRow.approver_id == approver_id,
        ApprovalRow.quote_fingerprint == fingerprint,
    )
    return session.exec(statement).first()
