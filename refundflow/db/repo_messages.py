"""What crosses the service's edge: idempotency keys, provider webhooks and the outbox."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import CursorResult, Integer, bindparam, update
from sqlalchemy.sql.dml import Update
from sqlmodel import Session, col, or_, select

from refundflow.db.core import expire_copy, table_of, upsert_into
from refundflow.db.guards import atomic, insert_once
from refundflow.db.models import IdempotencyKeyRow, OutboxRow, WebhookEventRow
from refundflow.db.types import utcnow
from refundflow.domain.errors import DomainError, InvalidInput

# ----------------------------------------------------------------------- idempotency keys


class ClaimOutcome(StrEnum):
    NEW = "new"
    """The caller owns the key now: do the work, then ``complete_idempotency_key``."""
    IN_FLIGHT = "in_flight"
    """Another request with this key is still running."""
    DONE = "done"
    """Answered before: return ``response`` as is."""
    MISMATCH = "mismatch"
    """The key was used for a different request."""


@dataclass(frozen=True)
class IdempotencyClaim:
    outcome: ClaimOutcome
    refund_id: str | None = None
    response: dict[str, Any] | None = None


_KEYS = table_of(IdempotencyKeyRow)


def claim_idempotency_key(
    session: Session,
    *,
    merchant_id: str,
    key: str,
    request_hash: str,
    at: datetime | None = None,
    stale_after: timedelta = timedelta(minutes=2),
) -> IdempotencyClaim:
    """``NEW`` when this caller owns the key now. A claim left ``in_flight`` longer than
    ``stale_after`` (its API process died mid-request) is taken over: safe because whatever
    the request started is named by the key itself (the refund id derives from it)."""
    now = at or utcnow()
    keys = _KEYS
    row = {"merchant_id": merchant_id, "key": key, "request_hash": request_hash}
    # One statement: the key is ours if the insert took (a concurrent insert of the same key on
    # PostgreSQL waits for the other transaction, then takes nothing).
    claim = upsert_into(session, keys).values(
        **row, state="in_flight", created_at=now, updated_at=now
    )
    taken = claim.on_conflict_do_nothing(index_elements=[keys.c.merchant_id, keys.c.key])
    if session.execute(taken.returning(keys.c.key)).first() is not None:
        return IdempotencyClaim(ClaimOutcome.NEW)
    existing = _key(session, merchant_id, key)
    if existing is None:  # released by its owner in between: the client may simply retry
        return IdempotencyClaim(ClaimOutcome.IN_FLIGHT)
    if existing.request_hash != request_hash:
        return IdempotencyClaim(ClaimOutcome.MISMATCH, refund_id=existing.refund_id)
    if existing.state == "done":
        return IdempotencyClaim(ClaimOutcome.DONE, existing.refund_id, existing.response)
    if existing.updated_at < now - stale_after and _take_over(
        session, existing, now - stale_after, now
    ):
        return IdempotencyClaim(ClaimOutcome.NEW, refund_id=existing.refund_id)
    return IdempotencyClaim(ClaimOutcome.IN_FLIGHT, refund_id=existing.refund_id)


def _take_over(
    session: Session, row: IdempotencyKeyRow, stale_before: datetime, now: datetime
) -> bool:
    """Refresh a stale in-flight claim for this caller; only one of several racing callers
    wins, because the update is conditional on the claim still being stale."""
    statement = (
        update(IdempotencyKeyRow)
        .where(
            col(IdempotencyKeyRow.merchant_id) == row.merchant_id,
            col(IdempotencyKeyRow.key) == row.key,
            col(IdempotencyKeyRow.state) == "in_flight",
            col(IdempotencyKeyRow.updated_at) < stale_before,
        )
        .values(updated_at=now)
    )
    with atomic(session):
        result: CursorResult[Any] = session.execute(statement)  # type: ignore[assignment]
    return result.rowcount == 1


def complete_idempotency_key(
    session: Session,
    *,
    merchant_id: str,
    key: str,
    response: dict[str, Any],
    refund_id: str | None = None,
    at: datetime | None = None,
) -> IdempotencyKeyRow:
    now = at or utcnow()
    keys = _KEYS
    # The usual case in one statement: our claim, still in flight, answered.
    answer = {"state": "done", "response": response, "updated_at": now}
    if refund_id is not None:
        answer["refund_id"] = refund_id
    answered = (
        keys.update()
        .where(keys.c.merchant_id == merchant_id, keys.c.key == key, keys.c.state == "in_flight")
        .values(**answer)
        .returning(*keys.c)
    )
    done = session.execute(answered).first()
    if done is not None:
        expire_copy(session, IdempotencyKeyRow, (merchant_id, key))
        return IdempotencyKeyRow(**done._mapping)
    with atomic(session):
        row = _key(session, merchant_id, key, lock=True)
        if row is None:
            raise InvalidInput(f"idempotency key {key!r} was never claimed", code="unknown_key")
        if row.state == "done" and row.response != response:
            raise DomainError(f"idempotency key {key!r} already answered", code="key_completed")
        row.state = "done"
        row.response = response
        row.refund_id = refund_id if refund_id is not None else row.refund_id
        row.updated_at = now
        session.add(row)
    return row


def release_idempotency_key(session: Session, *, merchant_id: str, key: str) -> bool:
    """Forget an unfinished claim (the work failed before any effect) so the client can
    retry with the same key. Answered keys stay."""
    with atomic(session):
        row = _key(session, merchant_id, key, lock=True)
        if row is None or row.state == "done":
            return False
        session.delete(row)
    return True


def _key(
    session: Session, merchant_id: str, key: str, *, lock: bool = False
) -> IdempotencyKeyRow | None:
    statement = (
        select(IdempotencyKeyRow)
        .where(IdempotencyKeyRow.merchant_id == merchant_id, IdempotencyKeyRow.key == key)
        .execution_options(populate_existing=True)
    )
    if lock:
        statement = statement.with_for_update()
    return session.exec(statement).first()


# ------------------------------------------------------------------------------ webhooks


def record_webhook_event(
    session: Session,
    *,
    provider: str,
    event_id: str,
    payload: dict[str, Any],
    at: datetime | None = None,
) -> bool:
    """``True`` the first time ``provider``'s ``event_id`` is recorded, ``False`` if it was."""
    row = WebhookEventRow(
        provider=provider, event_id=event_id, payload=payload, received_at=at or utcnow()
    )
    return insert_once(session, row, constraint="uq_webhook_events_provider_event_id")


def webhook_event_recorded(session: Session, *, provider: str, event_id: str) -> bool:
    """Whether ``provider``'s ``event_id`` is on record (delivered, or its run had finished)."""
    statement = select(WebhookEventRow.id).where(
        WebhookEventRow.provider == provider, WebhookEventRow.event_id == event_id
    )
    return session.exec(statement).first() is not None


# -------------------------------------------------------------------------------- outbox


def enqueue_outbox(
    session: Session,
    *,
    refund_id: str | None,
    channel: str,
    template: str,
    locale: str = "en",
    payload: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> OutboxRow:
    """Queue a notification in the caller's transaction: it exists exactly when the change
    it announces was committed."""
    now = at or utcnow()
    row = OutboxRow(
        refund_id=refund_id,
        channel=channel,
        template=template,
        locale=locale,
        payload=payload or {},
        created_at=now,
        updated_at=now,
    )
    # Written with the transaction's next flush, together with the other rows it adds: an
    # insert with every value given has nothing to refuse, so it needs no savepoint.
    session.add(row)
    return row


def claim_outbox(session: Session, *, limit: int = 50) -> list[OutboxRow]:
    """Pending rows, oldest first, locked for this transaction; PostgreSQL skips rows another
    sender holds, so several senders can work in parallel."""
    statement = (
        select(OutboxRow)
        .where(OutboxRow.status == "pending")
        .order_by(col(OutboxRow.id))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(session.exec(statement).all())


def lease_outbox(
    session: Session,
    *,
    refund_id: str | None = None,
    limit: int = 50,
    lease_seconds: float = 300.0,
    at: datetime | None = None,
) -> list[OutboxRow]:
    """Pending rows no other sender is delivering (of one refund, or all), oldest first,
    leased to the caller for ``lease_seconds``: commit, deliver outside any transaction, then
    ``mark_outbox_rows`` ends the lease. A sender that dies leaves rows that come back when the
    lease runs out, so the lease must outlast one delivery round. One statement: the rows are
    chosen (PostgreSQL skips those another transaction holds) and leased in the same UPDATE."""
    now = at or utcnow()
    statement = _LEASE_ANY if refund_id is None else _LEASE_OF_REFUND
    params = {
        "of_refund_id": refund_id,
        "now": now,
        "limit": limit,
        "until": now + timedelta(seconds=lease_seconds),
    }
    # Rows for the caller to read and deliver outside the transaction, not copies the
    # session tracks: built from the columns the UPDATE returns.
    rows = [OutboxRow(**row._mapping) for row in session.execute(statement, params)]
    return sorted(rows, key=lambda row: row.id or 0)


def _lease(*, of_refund: bool) -> Update:
    """UPDATE ... RETURNING of the pending rows free to lease (of one refund, or all): built
    once, executed with new parameters (``refundflow.db.core``)."""
    outbox = table_of(OutboxRow)
    free = (
        select(outbox.c.id)
        .where(outbox.c.status == "pending")
        .where(or_(outbox.c.locked_until.is_(None), outbox.c.locked_until <= bindparam("now")))
        .order_by(outbox.c.id)
        .limit(bindparam("limit", type_=Integer))
        .with_for_update(skip_locked=True)
    )
    if of_refund:
        free = free.where(outbox.c.refund_id == bindparam("of_refund_id"))
    return (
        outbox.update()
        .where(outbox.c.id.in_(free.scalar_subquery()))
        .values(locked_until=bindparam("until"))
        .returning(*outbox.c)
    )


_LEASE_ANY = _lease(of_refund=False)
_LEASE_OF_REFUND = _lease(of_refund=True)


def record_delivery(
    session: Session,
    *,
    outbox_id: int,
    channel: str,
    ok: bool,
    detail: str = "",
    at: datetime | None = None,
) -> OutboxRow:
    """Record that ``channel`` of a row is done: delivered (``detail``: the provider's message
    id) or refused for good (``detail``: why). A channel recorded here is not tried again."""
    with atomic(session):
        row = session.get(OutboxRow, outbox_id, with_for_update=True, populate_existing=True)
        if row is None:
            raise InvalidInput(f"unknown outbox row {outbox_id}", code="unknown_outbox")
        when = (at or utcnow()).isoformat()
        # A new dict, so the JSON column is seen as changed.
        row.deliveries = {**row.deliveries, channel: {"ok": ok, "detail": detail, "at": when}}
        row.updated_at = at or utcnow()
        session.add(row)
    return row


def list_outbox(session: Session, *, refund_id: str, status: str | None = None) -> list[OutboxRow]:
    """A refund's outbox rows, oldest first (``status``: only those in that state)."""
    statement = (
        select(OutboxRow)
        .where(OutboxRow.refund_id == refund_id)
        .order_by(col(OutboxRow.id))
        .execution_options(populate_existing=True)
    )
    if status is not None:
        statement = statement.where(OutboxRow.status == status)
    return list(session.exec(statement).all())
