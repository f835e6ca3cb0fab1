"""Starting and finding refund runs from outside a workflow (API, CLI, tests)."""

from __future__ import annotations

import hashlib
import json

from temporalio.client import Client, WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)

from refundflow.activities.contracts import RefundWorkflowInput
from refundflow.domain.money import format_minor
from refundflow.domain.orders import OrderSnapshot
from refundflow.domain.states import RefundState, RefundStatus
from refundflow.workflows import search_attributes as sa
from refundflow.workflows.refund import RefundWorkflow


def refund_id_for(merchant_id: str, idempotency_key: str) -> str:
    """The refund a client's ``Idempotency-Key`` names: derived, never stored first, so even a
    crash between starting the run and answering cannot fork a second refund.

    The hash is over the pair encoded as a JSON array, so no merchant id and key can be
    joined into another pair's input (a plain ``merchant:key`` could: ``a:b`` + ``c`` and
    ``a`` + ``b:c``)."""
    seed = json.dumps([merchant_id, idempotency_key], ensure_ascii=True).encode()
    return "rf_" + hashlib.sha256(seed).hexdigest()[:20]


def workflow_id(refund_id: str) -> str:
    """Derived from the refund id only: a retried start finds the same run (no PII in ids)."""
    return f"refund-{refund_id}"


def _summary(inp: RefundWorkflowInput, order: OrderSnapshot) -> tuple[str, str]:
    req = inp.request
    what = (
        ", ".join(f"{i.line_id} x{i.quantity}" for i in req.items)
        or f"goodwill {format_minor(req.goodwill_amount or 0, order.currency)}"
    )
    summary = f"Refund {inp.refund_id}: order {order.order_id}, {req.reason.value}"
    details = "\n".join(
        [
            f"**Refund** `{inp.refund_id}` for order `{order.order_id}` "
            f"(merchant `{order.merchant_id}`, channel `{order.channel}`)",
            f"- reason: {req.reason.value}",
            f"- items: {what}",
            f"- destination: {req.destination.kind.value}",
            f"- requested by: {req.requested_by}",
        ]
    )
    return summary, details


async def start_refund(
    client: Client,
    inp: RefundWorkflowInput,
    *,
    order: OrderSnapshot,
    task_queue: str,
    requested_total: int = 0,
) -> WorkflowHandle[RefundWorkflow, RefundState]:
    """Start the run for a refund, or return the running one: starting twice never forks."""
    summary, details = _summary(inp, order)
    attributes = TypedSearchAttributes(
        [
            SearchAttributePair(sa.REFUND_STATUS, RefundStatus.RECEIVED.value),
            SearchAttributePair(sa.REFUND_ORDER_ID, order.order_id),
            SearchAttributePair(sa.REFUND_MERCHANT, order.merchant_id),
            SearchAttributePair(sa.REFUND_CHANNEL, order.channel),
            SearchAttributePair(sa.REFUND_AMOUNT, requested_total),
            SearchAttributePair(sa.REFUND_CURRENCY, order.currency),
            SearchAttributePair(sa.REFUND_TAGS, []),
        ]
    )
    return await client.start_workflow(
        RefundWorkflow.run,
        inp,
        id=workflow_id(inp.refund_id),
        task_queue=task_queue,
        search_attributes=attributes,
        static_summary=summary,
        static_details=details,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
