"""Revealing a refund's customer details in full: ops and admins only, each time recorded in
the audit trail with who and why (refundflow.db.repo_personal). Answers are masked everywhere
else; this is the one way to a full number over HTTP (the web console calls it)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from refundflow.api.deps import Principal, SessionDep, require
from refundflow.api.errors import ApiError
from refundflow.api.examples import schema_examples
from refundflow.api.problems import AUTH, BODY, documented
from refundflow.crypto import Keyring
from refundflow.db.models import RefundRow
from refundflow.db.repo_personal import PersonalField
from refundflow.db.repository import reveal_personal

router = APIRouter(prefix="/v1/refunds", tags=["customer data"])

_EXAMPLE = {"refund_id": "rf_0123456789abcdef0123", "field": "account_number", "value": "622202"}


class RevealIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        use_attribute_docstrings=True,
        json_schema_extra=schema_examples(
            {"field": "account_number", "reason": "the customer asked on the phone"}
        ),
    )

    field: PersonalField
    """Which detail: email, phone, account_number or holder_name."""
    reason: Annotated[str, Field(min_length=3, max_length=500)]
    """Why it is needed (kept in the audit trail with who asked)."""


class RevealOut(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    refund_id: str
    """The refund."""
    field: PersonalField
    """Which detail was revealed."""
    value: str
    """The full value. Not cached (``Cache-Control: no-store``)."""


def _keyring(request: Request) -> Keyring:
    keyring: Keyring | None = getattr(request.app.state, "keyring", None)
    if keyring is None:
        raise ApiError(503, "encryption_unavailable", "this API has no encryption keys")
    return keyring


@router.post(
    "/{refund_id}/personal-data",
    response_model=RevealOut,
    responses=documented(
        *AUTH,
        *BODY,
        "not_found",
        "personal_data_absent",
        "personal_data_erased",
        "encryption_unavailable",
        answer=(200, _EXAMPLE),
    ),
)
def reveal(
    refund_id: str,
    body: RevealIn,
    session: SessionDep,
    principal: Annotated[Principal, Depends(require("ops"))],
    keyring: Annotated[Keyring, Depends(_keyring)],
    response: Response,
) -> RevealOut:
    """One of the customer's details in full, for ops and admins; the audit trail records who
    saw which detail and why (never the value)."""
    row = session.get(RefundRow, refund_id)
    if row is None or row.merchant_id != principal.merchant_id:
        raise ApiError(404, "not_found", f"no refund {refund_id}")
    value = reveal_personal(
        session,
        refund_id=refund_id,
        field=body.field,
        actor=principal.name,
        reason=body.reason,
        keyring=keyring,
    )
    session.commit()
    response.headers["Cache-Control"] = "no-store"
    return RevealOut(refund_id=refund_id, field=body.field, value=value)
