"""Who may send which message to a running refund, and the sending itself: one place for the
HTTP API's routers and the web console, so both check the same roles and scope and both go
through the run's own Update (its validator is the only judge of whether a message applies)."""

from __future__ import annotations

from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from refundflow.api import schemas as api
from refundflow.api.deps import Principal
from refundflow.api.errors import ApiError
from refundflow.api.runs import RefundRuns
from refundflow.db.models import ApprovalRow, RefundRow
from refundflow.domain.states import (
    ApprovalDecision,
    ApprovalDecisionBody,
    CancelRequest,
    CancelRequestBody,
    OpsAction,
    OpsActionBody,
    ReturnInspection,
    ReturnInspectionBody,
    SupplierResponse,
)
from refundflow.workflows.refund import RefundWorkflow

READERS = ("client", "approver", "warehouse", "ops")
"""Roles that read refunds (admin reads too: it is admitted everywhere)."""
DECIDERS = ("approver",)
SUPPLIER_ANSWERERS = ("warehouse", "ops")
INSPECTORS = ("warehouse",)
CANCELLERS = ("client", "ops")
REPAIRERS = ("ops",)
REPORT_READERS = ("ops", "approver")


def admitted(principal: Principal, roles: tuple[str, ...]) -> bool:
    """The API's rule: one of ``roles``, or admin."""
    return principal.role == "admin" or principal.role in roles


def own_refund(session: Session, principal: Principal, refund_id: str) -> RefundRow:
    """The refund, if it is the caller's merchant's; another merchant's is not found (404), so
    a key never learns that it exists."""
    row = session.get(RefundRow, refund_id)
    if row is None or row.merchant_id != principal.merchant_id:
        raise ApiError(404, "not_found", f"no refund {refund_id}")
    return row


def awaiting_decision(
    session: Session, principal: Principal, *, limit: int | None = None, offset: int = 0
) -> list[RefundRow]:
    """Refunds waiting for the caller's decision, oldest first: not their own, not yet decided
    by them."""
    stmt = awaiting_query(principal).order_by(col(RefundRow.created_at), col(RefundRow.refund_id))
    if limit is not None:
        stmt = stmt.offset(offset).limit(limit)
    return list(session.exec(stmt).all())


def awaiting_query(principal: Principal) -> SelectOfScalar[RefundRow]:
    decided = select(ApprovalRow.refund_id).where(ApprovalRow.approver_id == principal.name)
    return select(RefundRow).where(
        RefundRow.merchant_id == principal.merchant_id,
        RefundRow.status == "AWAITING_APPROVAL",
        RefundRow.requested_by != principal.name,
        col(RefundRow.refund_id).not_in(decided),
    )


async def decide(
    session: Session,
    runs: RefundRuns,
    principal: Principal,
    refund_id: str,
    body: ApprovalDecisionBody,
) -> api.MessageOut:
    """Approve or reject the quote named by its fingerprint; the approver is the key's owner."""
    own_refund(session, principal, refund_id)
    msg = ApprovalDecision(approver_id=principal.name, **body.model_dump())
    return await runs.update(refund_id, RefundWorkflow.decide, msg, actor=principal.name)


async def answer_for_supplier(
    session: Session, runs: RefundRuns, principal: Principal, refund_id: str, msg: SupplierResponse
) -> api.MessageOut:
    own_refund(session, principal, refund_id)
    return await runs.update(refund_id, RefundWorkflow.supplier_response, msg, actor=principal.name)


async def inspect_return(
    session: Session,
    runs: RefundRuns,
    principal: Principal,
    refund_id: str,
    body: ReturnInspectionBody,
) -> api.MessageOut:
    own_refund(session, principal, refund_id)
    msg = ReturnInspection(inspector_id=principal.name, **body.model_dump())
    return await runs.update(refund_id, RefundWorkflow.return_inspection, msg, actor=principal.name)


async def cancel(
    session: Session,
    runs: RefundRuns,
    principal: Principal,
    refund_id: str,
    body: CancelRequestBody,
) -> api.MessageOut:
    own_refund(session, principal, refund_id)
    msg = CancelRequest(requested_by=principal.name, reason=body.reason)
    return await runs.update(refund_id, RefundWorkflow.cancel_refund, msg, actor=principal.name)


async def repair(
    session: Session, runs: RefundRuns, principal: Principal, refund_id: str, body: OpsActionBody
) -> api.MessageOut:
    """An ops repair of a refund that needs attention; who acts is the key's owner."""
    own_refund(session, principal, refund_id)
    msg = OpsAction(actor=principal.name, **body.model_dump())
    return await runs.update(refund_id, RefundWorkflow.ops_action, msg, actor=principal.name)
