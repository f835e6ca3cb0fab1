"""Request and response models of the HTTP API.

Request models forbid unknown fields: a client can never set ``status``, ``approved_by``,
``requested_by`` or amounts it does not own. Who acts comes from the API key.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from refundflow.api import examples
from refundflow.api.examples import schema_examples
from refundflow.db.models import RefundRow
from refundflow.db.personal import mask_document
from refundflow.domain.money import FxRate
from refundflow.domain.orders import OrderSnapshotBody, RefundRequestBody
from refundflow.domain.quote import Quote
from refundflow.domain.states import (
    ApprovalDecisionBody,
    CancelRequestBody,
    CustomerConfirmation,
    OpsActionBody,
    ReceiptReport,
    RefundState,
    ReturnInspectionBody,
    SupplierResponse,
)
from refundflow.workflows.client import workflow_id


class _Out(BaseModel):
    # Field docstrings are the OpenAPI document's field descriptions.
    model_config = ConfigDict(use_attribute_docstrings=True)


class ProblemError(_Out):
    """One failed check of a request's input."""

    loc: str
    """Where: ``body.items.0.quantity``, ``query.limit``, ``header.idempotency-key``."""
    type: str
    """The check that failed (a stable code where there is one, e.g. ``negative_quantity``)."""
    msg: str
    """What is wrong, for people."""


class Problem(_Out):
    """An error (RFC 9457 problem details). Branch on ``code``: it never changes; ``title``
    and ``detail`` are for people and may."""

    type: str
    """A URI naming the problem type: ``https://refundflow.dev/problems/<code>``."""
    title: str
    """What the code means, in short."""
    status: int
    """The HTTP status, repeated."""
    code: str
    """The stable, machine-readable code (listed per route in this document)."""
    detail: str
    """What went wrong with this request."""
    errors: list[ProblemError] | None = None
    """Every failed input check, for ``validation_error``, ``unknown_field`` and the input
    codes."""
    request_id: str | None = None
    """For ``internal_error``: the ``X-Request-ID`` to quote when reporting it."""


class OrderUpsert(OrderSnapshotBody):
    """An order snapshot as the shop sees it; the merchant comes from the API key, the order id
    from the path."""

    model_config = ConfigDict(json_schema_extra=schema_examples(examples.ORDER))


class TenderPublic(_Out):
    payment_id: str
    """The order's payment."""
    captured: int
    """Captured. In minor units of the order currency."""
    reserved: int
    """Held by refunds in progress. In minor units of the order currency."""
    refunded: int
    """Paid back. In minor units of the order currency."""


class OrderPublic(_Out):
    order: dict[str, Any]
    """The stored snapshot, with its order and merchant ids."""
    tenders: list[TenderPublic]
    """Per payment: what is captured, reserved by refunds in progress, and refunded."""


class RefundCreate(RefundRequestBody):
    """A refund as the client asks for it; who asks is the API key's owner."""

    model_config = ConfigDict(json_schema_extra=schema_examples(examples.REFUND))

    fx_rate: FxRate | None = None
    """The rate a payout in another currency than the order's (a bank account in another
    currency) is converted at, with its source (the policy's ``fx_rate_source``) and time."""


class RefundPublic(_Out):
    refund_id: str
    """The refund's id, derived from the merchant and the Idempotency-Key."""
    workflow_id: str
    """The refund's Temporal workflow id."""
    order_id: str
    """The order refunded."""
    customer_id: str
    """The order's customer."""
    status: str
    """Where the refund is (RECEIVED, UNDER_REVIEW, AWAITING_APPROVAL, ..., COMPLETED, REJECTED,
    CANCELLED)."""
    reason: str
    """The request's reason."""
    currency: str
    """The order's currency (ISO 4217)."""
    total: int
    """What the refund pays. In minor units of the order currency."""
    requested_by: str
    """The name of the API key that asked."""
    created_at: datetime
    """When the refund was created."""
    updated_at: datetime
    """When it last changed."""
    quote: Quote | None = None
    """The quote, line by line (absent for a refund rejected before it had one)."""
    quote_fingerprint: str | None = None
    """What an approver's decision names, so it can only approve the amount they saw."""
    live: dict[str, Any] | None = None
    """The running workflow's own view (approvals, payouts, timeline), when it answers; the
    customer's details in it masked."""
    customer: dict[str, str] | None = None
    """The customer's email, phone, bank account number and holder, masked (``****8877``);
    ops and admins reveal one with ``POST /v1/refunds/{id}/personal-data``."""
    personal_data_erased_at: datetime | None = None
    """When retention erased the customer's details (amounts and the audit trail stay)."""

    @classmethod
    def from_row(cls, row: RefundRow, live: RefundState | None = None) -> RefundPublic:
        quote = Quote.model_validate(row.quote) if row.quote else None
        return cls(
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
            live=mask_document(live.model_dump(mode="json")) if live else None,
            customer=row.personal_masked or None,
            personal_data_erased_at=row.personal_erased_at,
        )


class RefundPage(_Out):
    items: list[RefundPublic]
    """Refunds, newest first."""
    next_cursor: str | None
    """Pass as ``cursor`` for the next page; null on the last."""


class DecisionIn(ApprovalDecisionBody):
    """An approver's decision on the quote they saw; the approver is the API key's owner."""

    model_config = ConfigDict(json_schema_extra=schema_examples(examples.DECISION))


class SupplierResponseIn(SupplierResponse):
    """The supplier's answer on cancelling a presale order in production."""

    model_config = ConfigDict(json_schema_extra=schema_examples(examples.SUPPLIER_RESPONSE))


class ReturnInspectionIn(ReturnInspectionBody):
    """The warehouse's inspection of returned goods; the inspector is the API key's owner."""

    model_config = ConfigDict(json_schema_extra=schema_examples(examples.RETURN_INSPECTION))


class CustomerConfirmationIn(CustomerConfirmation):
    """The customer's word on the amount of a large refund."""

    model_config = ConfigDict(json_schema_extra=schema_examples(examples.CUSTOMER_CONFIRMATION))


class ReceiptIn(ReceiptReport):
    """The customer's word on whether the money arrived."""

    model_config = ConfigDict(json_schema_extra=schema_examples(examples.RECEIPT))


class CancelIn(CancelRequestBody):
    """A cancel before any payout; who asks is the API key's owner."""

    model_config = ConfigDict(json_schema_extra=schema_examples(examples.CANCEL))


class OpsActionIn(OpsActionBody):
    """An ops repair of a refund that needs attention; who acts is the API key's owner."""

    model_config = ConfigDict(json_schema_extra=schema_examples(examples.OPS_ACTION))


class MessageOut(_Out):
    accepted: bool
    """Whether the run accepted the message (a refusal answers a problem instead)."""
    status: str
    """The refund's status the message led to."""
    detail: str = ""
    """What the run did, in words."""
