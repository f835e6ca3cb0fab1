"""Customer data of refunds: revealed to someone allowed (and recorded), resealed under a new
key, erased when retention says so. What is stored where: :mod:`refundflow.db.personal`."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from sqlmodel import Session, col, select

from refundflow.crypto import Keyring
from refundflow.db.guards import atomic
from refundflow.db.models import RefundRow
from refundflow.db.personal import (
    masked,
    open_personal,
    seal_personal,
    split_personal,
)
from refundflow.db.repo_records import append_audit
from refundflow.db.types import utcnow
from refundflow.domain.errors import DomainError

PersonalField = Literal["email", "phone", "account_number", "holder_name"]
FINISHED = ("COMPLETED", "REJECTED", "CANCELLED")
"""Statuses a refund ends in: its customer data is kept only for the retention period after."""


class PersonalDataErased(DomainError):
    code = "personal_data_erased"


class PersonalDataAbsent(DomainError):
    code = "personal_data_absent"


def reveal_personal(
    session: Session,
    *,
    refund_id: str,
    field: PersonalField,
    actor: str,
    reason: str,
    keyring: Keyring,
    at: datetime | None = None,
) -> str:
    """The full value of one of the refund's customer details, for ``actor`` (who must be
    allowed: the caller checks), recorded in the audit trail with the reason; the value is
    never recorded. Raises :class:`PersonalDataErased` after retention erased it, and
    :class:`PersonalDataAbsent` when the refund never had it."""
    row = session.get(RefundRow, refund_id)
    if row is None:
        raise PersonalDataAbsent(f"no refund {refund_id}")
    if row.personal_erased_at is not None:
        raise PersonalDataErased(
            f"the customer data of {refund_id} was erased on {row.personal_erased_at:%Y-%m-%d}"
        )
    value = (
        open_personal(keyring, refund_id, row.personal_sealed).get(field)
        if row.personal_sealed
        else None
    )
    if not value:
        raise PersonalDataAbsent(f"refund {refund_id} has no {field}")
    append_audit(
        session,
        refund_id=refund_id,
        kind="personal_data_revealed",
        actor=actor,
        data={"field": field, "reason": reason},
        at=at,
    )
    return str(value)


def reseal_personal(session: Session, *, keyring: Keyring) -> int:
    """Seal, under the current key, the customer data of every refund still in plaintext (a
    worker from before sealing wrote it) or sealed with an older key; how many rows changed.
    Workers run it when they start, so a rotation completes without downtime."""
    changed = 0
    rows = session.exec(select(RefundRow).where(col(RefundRow.personal_erased_at).is_(None)))
    for row in rows.all():
        stored, plain = split_personal(row.request or {})
        personal = dict(plain)
        if row.personal_sealed:
            if not plain and not keyring.needs_reseal(row.personal_sealed):
                continue
            personal = {**open_personal(keyring, row.refund_id, row.personal_sealed), **plain}
        if not personal:
            continue
        with atomic(session):
            row.request = stored
            row.personal_sealed = seal_personal(keyring, row.refund_id, personal)
            row.personal_masked = masked(personal)
            session.add(row)
        changed += 1
    return changed


def erase_personal(
    session: Session, *, refund_id: str, actor: str = "retention", at: datetime | None = None
) -> bool:
    """Erase the refund's customer data (sealed values, masks, anything left in its request);
    amounts, lines, payouts and the audit trail stay. ``False`` if there was nothing left."""
    row = session.get(RefundRow, refund_id)
    if row is None or row.personal_erased_at is not None:
        return False
    now = at or utcnow()
    with atomic(session):
        row.request = split_personal(row.request or {})[0]
        row.personal_sealed = None
        row.personal_masked = None
        row.personal_erased_at = now
        session.add(row)
        append_audit(session, refund_id=refund_id, kind="personal_data_erased", actor=actor, at=now)
    return True


def expired_personal(session: Session, *, finished_before: datetime, limit: int) -> list[str]:
    """Refunds finished (last changed) before ``finished_before`` whose customer data is not
    erased yet, oldest first."""
    statement = (
        select(RefundRow.refund_id)
        .where(
            col(RefundRow.status).in_(FINISHED),
            col(RefundRow.updated_at) < finished_before,
            col(RefundRow.personal_erased_at).is_(None),
        )
        .order_by(col(RefundRow.updated_at))
        .limit(limit)
    )
    return list(session.exec(statement).all())


__all__ = [
    "PersonalDataAbsent",
    "PersonalDataErased",
    "erase_personal",
    "expired_personal",
    "reseal_personal",
    "reveal_personal",
]
