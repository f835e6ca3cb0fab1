"""Starting a refund under an ``Idempotency-Key``: the key is looked up before anything else,
so a retry is answered with the refund the key already names, whatever has happened to the
order's money since (the first attempt may have reserved all of it).

Each database step is its own short transaction in a worker thread: on SQLite a writing
transaction holds the database's write lock, which must never wait on the event loop (another
request's transaction would then wait on this one, and the loop on both)."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session
from temporalio.client import Client
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from refundflow.activities.contracts import RefundWorkflowInput
from refundflow.api import schemas as api
from refundflow.api.errors import ApiError
from refundflow.db.engine import session_scope
from refundflow.db.models import RefundRow
from refundflow.db.repository import (
    ClaimOutcome,
    IdempotencyClaim,
    claim_idempotency_key,
    complete_idempotency_key,
    get_order,
    latest_policy,
    prior_refunds,
    release_idempotency_key,
)
from refundflow.domain.calculation import compute_quote
from refundflow.domain.money import FxRate
from refundflow.domain.orders import OrderSnapshot, RefundRequest
from refundflow.domain.policy import DEFAULT_POLICY
from refundflow.domain.quote import Quote
from refundflow.workflows.client import refund_id_for, start_refund, workflow_id

IDEMPOTENCY_KEY_MAX_LENGTH = 200


def refund_request(body: api.RefundCreate, *, requested_by: str) -> RefundRequest:
    """The domain request: the body, attributed to the API key's owner."""
    fields = body.model_dump(mode="json", exclude={"fx_rate"})
    return RefundRequest.parse({**fields, "requested_by": requested_by})


def merchant_order(session: Session, *, merchant_id: str, order_id: str) -> OrderSnapshot:
    order = get_order(session, merchant_id=merchant_id, order_id=order_id)
    if order is None:
        raise ApiError(404, "not_found", f"no order {order_id}")
    return order


def quote_request(
    session: Session, *, merchant_id: str, request: RefundRequest, fx_rate: FxRate | None = None
) -> Quote:
    """What ``request`` would pay now; bad input and nothing left raise their codes."""
    order = merchant_order(session, merchant_id=merchant_id, order_id=request.order_id)
    return quote_order(session, order=order, request=request, fx_rate=fx_rate)


def quote_order(
    session: Session, *, order: OrderSnapshot, request: RefundRequest, fx_rate: FxRate | None
) -> Quote:
    """``quote_request`` for an order already read."""
    policy = latest_policy(session, merchant_id=order.merchant_id) or DEFAULT_POLICY
    priors = prior_refunds(session, merchant_id=order.merchant_id, order_id=order.order_id)
    return compute_quote(
        order=order, request=request, policy=policy, prior_refunds=priors, fx_rate=fx_rate
    )


def request_digest(request: RefundRequest, fx_rate: FxRate | None = None) -> str:
    # A request without a rate hashes as it always has; with one, the rate is part of it.
    rate = fx_rate.model_dump_json() if fx_rate else ""
    return hashlib.sha256((request.model_dump_json() + rate).encode()).hexdigest()


@dataclass(frozen=True)
class _ToStart:
    """The key is ours and no run has written its refund yet: start it with this quote."""

    order: OrderSnapshot
    quote: Quote


@dataclass(frozen=True)
class RefundStart:
    """One ``POST /v1/refunds``: who asks, for what, under which key."""

    merchant_id: str
    key: str
    request: RefundRequest
    fx_rate: FxRate | None = None

    @property
    def refund_id(self) -> str:
        return refund_id_for(self.merchant_id, self.key)

    @property
    def digest(self) -> str:
        return request_digest(self.request, self.fx_rate)


async def start_once(
    start: RefundStart, *, engine: Engine, temporal: Client, task_queue: str
) -> dict[str, Any]:
    """The 202 answer for ``start``: the refund the key names, started now if it is new.

    Raises the key's refusals (422 ``idempotency_key_reused``, 409 ``idempotency_in_flight``)
    and, for a new key only, the quote's (bad input, nothing left to refund)."""
    if not start.key or len(start.key) > IDEMPOTENCY_KEY_MAX_LENGTH:
        raise ApiError(
            400,
            "idempotency_key_required",
            f"send an Idempotency-Key header of 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} characters",
        )
    claimed = await asyncio.to_thread(_claim, start, engine)
    if not isinstance(claimed, _ToStart):
        return claimed
    inp = RefundWorkflowInput(
        refund_id=start.refund_id,
        merchant_id=start.merchant_id,
        order_id=claimed.order.order_id,
        request=start.request,
        fx_rate=start.fx_rate,
    )
    try:
        await start_refund(
            temporal,
            inp,
            order=claimed.order,
            task_queue=task_queue,
            requested_total=claimed.quote.total,
        )
    except WorkflowAlreadyStartedError:
        # The key's run exists and has closed without writing its refund (ended early):
        # the key still names it, so it is the answer.
        pass
    except RPCError:
        await asyncio.to_thread(_release, start, engine)
        raise
    answer = _first_answer(start, claimed)
    await asyncio.to_thread(_complete, start, engine, answer)
    return answer


def _claim(start: RefundStart, engine: Engine) -> dict[str, Any] | _ToStart:
    """One transaction: the key first, then the refund it may already name, then the quote.
    A quote that fails rolls the claim back with it, so bad input leaves nothing behind."""
    with session_scope(engine) as session:
        claim = claim_idempotency_key(
            session, merchant_id=start.merchant_id, key=start.key, request_hash=start.digest
        )
        if claim.outcome is not ClaimOutcome.NEW:
            return _answer_claim(claim)
        existing = session.get(RefundRow, start.refund_id)
        if existing is not None:
            # A first attempt started the run, which wrote its refund, but its answer was
            # never recorded (the API process died, or the claim was released).
            stored = RefundRequest.model_validate(existing.request)
            if request_digest(stored, start.fx_rate) != start.digest:
                raise ApiError(
                    422, "idempotency_key_reused", "this key was used for another request"
                )
            answer = api.RefundPublic.from_row(existing).model_dump(mode="json")
            _record(session, start, answer)
            return answer
        order = merchant_order(
            session, merchant_id=start.merchant_id, order_id=start.request.order_id
        )
        quote = quote_order(session, order=order, request=start.request, fx_rate=start.fx_rate)
        return _ToStart(order=order, quote=quote)


def _answer_claim(claim: IdempotencyClaim) -> dict[str, Any]:
    if claim.outcome is ClaimOutcome.MISMATCH:
        raise ApiError(422, "idempotency_key_reused", "this key was used for another request")
    if claim.outcome is ClaimOutcome.DONE and claim.response is not None:
        return claim.response
    raise ApiError(409, "idempotency_in_flight", "a request with this key is in progress")


def _first_answer(start: RefundStart, claimed: _ToStart) -> dict[str, Any]:
    now = datetime.now().astimezone()
    view = api.RefundPublic(
        refund_id=start.refund_id,
        workflow_id=workflow_id(start.refund_id),
        order_id=claimed.order.order_id,
        customer_id=claimed.order.customer_id,
        status="RECEIVED",
        reason=start.request.reason.value,
        currency=claimed.order.currency,
        total=claimed.quote.total,
        requested_by=start.request.requested_by,
        created_at=now,
        updated_at=now,
        quote=claimed.quote,
        quote_fingerprint=claimed.quote.fingerprint(),
    )
    return view.model_dump(mode="json")


def _record(session: Session, start: RefundStart, answer: dict[str, Any]) -> None:
    complete_idempotency_key(
        session,
        merchant_id=start.merchant_id,
        key=start.key,
        response=answer,
        refund_id=start.refund_id,
    )


def _complete(start: RefundStart, engine: Engine, answer: dict[str, Any]) -> None:
    with session_scope(engine) as session:
        _record(session, start, answer)


def _release(start: RefundStart, engine: Engine) -> None:
    with session_scope(engine) as session:
        release_idempotency_key(session, merchant_id=start.merchant_id, key=start.key)
