"""Races and books: messages that meet a payout in flight, ops repairs, and what an Update
answers. Each test ends with the books checked: refund row, payout rows, reservations, ledger."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from refundflow.domain.states import (
    ApprovalDecision,
    CancelRequest,
    CustomerConfirmation,
    OpsAction,
    PayoutEvent,
    PayoutStatus,
    RefundState,
    RefundStatus,
    SupplierResponse,
)
from refundflow.workflows.refund import RefundWorkflow
from tests.db.conftest import db_url, postgres_problem  # noqa: F401  (fixtures)
from tests.workflows.conftest import Stack, histories_to_record, open_stack, payment
from tests.workflows.test_refund_paths import (
    decide,
    refused,
    view,
    wait_status,
    wait_until,
)

Handle = WorkflowHandle[RefundWorkflow, RefundState]


@pytest.fixture
async def stack(
    env: WorkflowEnvironment,
    tmp_path: Path,
    db_url: str,  # noqa: F811
) -> AsyncIterator[Stack]:
    """Here on SQLite and on PostgreSQL: the books must balance on both."""
    async with open_stack(env, tmp_path, database_url=db_url) as opened:
        yield opened
        folder = histories_to_record()
        if folder is not None and db_url.startswith("sqlite"):
            await opened.record_histories(folder)


async def current_details(handle: Handle) -> str:
    """The run's current details, as the Temporal UI reads them."""
    metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    return str(metadata.current_details)


def rid(stack: Stack, name: str) -> str:
    """Refund ids differ per database: both runs of a test share one Temporal server."""
    return f"{name}-{stack.engine.dialect.name}"


async def test_a_cancel_while_the_first_payout_is_being_retried_is_refused(stack: Stack) -> None:
    refund = rid(stack, "r-cx")
    # The provider is down for a while: send_payout keeps retrying a registered payout. It may
    # reach the provider at any attempt, so the refund can no longer promise to pay nothing.
    stack.sandbox.script(f"{refund}:1:1", ["transient"] * 12)
    handle = await stack.start(refund, await stack.order())
    await wait_until(stack, handle, lambda s: bool(s.payouts) and s.status is RefundStatus.PAYING)
    code = await refused(handle, RefundWorkflow.cancel_refund, CancelRequest(requested_by="desk-1"))
    assert code == "payout_already_sent"
    ops_cancel = OpsAction(actor="ops", action="cancel")
    assert await refused(handle, RefundWorkflow.ops_action, ops_cancel) == "payout_already_sent"
    result = await stack.finish(handle)
    assert result.status is RefundStatus.COMPLETED
    assert [r.payout_key for r in stack.sandbox.refunds(f"{refund}:")] == [f"{refund}:1:1"]
    stack.assert_books_balance(result)


async def test_ops_settle_a_tranche_that_failed_for_good(stack: Stack) -> None:
    refund = rid(stack, "r-fix")
    stack.policy({"on_permanent_failure": ["escalate"]})
    stack.sandbox.script(f"{refund}:1:1", [("permanent", "ACCOUNT_CLOSED")])
    handle = await stack.start(refund, await stack.order())
    state = await wait_status(stack, handle, RefundStatus.NEEDS_ATTENTION)
    assert [p.status for p in state.payouts] == [PayoutStatus.FAILED_PERMANENT]
    # Ops paid the customer by hand and say so.
    mark = OpsAction(actor="ops-1", action="mark_settled", reference="MANUAL-42")
    answer = await handle.execute_update(RefundWorkflow.ops_action, mark)
    result = await stack.finish(handle)
    assert [(p.status, p.code) for p in result.payouts] == [
        (PayoutStatus.SETTLED, "MARKED_SETTLED")
    ]
    assert [(p.status, p.provider_ref) for p in stack.payouts(refund)] == [("settled", "MANUAL-42")]
    assert [h.state for h in stack.reservations(refund)] == ["consumed"]
    assert stack.tender("p1").refunded == 4000
    stack.assert_books_balance(result)
    assert answer.status is RefundStatus.COMPLETED


async def _installments(stack: Stack, refund_id: str) -> Handle:
    """25,000.01 CNY in three tranches a week apart, approved and confirmed."""
    order = await stack.order(
        lines=[{"line_id": "l1", "sku": "PIANO", "quantity": 1, "unit_price": 2500001}],
        payments=[payment("p1", "wechat", 2500001, await stack.now())],
    )
    handle = await stack.start(refund_id, order)
    await wait_status(stack, handle, RefundStatus.AWAITING_APPROVAL)
    await decide(handle, "alice")
    await decide(handle, "bob")
    await wait_status(stack, handle, RefundStatus.AWAITING_CUSTOMER)
    await handle.execute_update(
        RefundWorkflow.customer_confirmation, CustomerConfirmation(confirmed=True)
    )
    return handle


async def test_a_settlement_is_applied_while_the_next_installment_waits(stack: Stack) -> None:
    refund = rid(stack, "r-i1")
    stack.sandbox.default_settlement("never")
    handle = await _installments(stack, refund)
    await wait_until(stack, handle, lambda s: s.payouts[0].status is PayoutStatus.ACCEPTED)
    await handle.signal(
        RefundWorkflow.payout_event,
        PayoutEvent(payout_key=f"{refund}:1:1", status=PayoutStatus.SETTLED, event_id="w1"),
    )
    state = await wait_until(stack, handle, lambda s: s.payouts[0].status is PayoutStatus.SETTLED)
    assert state.status is RefundStatus.PAYING and state.payouts[1].sent_at is None
    assert stack.payouts(refund)[0].status == "settled"
    assert "payout_settled" in [t.kind for t in state.timeline]
    # What the Temporal UI shows as the run's current details says so too.
    details = await current_details(handle)
    assert "payouts settled 1/3" in details
    assert "installment 2 due" in details and "waiting for installment 2 of 3 due at" in details


async def test_ops_settling_an_unknown_installment_leaves_the_rest_to_the_run(
    stack: Stack,
) -> None:
    refund = rid(stack, "r-i2")
    # The first installment's outcome stays unknown for a day: escalated.
    stack.sandbox.script(f"{refund}:1:1", ["transient"] * 200)
    handle = await _installments(stack, refund)
    await wait_status(stack, handle, RefundStatus.NEEDS_ATTENTION, limit=3000)
    mark = OpsAction(actor="ops", action="mark_settled", reference="BANK-STATEMENT-7")
    answer = await handle.execute_update(RefundWorkflow.ops_action, mark)
    # Installments 2 and 3 were never sent: the run pays them, under their own keys.
    assert answer.status is RefundStatus.PAYING
    result = await stack.finish(handle)
    assert result.status is RefundStatus.COMPLETED
    assert [(p.key, p.status.value, p.code == "MARKED_SETTLED") for p in result.payouts] == [
        (f"{refund}:1:1", "settled", True),
        (f"{refund}:2:1", "settled", False),
        (f"{refund}:3:1", "settled", False),
    ]
    assert [r.payout_key for r in stack.sandbox.refunds(f"{refund}:")] == [
        f"{refund}:2:1",
        f"{refund}:3:1",
    ]
    stack.assert_books_balance(result)


async def test_an_update_answers_the_status_its_message_led_to(stack: Stack) -> None:
    refund = rid(stack, "r-ans")
    now = await stack.now()
    order = await stack.order(
        status="PAID",
        delivered_at=None,
        presale={
            "supplier_ref": "factory-9",
            "expected_ship_date": (now.date().replace(year=now.year + 1)).isoformat(),
            "production_starts_on": now.date().isoformat(),
        },
    )
    handle = await stack.start(refund, order, reason="PRESALE_CANCEL")
    await wait_status(stack, handle, RefundStatus.AWAITING_SUPPLIER)
    answer = await handle.execute_update(
        RefundWorkflow.supplier_response,
        SupplierResponse(supplier_ref="factory-9", can_cancel=True, cancellation_fee=500),
    )
    assert answer.status is RefundStatus.AWAITING_APPROVAL
    state = await view(handle)
    decision = ApprovalDecision(
        approver_id="carol", decision="APPROVE", quote_fingerprint=state.fingerprint
    )
    answer = await handle.execute_update(RefundWorkflow.decide, decision)
    assert answer.status in (RefundStatus.PAYING, RefundStatus.AWAITING_FUNDS)
    assert answer.detail == "1/1 approvals"
    timeline = {t.kind: t.message for t in (await view(handle)).timeline}
    kinds = list(timeline)
    assert kinds.index("supplier_answered") < kinds.index("requoted") < kinds.index("decision")
    # Every decision on the timeline with its numbers.
    assert timeline["supplier_answered"] == "supplier factory-9 can cancel, fee CN¥5.00"
    assert timeline["requoted"] == "total CN¥40.00 -> CN¥35.00 (cancellation fee)"
    assert timeline["decision"] == "approved by carol"
    result = await stack.finish(handle)
    stack.assert_books_balance(result)
