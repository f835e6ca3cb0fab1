"""Refunds: their rows, lines and quotes, checked against the stored order (the holds on
the order's tenders: :mod:`refundflow.db.repo_reservations`; payouts and approvals:
:mod:`refundflow.db.repo_payouts`)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Row, Select, bindparam
from sqlalchemy.orm import QueryableAttribute, defer
from sqlmodel import Session, SQLModel, col, func, select

from refundflow.crypto import Keyring
from refundflow.db.core import flush_pending, table_of
from refundflow.db.guards import Violation, atomic
from refundflow.db.models import (
    OrderLineRow,
    OrderRow,
    RefundLineRow,
    RefundRow,
    TenderBalanceRow,
)
from refundflow.db.personal import personal_columns
from refundflow.db.repo_reservations import reserve_new, resize_hold, tender_holds
from refundflow.db.types import utcnow
from refundflow.domain.errors import (
    CurrencyMismatch,
    DomainError,
    InvalidInput,
    OverRefund,
    UnknownLine,
)
from refundflow.domain.orders import OrderSnapshot, RefundRequest
from refundflow.domain.quote import PriorRefund, Quote
from refundflow.domain.states import RefundStatus


def create_refund(
    session: Session,
    *,
    refund_id: str,
    order: OrderSnapshot,
    request: RefundRequest,
    quote: Quote,
    requested_by: str,
    policy_version: int,
    status: RefundStatus,
    at: datetime | None = None,
    keyring: Keyring | None = None,
) -> RefundRow:
    """Insert the refund and its lines and reserve each tender's share of ``quote``. The
    customer's data in ``request`` is stored sealed with ``keyring`` (refused without one).

    Raises :class:`OverRefund` when a tender has less left than the quote takes from it;
    then nothing of the refund is written. Calling again with the same quote returns the
    stored row (a retried activity); with another quote it re-reserves (see
    :func:`requote_refund`).
    """
    wanted = _check_refund_inputs(order, request, quote)
    existing = (
        session.get(RefundRow, refund_id) if refund_exists(session, refund_id=refund_id) else None
    )
    if existing is not None:
        _check_same_refund(existing, order, requested_by)
        if existing.quote_fingerprint == quote.fingerprint():
            return existing
        return requote_refund(session, refund_id=refund_id, quote=quote, status=status, at=at)
    now = at or utcnow()
    row = RefundRow(
        refund_id=refund_id,
        merchant_id=order.merchant_id,
        order_id=order.order_id,
        customer_id=order.customer_id,
        status=RefundStatus(status).value,
        reason=request.reason.value,
        currency=quote.currency,
        total=quote.total,
        requested_by=requested_by,
        policy_version=policy_version,
        quote=quote.model_dump(mode="json"),
        quote_fingerprint=quote.fingerprint(),
        request_fingerprint=request.fingerprint(),
        created_at=now,
        updated_at=now,
        **personal_columns(keyring, refund_id, request.model_dump(mode="json")),
    )
    with atomic(session, lambda v: _over_refund(session, row, wanted, v)):
        _check_against_stored_order(session, order.merchant_id, order.order_id, quote, wanted)
        session.add(row)
        session.flush()
        _write_lines(session, row, quote)
        for payment_id in sorted(wanted):
            reserve_new(session, row, payment_id, wanted[payment_id], now)
    return row


def requote_refund(
    session: Session,
    *,
    refund_id: str,
    quote: Quote,
    status: RefundStatus | None = None,
    at: datetime | None = None,
) -> RefundRow:
    """Move the refund's reservations to a new quote (e.g. after a deduction at inspection).

    Each tender's hold becomes the new quote's share; a share below what was already paid out
    from that tender is refused with :class:`OverRefund`, as is a rise beyond what is left.
    """
    now = at or utcnow()
    row = require_refund(session, refund_id)
    wanted = _tender_amounts(quote)
    if quote.order_id != row.order_id or quote.currency != row.currency:
        raise InvalidInput("the new quote is for another order or currency", code="order_mismatch")
    with atomic(session, lambda v: _over_refund(session, row, wanted, v)):
        holds = tender_holds(session, refund_id, lock=True)
        if holds and all(h.state == "released" for h in holds):
            raise DomainError(f"refund {refund_id} was closed", code="refund_closed")
        _check_against_stored_order(session, row.merchant_id, row.order_id, quote, wanted)
        by_payment = {h.payment_id: h for h in holds}
        for payment_id in sorted(set(wanted) | set(by_payment)):
            hold = by_payment.get(payment_id)
            if hold is None:
                reserve_new(session, row, payment_id, wanted[payment_id], now)
            else:
                resize_hold(session, hold, wanted.get(payment_id, 0), now)
        _replace_quote(session, row, quote, status, now)
    return row


def get_refund(session: Session, *, refund_id: str) -> RefundRow | None:
    return session.get(RefundRow, refund_id)


def refund_exists(session: Session, *, refund_id: str) -> bool:
    flush_pending(session)  # a Core read: rows the session holds unwritten count too
    return session.execute(_EXISTS, {"refund_id": refund_id}).first() is not None


def refund_merchant_and_currency(session: Session, *, refund_id: str) -> tuple[str, str] | None:
    """The two columns a settled payout's posting needs, not the row with its documents."""
    flush_pending(session)
    row = session.execute(_MERCHANT_AND_CURRENCY, {"refund_id": refund_id}).first()
    return None if row is None else (row.merchant_id, row.currency)


def refund_for_recheck(session: Session, *, refund_id: str) -> Row[Any] | None:
    """What the payout's second check recomputes the quote from: the refund's stored request,
    quote and policy version, read as columns (no row object the session tracks)."""
    return session.execute(_FOR_RECHECK, {"refund_id": refund_id}).first()


# Built once (refundflow.db.core): every review, reservation and payout asks these.
_REFUNDS = table_of(RefundRow)
_REFUND = _REFUNDS.select().where(_REFUNDS.c.refund_id == bindparam("refund_id"))
_EXISTS = _REFUND.with_only_columns(_REFUNDS.c.refund_id)
_MERCHANT_AND_CURRENCY = _REFUND.with_only_columns(_REFUNDS.c.merchant_id, _REFUNDS.c.currency)
_FOR_RECHECK = _REFUND.with_only_columns(
    *(
        _REFUNDS.c[name]
        for name in (
            "refund_id",
            "merchant_id",
            "order_id",
            "policy_version",
            "request",
            "quote",
            "quote_fingerprint",
            "total",
            "created_at",
        )
    )
)


def refund_for_notices(session: Session, *, refund_id: str) -> RefundRow | None:
    """The refund's row without its large documents: the quote, and the request (loaded when
    read: only rows written before contacts were sealed need it)."""
    return session.exec(_FOR_NOTICES, params={"refund_id": refund_id}).first()


# Built once (refundflow.db.core): every round of a refund's notices reads it.
_FOR_NOTICES = (
    select(RefundRow)
    .options(
        defer(cast(QueryableAttribute[Any], RefundRow.quote)),
        defer(cast(QueryableAttribute[Any], RefundRow.request)),
    )
    .where(col(RefundRow.refund_id) == bindparam("refund_id"))
)


def set_refund_status(
    session: Session, *, refund_id: str, status: RefundStatus, at: datetime | None = None
) -> RefundRow:
    with atomic(session):
        row = require_refund(session, refund_id)
        row.status = RefundStatus(status).value
        row.updated_at = at or utcnow()
        session.add(row)
    return row


# Built once (refundflow.db.core): every review and second check reads the order's refunds.
_OF_ORDER = (
    select(RefundRow)
    .where(
        col(RefundRow.merchant_id) == bindparam("merchant_id"),
        col(RefundRow.order_id) == bindparam("order_id"),
    )
    .order_by(col(RefundRow.created_at), col(RefundRow.refund_id))
)
_OF_ORDER_BUT_ONE = _OF_ORDER.where(col(RefundRow.refund_id) != bindparam("exclude"))


def prior_refunds(
    session: Session, *, merchant_id: str, order_id: str, exclude_refund_id: str | None = None
) -> list[PriorRefund]:
    """Refunds of the order that count against what is left: live ones, completed ones, and
    closed ones that paid something before they closed."""
    params = {"merchant_id": merchant_id, "order_id": order_id}
    statement = _OF_ORDER
    if exclude_refund_id is not None:
        statement, params["exclude"] = _OF_ORDER_BUT_ONE, exclude_refund_id
    result = []
    for refund in session.exec(statement, params=params).all():
        prior = _as_prior(session, refund)
        if prior is not None:
            result.append(prior)
    return result


def count_recent_refunds(
    session: Session, *, merchant_id: str, customer_id: str, since: datetime
) -> int:
    params = {"merchant_id": merchant_id, "customer_id": customer_id, "since": since}
    flush_pending(session)  # a Core read: what the session holds unwritten counts too
    return int(session.execute(_COUNT_RECENT, params).scalar_one())


# Built once (refundflow.db.core): every review counts the customer's recent refunds.
_COUNT_RECENT = (
    _REFUNDS.select()
    .with_only_columns(func.count())
    .where(
        _REFUNDS.c.merchant_id == bindparam("merchant_id"),
        _REFUNDS.c.customer_id == bindparam("customer_id"),
        _REFUNDS.c.created_at >= bindparam("since"),
    )
)


_CLOSED = {RefundStatus.REJECTED.value, RefundStatus.CANCELLED.value}


def _as_prior(session: Session, refund: RefundRow) -> PriorRefund | None:
    holds = tender_holds(session, refund.refund_id, lock=False)
    # A live hold counts in full; a closed one only for what it actually paid.
    amounts = {h.payment_id: h.amount if h.state == "active" else h.consumed for h in holds}
    paid = any(h.consumed for h in holds)
    if refund.status in _CLOSED and not paid:
        return None
    done = refund.status == RefundStatus.COMPLETED.value or refund.status in _CLOSED
    request = RefundRequest.model_validate(refund.request)
    return PriorRefund(
        refund_id=refund.refund_id,
        state="completed" if done else "active",
        reason=request.reason,
        items=list(request.items),
        tender_amounts={pid: amount for pid, amount in amounts.items() if amount},
        request_fingerprint=refund.request_fingerprint,
        created_at=refund.created_at,
    )


def _tender_amounts(quote: Quote) -> dict[str, int]:
    ids = [t.payment_id for t in quote.tenders]
    if len(set(ids)) != len(ids):
        raise InvalidInput("a quote names each tender once", code="invalid_quote")
    if any(t.amount < 0 for t in quote.tenders):
        raise InvalidInput("tender amounts must not be negative", code="negative_amount")
    if sum(t.amount for t in quote.tenders) != quote.total:
        raise InvalidInput(
            "the quote's tender shares do not add up to its total", code="invalid_quote"
        )
    return {t.payment_id: t.amount for t in quote.tenders if t.amount}


def _check_refund_inputs(
    order: OrderSnapshot, request: RefundRequest, quote: Quote
) -> dict[str, int]:
    if request.order_id != order.order_id or quote.order_id != order.order_id:
        raise InvalidInput(
            f"request and quote must be for order {order.order_id}", code="order_mismatch"
        )
    for currency in (quote.currency, request.currency or quote.currency):
        if currency != order.currency:
            raise CurrencyMismatch(
                f"refund in {currency}, order {order.order_id} in {order.currency}"
            )
    return _tender_amounts(quote)


def _check_same_refund(row: RefundRow, order: OrderSnapshot, requested_by: str) -> None:
    same = (row.merchant_id, row.order_id, row.requested_by) == (
        order.merchant_id,
        order.order_id,
        requested_by,
    )
    if not same:
        raise DomainError(
            f"refund {row.refund_id} exists for another order or requester", code="refund_exists"
        )


def _check_against_stored_order(
    session: Session, merchant_id: str, order_id: str, quote: Quote, wanted: Mapping[str, int]
) -> None:
    """The quote must fit the order as stored, which may be newer than the caller's copy."""
    order = {"merchant_id": merchant_id, "order_id": order_id}
    flush_pending(session)  # Core reads: what the session holds unwritten counts too
    currency = session.execute(_ORDER_CURRENCY, order).scalar()
    if currency is None:
        raise InvalidInput(f"order {order_id} is not stored", code="unknown_order")
    if currency != quote.currency:
        raise CurrencyMismatch(f"order {order_id} is in {currency}, not {quote.currency}")
    tenders = {payment_id: code for payment_id, code in session.execute(_TENDER_CURRENCIES, order)}
    for payment_id in wanted:
        if payment_id not in tenders:
            raise InvalidInput(
                f"order {order_id} has no payment {payment_id!r}", code="unknown_payment"
            )
        if tenders[payment_id] != quote.currency:
            raise CurrencyMismatch(
                f"payment {payment_id} is in {tenders[payment_id]}, the refund in {quote.currency}"
            )
    lines = set(session.execute(_ORDER_LINES, order).scalars())
    unknown = sorted({line.line_id for line in quote.lines} - lines)
    if unknown:
        raise UnknownLine(f"order {order_id} has no line {', '.join(unknown)}")


# Built once (refundflow.db.core): every reservation checks the quote against the stored order.
def _of_order(model: type[SQLModel], *columns: str) -> Select[Any]:
    table = table_of(model)
    return (
        table.select()
        .with_only_columns(*(table.c[name] for name in columns))
        .where(
            table.c.merchant_id == bindparam("merchant_id"),
            table.c.order_id == bindparam("order_id"),
        )
    )


_ORDER_CURRENCY = _of_order(OrderRow, "currency")
_TENDER_CURRENCIES = _of_order(TenderBalanceRow, "payment_id", "currency")
_ORDER_LINES = _of_order(OrderLineRow, "line_id")
_INSERT_LINES = table_of(RefundLineRow).insert()


def _write_lines(session: Session, row: RefundRow, quote: Quote) -> None:
    flush_pending(session)  # the refund's row (and a requote's deletions) first
    lines = [
        {
            "refund_id": row.refund_id,
            "line_id": line.line_id,
            "merchant_id": row.merchant_id,
            "order_id": row.order_id,
            "quantity": line.quantity,
            "amount": line.amount,
        }
        for line in quote.lines
    ]
    if lines:
        session.execute(_INSERT_LINES, lines)


def _replace_quote(
    session: Session, row: RefundRow, quote: Quote, status: RefundStatus | None, now: datetime
) -> None:
    for old in session.exec(select(RefundLineRow).where(RefundLineRow.refund_id == row.refund_id)):
        session.delete(old)
    session.flush()
    _write_lines(session, row, quote)
    row.quote = quote.model_dump(mode="json")
    row.quote_fingerprint = quote.fingerprint()
    row.total = quote.total
    row.policy_version = quote.policy_version
    if status is not None:
        row.status = RefundStatus(status).value
    row.updated_at = now
    session.add(row)


def require_refund(session: Session, refund_id: str) -> RefundRow:
    """The refund's row; ``unknown_refund`` when there is none."""
    row = session.get(RefundRow, refund_id)
    if row is None:
        raise InvalidInput(f"unknown refund {refund_id!r}", code="unknown_refund")
    return row


def _over_refund(
    session: Session, refund: RefundRow, wanted: Mapping[str, int], violation: Violation
) -> DomainError | None:
    if violation.name == "pk_refunds":  # the same refund created concurrently
        return DomainError(f"refund {refund.refund_id} already exists", code="refund_exists")
    if violation.name != "ck_tender_balances_within_captured":
        return None
    # The savepoint is gone, so the committed counters can be read to say what is left.
    parts = []
    for balance in session.exec(
        select(TenderBalanceRow)
        .where(
            TenderBalanceRow.merchant_id == refund.merchant_id,
            TenderBalanceRow.order_id == refund.order_id,
            col(TenderBalanceRow.payment_id).in_(sorted(wanted)),
        )
        .execution_options(populate_existing=True)
    ).all():
        left = balance.captured - balance.reserved - balance.refunded
        parts.append(
            f"{wanted[balance.payment_id]} from payment {balance.payment_id} ({left} left)"
        )
    return OverRefund(
        f"refund {refund.refund_id} would exceed what was captured: it asks {'; '.join(parts)}",
        refund_id=refund.refund_id,
    )
