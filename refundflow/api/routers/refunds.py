"""Refunds: quote, start, read, and every message a running refund accepts."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import JSONResponse
from sqlmodel import col, select

from refundflow.api import examples, refund_messages
from refundflow.api import schemas as api
from refundflow.api.deps import (
    EngineDep,
    Principal,
    ReadSessionDep,
    RunsDep,
    SettingsDep,
    TemporalDep,
    require,
)
from refundflow.api.errors import ApiError
from refundflow.api.problems import AUTH, BODY, MESSAGE, QUOTE, REQUEST_INPUT, TEMPORAL, documented
from refundflow.api.refund_messages import (
    CANCELLERS,
    DECIDERS,
    INSPECTORS,
    READERS,
    REPAIRERS,
    SUPPLIER_ANSWERERS,
    own_refund,
)
from refundflow.api.refund_start import (
    IDEMPOTENCY_KEY_MAX_LENGTH,
    RefundStart,
    quote_request,
    refund_request,
    start_once,
)
from refundflow.db.models import RefundRow
from refundflow.domain.quote import Quote
from refundflow.domain.states import (
    CustomerConfirmation,
    ReceiptReport,
    SupplierResponse,
)
from refundflow.workflows.refund import RefundWorkflow

router = APIRouter(prefix="/v1/refunds", tags=["refunds"])

Client_ = Annotated[Principal, Depends(require("client"))]
Reader = Annotated[Principal, Depends(require(*READERS))]


@router.post(
    "/quote",
    response_model=Quote,
    responses=documented(*AUTH, *BODY, *REQUEST_INPUT, *QUOTE, answer=(200, examples.QUOTE)),
)
def quote_refund(body: api.RefundCreate, session: ReadSessionDep, principal: Client_) -> Quote:
    """What this refund would pay, line by line. Changes nothing."""
    request = refund_request(body, requested_by=principal.name)
    return quote_request(
        session, merchant_id=principal.merchant_id, request=request, fx_rate=body.fx_rate
    )


@router.post(
    "",
    status_code=202,
    response_model=api.RefundPublic,
    responses=documented(
        *AUTH,
        *BODY,
        *REQUEST_INPUT,
        *QUOTE,
        *TEMPORAL,
        "idempotency_key_required",
        "idempotency_key_reused",
        "idempotency_in_flight",
        "database_busy",
        answer=(202, examples.REFUND_PUBLIC),
    ),
)
async def create_refund(
    body: api.RefundCreate,
    engine: EngineDep,
    principal: Client_,
    temporal: TemporalDep,
    settings: SettingsDep,
    idempotency_key: Annotated[
        str,
        Header(
            min_length=1,
            max_length=IDEMPOTENCY_KEY_MAX_LENGTH,
            description="Names this refund: a retry with the same key and body answers the same"
            " refund; another body under the key is refused (422 `idempotency_key_reused`).",
        ),
    ],
) -> Any:
    """Start a refund. ``Idempotency-Key`` is required: the same key and body return the same
    refund; another body under the key is refused (422), as is a repeat still in flight (409)."""
    start = RefundStart(
        merchant_id=principal.merchant_id,
        key=idempotency_key,
        request=refund_request(body, requested_by=principal.name),
        fx_rate=body.fx_rate,
    )
    answer = await start_once(
        start, engine=engine, temporal=temporal, task_queue=settings.task_queue
    )
    return JSONResponse(answer, status_code=202)


@router.get(
    "/{refund_id}",
    response_model=api.RefundPublic,
    responses=documented(*AUTH, "not_found", answer=(200, examples.REFUND_PUBLIC)),
)
async def get_refund(
    refund_id: str, session: ReadSessionDep, principal: Reader, runs: RunsDep
) -> api.RefundPublic:
    """One refund: the stored row, and the run's view when it gives one in time (a finished
    refund's is its last)."""
    row = own_refund(session, principal, refund_id)
    return api.RefundPublic.from_row(row, await runs.view(refund_id, stored_status=row.status))


@router.get(
    "",
    response_model=api.RefundPage,
    responses=documented(
        *AUTH, "validation_error", "invalid_cursor", answer=(200, examples.REFUND_PAGE)
    ),
)
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
    return api.RefundPage(
        items=[api.RefundPublic.from_row(r) for r in rows], next_cursor=next_cursor
    )


def _encode_cursor(row: RefundRow) -> str:
    raw = json.dumps([row.created_at.isoformat(), row.refund_id])
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created, rid = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return datetime.fromisoformat(created), str(rid)
    except (ValueError, TypeError) as exc:
        raise ApiError(422, "invalid_cursor", "the cursor is not one this API returned") from exc


@router.post(
    "/{refund_id}/decisions",
    response_model=api.MessageOut,
    responses=documented(
        *MESSAGE,
        "self_approval",
        "outdated_quote",
        "repeated_approver",
        "approval_conflict",
        answer=(200, examples.MESSAGE_OUT),
    ),
)
async def decide(
    refund_id: str,
    body: api.DecisionIn,
    session: ReadSessionDep,
    principal: Annotated[Principal, Depends(require(*DECIDERS))],
    runs: RunsDep,
) -> api.MessageOut:
    """Approve or reject. The approver is the API key's owner; the answer is the workflow's."""
    return await refund_messages.decide(session, runs, principal, refund_id, body)


@router.post(
    "/{refund_id}/supplier-response",
    response_model=api.MessageOut,
    responses=documented(
        *MESSAGE, "negative_amount", "amount_too_large", answer=(200, examples.MESSAGE_OUT)
    ),
)
async def supplier_response(
    refund_id: str,
    body: api.SupplierResponseIn,
    session: ReadSessionDep,
    principal: Annotated[Principal, Depends(require(*SUPPLIER_ANSWERERS))],
    runs: RunsDep,
) -> api.MessageOut:
    """The supplier's answer on cancelling a presale order in production."""
    msg = SupplierResponse(**body.model_dump())
    return await refund_messages.answer_for_supplier(session, runs, principal, refund_id, msg)


@router.post(
    "/{refund_id}/return-inspection",
    response_model=api.MessageOut,
    responses=documented(
        *MESSAGE, "negative_amount", "amount_too_large", answer=(200, examples.MESSAGE_OUT)
    ),
)
async def return_inspection(
    refund_id: str,
    body: api.ReturnInspectionIn,
    session: ReadSessionDep,
    principal: Annotated[Principal, Depends(require(*INSPECTORS))],
    runs: RunsDep,
) -> api.MessageOut:
    """The warehouse received the goods; a deduction sends the refund back for approval."""
    return await refund_messages.inspect_return(session, runs, principal, refund_id, body)


@router.post(
    "/{refund_id}/customer-confirmation",
    response_model=api.MessageOut,
    responses=documented(*MESSAGE, answer=(200, examples.MESSAGE_OUT)),
)
async def customer_confirmation(
    refund_id: str,
    body: api.CustomerConfirmationIn,
    session: ReadSessionDep,
    principal: Client_,
    runs: RunsDep,
) -> api.MessageOut:
    """The customer confirms (or declines) the amount of a large refund."""
    own_refund(session, principal, refund_id)
    msg = CustomerConfirmation(**body.model_dump())
    return await runs.update(
        refund_id, RefundWorkflow.customer_confirmation, msg, actor=principal.name
    )


@router.post(
    "/{refund_id}/receipt",
    response_model=api.MessageOut,
    responses=documented(*MESSAGE, answer=(200, examples.MESSAGE_OUT)),
)
async def receipt(
    refund_id: str,
    body: api.ReceiptIn,
    session: ReadSessionDep,
    principal: Client_,
    runs: RunsDep,
) -> api.MessageOut:
    """The customer says the money arrived, or has not."""
    own_refund(session, principal, refund_id)
    msg = ReceiptReport(**body.model_dump())
    return await runs.update(refund_id, RefundWorkflow.receipt, msg, actor=principal.name)


@router.post(
    "/{refund_id}/cancel",
    response_model=api.MessageOut,
    responses=documented(*MESSAGE, "payout_already_sent", answer=(200, examples.MESSAGE_OUT)),
)
async def cancel(
    refund_id: str,
    body: api.CancelIn,
    session: ReadSessionDep,
    principal: Annotated[Principal, Depends(require(*CANCELLERS))],
    runs: RunsDep,
) -> api.MessageOut:
    """Cancel before any payout; releases the reserved amount."""
    return await refund_messages.cancel(session, runs, principal, refund_id, body)


@router.post(
    "/{refund_id}/ops-actions",
    response_model=api.MessageOut,
    responses=documented(
        *MESSAGE,
        "nothing_to_mark",
        "payout_needs_repair",
        "payout_outcome_unknown",
        "destination_required",
        "destination_incomplete",
        "unknown_currency",
        answer=(200, examples.MESSAGE_OUT),
    ),
)
async def ops_action(
    refund_id: str,
    body: api.OpsActionIn,
    session: ReadSessionDep,
    principal: Annotated[Principal, Depends(require(*REPAIRERS))],
    runs: RunsDep,
) -> api.MessageOut:
    """Resolve NEEDS_ATTENTION: retry_payout, switch_destination, mark_settled, cancel, resume."""
    return await refund_messages.repair(session, runs, principal, refund_id, body)
