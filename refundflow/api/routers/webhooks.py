"""Provider webhooks: verified in the provider's own scheme, handed to the run, then recorded.

Delivery to the run is at least once: an event is recorded (and later copies answered
``duplicate``) only after its run has it, so when the hand-over fails the provider's retry
hands it over again. The run applies a repeated event once."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from sqlalchemy import Engine

from refundflow.api import examples
from refundflow.api.deps import EngineDep, ReadSessionDep, RunsDep
from refundflow.api.errors import ApiError
from refundflow.api.problems import TEMPORAL, documented
from refundflow.db.engine import session_scope
from refundflow.db.repository import (
    get_payout,
    record_webhook_event,
    webhook_event_recorded,
)
from refundflow.domain.states import PayoutEvent
from refundflow.gateways.base import Gateway

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])


def _gateway(request: Request, provider: str) -> Gateway:
    gateways: dict[str, Gateway] = request.app.state.webhook_gateways
    gateway = gateways.get(provider)
    if gateway is None:
        raise ApiError(404, "not_found", f"no webhooks for provider {provider}")
    return gateway


@router.post(
    "/{provider}",
    status_code=202,
    responses=documented(
        *TEMPORAL,
        "body_too_large",
        "invalid_signature",
        "not_found",
        "webhook_mismatch",
        answer=(202, examples.WEBHOOK),
    ),
)
async def webhook(
    provider: str, request: Request, session: ReadSessionDep, engine: EngineDep, runs: RunsDep
) -> dict[str, str]:
    """Signature first (a forged or stale call changes nothing), then our records (the payout
    must be ours and paid through this provider), then the run gets the event, then the event
    id is recorded.
    503 when the run could not get it: nothing is recorded, and the provider retries."""
    body = await request.body()
    try:
        # Off the event loop: a first PayPal webhook fetches the signing certificate.
        gateway = _gateway(request, provider)
        event = await asyncio.to_thread(gateway.verify_webhook, dict(request.headers), body)
    except ValueError as exc:
        raise ApiError(401, "invalid_signature", str(exc)) from exc
    # A payout's key is registered before it is sent, so a provider can only know keys we
    # have: an event about any other key is not about our money, however well signed.
    payout = get_payout(session, payout_key=event.payout_key)
    if payout is None:
        raise ApiError(422, "webhook_mismatch", f"no payout of ours has key {event.payout_key}")
    routes: dict[str, str] = getattr(request.app.state, "webhook_routes", {})
    if routes.get(payout.route, provider) != provider:
        raise ApiError(
            422, "webhook_mismatch", f"payout {payout.payout_key} is not paid through {provider}"
        )
    refund_id = payout.refund_id
    event_id = event.event_id or f"{event.payout_key}:{event.status.value}"
    if webhook_event_recorded(session, provider=provider, event_id=event_id):
        return {"status": "duplicate"}
    # Raises (503 when Temporal is unreachable) before anything is recorded.
    delivered = await runs.payout_event(refund_id, event)
    # Its own short transaction, after the signal: on SQLite a writer holds the database's
    # write lock, which must not wait on a call to Temporal. Off the event loop: waiting for
    # that lock must not stop every other request (the lock's holder among them).
    first = await asyncio.to_thread(_record, engine, provider, event_id, event)
    if not first:
        return {"status": "duplicate"}  # a concurrent copy was recorded first; both signalled
    # Not delivered: the run has finished; the event stays on record for ops.
    return {"status": "accepted" if delivered else "recorded"}


def _record(engine: Engine, provider: str, event_id: str, event: PayoutEvent) -> bool:
    """Record the event id; False if it was on record already."""
    with session_scope(engine) as writer:
        return record_webhook_event(
            writer, provider=provider, event_id=event_id, payload=event.model_dump(mode="json")
        )
