"""Provider webhooks: verified in the provider's own scheme, deduplicated, then signalled."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from temporalio.service import RPCError, RPCStatusCode

from refundflow.api.deps import SessionDep, TemporalDep
from refundflow.api.errors import ApiError
from refundflow.db.repository import get_payout, get_refund, record_webhook_event
from refundflow.gateways.base import Gateway
from refundflow.workflows.client import workflow_id
from refundflow.workflows.refund import RefundWorkflow

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])


def _gateway(request: Request, provider: str) -> Gateway:
    gateways: dict[str, Gateway] = request.app.state.webhook_gateways
    gateway = gateways.get(provider)
    if gateway is None:
        raise ApiError(404, "not_found", f"no webhooks for provider {provider}")
    return gateway


@router.post("/{provider}", status_code=202)
async def webhook(
    provider: str, request: Request, session: SessionDep, temporal: TemporalDep
) -> dict[str, str]:
    """Signature first (a forged or stale call changes nothing), then our records (the payout
    must belong to this provider), then dedupe by event id, then the run is signalled."""
    body = await request.body()
    try:
        # Off the event loop: a first PayPal webhook fetches the signing certificate.
        gateway = _gateway(request, provider)
        event = await asyncio.to_thread(gateway.verify_webhook, dict(request.headers), body)
    except ValueError as exc:
        raise ApiError(401, "invalid_signature", str(exc)) from exc
    payout = get_payout(session, payout_key=event.payout_key)
    routes: dict[str, str] = getattr(request.app.state, "webhook_routes", {})
    if payout is not None and routes.get(payout.route, provider) != provider:
        raise ApiError(
            422, "webhook_mismatch", f"payout {payout.payout_key} is not paid through {provider}"
        )
    # The payout row may not exist yet (the provider answered faster than we recorded); the
    # refund id is the key's first part, and the run keeps the event until it knows the key.
    refund_id = payout.refund_id if payout else event.payout_key.rsplit(":", 2)[0]
    if payout is None and get_refund(session, refund_id=refund_id) is None:
        raise ApiError(422, "webhook_mismatch", f"no refund of ours has key {event.payout_key}")
    event_id = event.event_id or f"{event.payout_key}:{event.status.value}"
    if not record_webhook_event(
        session, provider=provider, event_id=event_id, payload=event.model_dump(mode="json")
    ):
        return {"status": "duplicate"}
    session.commit()
    handle = temporal.get_workflow_handle_for(RefundWorkflow.run, workflow_id(refund_id))
    try:
        await handle.signal(RefundWorkflow.payout_event, event)
    except RPCError as exc:
        if exc.status is not RPCStatusCode.NOT_FOUND:
            raise
        # The run has finished: the event is on record for ops, nothing is left to act on it.
        return {"status": "recorded"}
    return {"status": "accepted"}
