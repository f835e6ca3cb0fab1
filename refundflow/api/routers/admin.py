"""The approver inbox, policies and reports."""

from __future__ import annotations

import csv
import io
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends
from fastapi.responses import PlainTextResponse
from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlmodel import col

from refundflow.api import examples
from refundflow.api.deps import Principal, ReadSessionDep, SessionDep, require
from refundflow.api.errors import ApiError
from refundflow.api.problems import AUTH, BODY, documented
from refundflow.api.refund_messages import DECIDERS, REPORT_READERS, awaiting_decision
from refundflow.api.schemas import RefundPublic
from refundflow.db.models import RefundRow
from refundflow.db.repository import latest_policy, save_policy
from refundflow.domain.policy import DEFAULT_POLICY, Policy

router = APIRouter(tags=["approvals", "policies", "reports"])


@router.get(
    "/v1/approvals",
    response_model=list[RefundPublic],
    responses=documented(*AUTH, answer=(200, [examples.REFUND_PUBLIC])),
)
def approval_inbox(
    session: ReadSessionDep, principal: Annotated[Principal, Depends(require(*DECIDERS))]
) -> list[RefundPublic]:
    """Refunds waiting for the caller's decision: not their own, not yet decided by them."""
    return [RefundPublic.from_row(r) for r in awaiting_decision(session, principal)]


def _own(principal: Principal, merchant_id: str) -> None:
    if merchant_id != principal.merchant_id:
        raise ApiError(404, "not_found", f"no merchant {merchant_id}")


@router.get(
    "/v1/policies/{merchant_id}",
    responses=documented(*AUTH, "not_found", answer=(200, examples.POLICY)),
)
def get_policy(
    merchant_id: str,
    session: SessionDep,
    principal: Annotated[Principal, Depends(require("client", "approver", "ops"))],
) -> dict[str, Any]:
    """The merchant's current policy (the built-in default until one is saved)."""
    _own(principal, merchant_id)
    policy = latest_policy(session, merchant_id=merchant_id) or DEFAULT_POLICY
    return policy.model_dump(mode="json")


@router.put(
    "/v1/policies/{merchant_id}",
    responses=documented(
        *AUTH,
        *BODY,
        "not_found",
        "policy_invalid",
        "policy_version_exists",
        "invalid_threshold_order",
        "unknown_currency",
        "database_busy",
        answer=(200, examples.POLICY),
    ),
)
def put_policy(
    merchant_id: str,
    session: SessionDep,
    principal: Annotated[Principal, Depends(require("admin"))],
    document: Annotated[dict[str, Any], Body(examples=[examples.POLICY_CHANGE])],
) -> dict[str, Any]:
    """Save a new policy version; refunds record the version they were decided under."""
    _own(principal, merchant_id)
    current = latest_policy(session, merchant_id=merchant_id)
    version = (current.version + 1) if current else 1
    policy = Policy.parse({**document, "version": version})
    save_policy(session, merchant_id=merchant_id, policy=policy)
    session.commit()
    return policy.model_dump(mode="json")


@router.get(
    "/v1/reports/refunds",
    response_model=None,
    responses=documented(*AUTH, "validation_error", answer=(200, examples.REPORT)),
)
def report(
    session: ReadSessionDep,
    principal: Annotated[Principal, Depends(require(*REPORT_READERS))],
    format: str = "json",
) -> Any:
    """Counts and amounts by status, currency and reason (``?format=csv`` for a sheet)."""
    stmt = (
        sa_select(
            col(RefundRow.status),
            col(RefundRow.currency),
            col(RefundRow.reason),
            func.count(),
            func.sum(col(RefundRow.total)),
        )
        .where(col(RefundRow.merchant_id) == principal.merchant_id)
        .group_by(col(RefundRow.status), col(RefundRow.currency), col(RefundRow.reason))
        .order_by(col(RefundRow.status), col(RefundRow.currency), col(RefundRow.reason))
    )
    rows = [
        {"status": s, "currency": c, "reason": r, "count": n, "amount": int(total or 0)}
        for s, c, r, n, total in session.execute(stmt).all()
    ]
    if format == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=["status", "currency", "reason", "count", "amount"])
        writer.writeheader()
        writer.writerows(rows)
        return PlainTextResponse(out.getvalue(), media_type="text/csv")
    return {"rows": rows}
