"""Refunds: quote, start, read, and every message a running refund accepts."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import JSONResponse
from sqlmodel import Session, col, select
from temporalio.service import RPCError

from refundflow.activities.contracts import RefundWorkflowInput
from refundflow.api import schemas as api
from refundflow.api.deps import (
    Principal,
    ReadSessionDep,
    RunsDep,
    SessionDep,
    SettingsDep,
    TemporalDep,
    require,
)
from refundflow.api.errors import ApiError
from refundflow.db.models import RefundRow
from refundflow.db.repository import (
    ClaimOutcome,
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
from refundflow.domain.states import (
    ApprovalDecision,
    CancelRequest,
    CustomerConfirmation,
    OpsAction,
    ReceiptReport,
    RefundState,
    ReturnInspection,
    SupplierResponse,
)
from refundflow.workflows.client import refund_id_for, start_refund, workflow_id
from refundflow.workflows.refund import RefundWorkflow

router = APIRouter(prefix="/v1/refunds", tags=["refunds"])

Client_ = Annotated[Principal, Depends(require("client"))]
Reader = Annotated[Principal, Depends(require("client", "approver", "warehouse", "ops"))]


def _order(session: Session, principal: Principal, order_id: str) -> OrderSnapshot:
    order = get_order(session, merchant_id=principal.merchant_id, order_id=order_id)
    if order is None:
        raise ApiError(404, "not_found", f"no order {order_id}")
    return order


def _request(body: api.RefundCreate, principal: Principal) -> RefundRequest:
    fields = body.model_dump(mode="json", exclude={"fx_rate"})
    return RefundRequest.parse({**fields, "requested_by": principal.name})


def _quote(
    session: Session, principal: Principal, request: RefundRequest, fx_rate: FxRate | None
) -> Quote:
    order = _order(session, principal, request.order_id)
    policy = latest_policy(session, merchant_id=principal.merchant_id) or DEFAULT_POLICY
    priors = prior_refunds(session, merchant_id=principal.merchant_id, order_id=order.order_id)
    return compute_quote(
        order=order, request=request, policy=policy, prior_refunds=priors, fx_rate=fx_rate
    )


@router.post("/quote", response_model=Quote)
def quote_refund(body: api.RefundCreate, session: ReadSessionDep, principal: Client_) -> Quote:
    """What this refund would pay, line by line. Changes nothing."""
    return _quote(session, principal, _request(body, principal), body.fx_rate)


@router.post("", status_code=202, response_model=api.RefundPublic)
async def create_refund(
    body: api.RefundCreate,
    session: SessionDep,
    principal: Client_,
    temporal: TemporalDep,
    settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> Any:
    """Start a refund. ``Idempotency-Key`` is required: the same key and body return the same
    refund; another body under the key is refused (422), as is a repeat still in flight (409)."""
    if not idempotency_key or len(idempotency_key) > 200:
        raise ApiError(400, "idempotency_key_required", "send an Idempotency-Key header")
    request = _request(body, principal)
    quote = _quote(session, principal, request, body.fx_rate)  # bad input fails here, first
    order = _order(session, principal, request.order_id)
    # A request without a rate hashes as it always has; with one, the rate is part of it.
    rate = body.fx_rate.model_dump_json() if body.fx_rate else ""
    digest = hashlib.sha256((request.model_dump_json() + rate).encode()).hexdigest()
    claim = claim_idempotency_key(
        session, merchant_id=principal.merchant_id, key=idempotency_key, request_hash=digest
    )
    session.commit()
    if claim.outcome is ClaimOutcome.DONE and claim.response is not None:
        return JSONResponse(claim.response, status_code=202)
    if claim.outcome is ClaimOutcome.MISMATCH:
        raise ApiError(422, "idempotency_key_reused", "this key was used for another request")
    if claim.outcome is ClaimOutcome.IN_FLIGHT:
        raise ApiError(409, "idempotency_in_flight", "a request with this key is in progress")
    refund_id = refund_id_for(principal.merchant_id, idempotency_key)
    inp = RefundWorkflowInput(
        refund_id=refund_id,
        merchant_id=principal.merchant_id,
        order_id=order.order_id,
        request=request,
        fx_rate=body.fx_rate,
    )
    try:
        await start_refund(
            temporal, inp, order=order, task_queue=settings.task_queue, requested_total=quote.total
        )
    except RPCError:
        release_idempotency_key(session, merchant_id=principal.merchant_id, key=idempotency_key)
        session.commit()
        raise
    view = api.RefundPublic(
        refund_id=refund_id,
        workflow_id=workflow_id(refund_id),
        order_id=order.order_id,
        customer_id=order.customer_id,
        status="RECEIVED",
        reason=request.reason.value,
        currency=order.currency,
        total=quote.total,
        requested_by=request.requested_by,
        created_at=datetime.now().astimezone(),
        updated_at=datetime.now().astimezone(),
        quote=quote,
        quote_fingerprint=quote.fingerprint(),
    )
    response = view.model_dump(mode="json")
    complete_idempotency_key(
        session,
        merchant_id=principal.merchant_id,
        key=idempotency_key,
        response=response,
        refund_id=refund_id,
    )
    session.commit()
    return JSONResponse(response, status_code=202)


def _row(session: Session, principal: Principal, refund_id: str) -> RefundRow:
    row = session.get(RefundRow, refund_id)
    if row is None or row.merchant_id != principal.merchant_id:
        raise ApiError(404, "not_found", f"no refund {refund_id}")
    return row


def _public(row: RefundRow, live: RefundState | None = None) -> api.RefundPublic:
    quote = Quote.model_validate(row.quote) if row.quote else None
    return api.RefundPublic(
        refund_id=row.refund_id,
        workflow_id=workflow_id(row.refund_id),
        order_id=row.order_id,
        customer_id=row.customer_id,
        status=live.status.value if live else row.status,
        reason=row.reason,
        currency=row.currency,
        total=row.total,
        requested_by=row.requested_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
        quote=quote,
        quote_fingerprint=quote.fingerprint() if quote else None,
        live=live.model_dump(mode="json") if live else None,
    )


@router.get("/{refund_id}", response_model=api.RefundPublic)
async def get_refund(
    refund_id: str, session: ReadSessionDep, principal: Reader, runs: RunsDep
) -> api.RefundPublic:
    """One refund: the stored row, and the run's view when it gives one in time (a finished
    refund's is its last)."""
    row = _row(session, principal, refund_id)
    return _public(row, await runs.view(refund_id, stored_status=row.status))


@router.get("", response_model=api.RefundPage)
def list_refunds(
    session: ReadSessionDep,
    principal: Reader,
    status: str | None = None,
    order_id: str | None = None,
    customer_id: str | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> api.RefundPage:
    """Refunds of the caller's merchant, newest first, with cursor paging."""
    stmt = select(RefundRow).where(RefundRow.merchant_id == principal.merchant_id)
    for column, value in (
        (RefundRow.status, status),
        (RefundRow.order_id, order_id),
        (RefundRow.customer_id, customer_id),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    if cursor:
        created, rid = _decode_cursor(cursor)
        stmt = stmt.where(
            (col(RefundRow.created_at) < created)
            | ((col(RefundRow.created_at) == created) & (col(RefundRow.refund_id) < rid))
        )
    stmt = stmt.order_by(col(RefundRow.created_at).desc(), col(RefundRow.refund_id).desc())
    rows = list(session.exec(stmt.limit(limit + 1)).all())
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = _encode_cursor(rows[-1]) if more else None
    return api.RefundPage(items=[_public(r) for r in rows], next_cursor=next_cursor)


def _encode_cursor(row: RefundRow) -> str:
    raw = json.dumps([row.created_at.isoformat(), row.refund_id])
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created, rid = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return datetime.fromisoformat(created), str(rid)
    except (ValueError, TypeError) as exc:
        raise ApiError(422, "invalid_cursor", "the cursor is not one this API returned") from exc


@router.post("/{refund_id}/decisions", response_model=api.MessageOut)
async def decide(
    refund_id: str,
    body: api.DecisionIn,
    session: ReadSessionDep,
    principal: Annotated[Principal, Depends(require("approver"))],
    runs: RunsDep,
) -> api.MessageOut:
    """Approve or reject. The approver is the API key's owner; the answer is the workflow's."""
    _row(session, principal, refund_id)
    msg = ApprovalDecision(approver_id=principal.name, **body.model_dump())
    return await runs.update(refund_id, RefundWorkflow.decide, msg, actor=principal.name)


@router.post("/{refund_id}/supplier-response", response_model=api.MessageOut)
async def supplier_response(
    refund_id: str,
    body: api.SupplierResponseIn,
    session: ReadSessionDep,
    principal: Annotated[Principal, Depends(require("warehouse", "ops"))],
    runs: RunsDep,
) -> api.MessageOut:
    """The supplier's answer on cancelling a presale order in production."""
    _row(session, principal, refund_id)
    msg = SupplierResponse(**body.model_dump())
    return await runs.update(refund_id, RefundWorkflow.supplier_response, msg, actor=principal.name)


@router.post("/{refund_id}/return-inspection", response_model=api.MessageOut)
async def return_inspection(
    refund_id: str,
    body: api.ReturnInspectionIn,
    session: ReadSessionDep,
    principal: Annotated[Principal, Depends(require("warehouse"))],
    runs: RunsDep,
) -> api.MessageOut:
    """The warehouse received the goods; a deduction sends the refund back for approval."""
    _row(session, principal, refund_id)
    msg = ReturnInspection(inspector_id=principal.name, **body.model_dump())
    return await runs.update(refund_id, RefundWorkflow.return_inspection, msg, actor=principal.name)


@router.post("/{refund_id}/customer-confirmation", response_model=api.MessageOut)
async def customer_confirmation(
    refund_id: str,
    body: api.CustomerConfirmationIn,
    session: ReadSessionDep,
    principal: Client_,
    runs: RunsDep,
) -> api.MessageOut:
    """The customer confirms (or declines) the amount of a large refund."""
    _row(session, principal, refund_id)
    msg = CustomerConfirmation(**body.model_dump())
    return await runs.update(
        refund_id, RefundWorkflow.customer_confirmation, msg, actor=principal.name
    )


@router.post("/{refund_id}/receipt", response_model=api.MessageOut)
async def receipt(
    refund_id: str,
    body: api.ReceiptIn,
    session: ReadSessionDep,
    principal: Client_,
    runs: RunsDep,
) -> api.MessageOut:
    """The customer says the money arrived, or has not."""
    _row(session, principal, refund_id)
    msg = ReceiptReport(**body.model_dump())
    return await runs.update(refund_id, RefundWorkflow.receipt, msg, actor=principal.name)


@router.post("/{refund_id}/cancel", response_model=api.MessageOut)
async def cancel(
    refund_id: str,
    body: api.CancelIn,
    session: ReadSessionDep,
    principal: Annotated[Principal, Depends(require("client", "ops"))],
    runs: RunsDep,
) -> api.MessageOut:
    """Cancel before any payout; releases the reserved amount."""
    _row(session, principal, refund_id)
    msg = CancelRequest(requested_by=principal.name, reason=body.reason)
    return await runs.update(refund_id, RefundWorkflow.cancel_refund, msg, actor=principal.name)


@router.post("/{refund_id}/ops-actions", response_model=api.MessageOut)
async def ops_action(
    refund_id: str,
    body: api.OpsActionIn,
    session: ReadSessionDep,
    principal: Annotated[Principal, Depends(require("ops"))],
    runs: RunsDep,
) -> api.MessageOut:
    """Resolve NEEDS_ATTENTION: retry_payout, switch_destination, mark_settled, cancel, resume."""
    _row(session, principal, refund_id)
    msg = OpsAction(actor=principal.name, **body.model_dump())
    return await runs.update(refund_id, RefundWorkflow.ops_action, msg, actor=principal.name)
