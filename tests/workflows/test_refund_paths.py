"""One test per path of RefundWorkflow, each checking the database, the timeline, the outbox
and the payouts, not only the final status. Time-skipping server, real activities, SQLite."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from refundflow.domain.states import (
    ApprovalDecision,
    CancelRequest,
    CustomerConfirmation,
    OpsAction,
    ReceiptReport,
    RefundState,
    RefundStatus,
    ReturnInspection,
    SupplierResponse,
)
from refundflow.workflows.refund import RefundWorkflow
from tests.workflows.conftest import Stack, payment

Handle = WorkflowHandle[RefundWorkflow, RefundState]


async def view(handle: Handle) -> RefundState:
    return await handle.query(RefundWorkflow.view)


async def wait_status(
    stack: Stack, handle: Handle, status: RefundStatus, limit: int = 60
) -> RefundState:
    """Let the workflow run (skipping time) until it reaches ``status``."""
    for _ in range(limit):
        state = await view(handle)
        if state.status is status:
            return state
        await stack.env.sleep(timedelta(minutes=1))
    raise AssertionError(f"still {state.status}, expected {status}")


async def wait_until(
    stack: Stack, handle: Handle, check: Callable[[RefundState], bool], limit: int = 120
) -> RefundState:
    for _ in range(limit):
        state = await view(handle)
        if check(state):
            return state
        await stack.env.sleep(timedelta(minutes=1))
    raise AssertionError(f"condition not reached; status {state.status}")


def kinds(state: RefundState) -> list[str]:
    return [e.kind for e in state.timeline]


async def decide(
    handle: Handle, approver: str, decision: str = "APPROVE", comment: str = ""
) -> None:
    state = await view(handle)
    await handle.execute_update(
        RefundWorkflow.decide,
        ApprovalDecision(
            approver_id=approver,
            decision=decision,
            quote_fingerprint=state.fingerprint,
            comment=comment,
        ),
    )


async def refused(handle: Handle, update: object, msg: object) -> str:
    with pytest.raises(WorkflowUpdateFailedError) as err:
        await handle.execute_update(update, msg)  # type: ignore[call-overload]
    cause = err.value.cause
    assert isinstance(cause, ApplicationError)
    return cause.type or ""


# ------------------------------------------------------------------------ review and payout


async def test_auto_approved_full_refund(stack: Stack) -> None:
    order = await stack.order()
    handle = await stack.start(
        "r-auto", order, items=[{"line_id": "l1", "quantity": 2}, {"line_id": "l2", "quantity": 1}]
    )
    result = await stack.finish(handle)
    assert result.status is RefundStatus.COMPLETED
    assert result.quote is not None and result.quote.total == 10000
    assert kinds(result)[:3] == ["review_started", "accepted", "payout_started"]
    assert "payout_sent" in kinds(result) and "payout_settled" in kinds(result)
    row = stack.refund("r-auto")
    assert (row.status, row.total) == ("COMPLETED", 10000)
    [payout] = stack.payouts("r-auto")
    assert (payout.payout_key, payout.status, payout.amount) == ("r-auto:1:1", "settled", 10000)
    assert [r.payout_key for r in stack.sandbox.refunds("r-auto:")] == ["r-auto:1:1"]
    tender = stack.tender("p1")
    assert (tender.reserved, tender.refunded) == (0, 10000)
    assert stack.templates("r-auto") == [
        "refund_accepted",
        "payout_sent",
        "refund_completed",
        "feedback_request",
    ]
    sent = stack.outbox("r-auto", "customer")[1]
    assert sent.locale == "zh-CN" and sent.payload["expected_by"] >= sent.payload["expected_from"]
    assert "completed" in stack.audit_kinds("r-auto")


async def test_partial_items(stack: Stack) -> None:
    order = await stack.order()
    handle = await stack.start("r-part", order, items=[{"line_id": "l1", "quantity": 1}])
    result = await stack.finish(handle)
    assert result.status is RefundStatus.COMPLETED
    assert result.quote is not None and result.quote.total == 4000
    assert [p.amount for p in stack.payouts("r-part")] == [4000]
    tender = stack.tender("p1")
    assert (tender.reserved, tender.refunded, tender.captured) == (0, 4000, 10000)
    # The rest of the order stays refundable: a second refund of the other unit works.
    second = await stack.finish(
        await stack.start("r-part-2", order, items=[{"line_id": "l1", "quantity": 1}])
    )
    assert second.status is RefundStatus.COMPLETED, second.timeline[-1]
    assert second.quote is not None and second.quote.total == 4000
    assert stack.tender("p1").refunded == 8000


async def test_rejection_with_reason(stack: Stack) -> None:
    now = await stack.now()
    order = await stack.order(delivered_at=(now - timedelta(days=20)).isoformat())
    handle = await stack.start("r-late", order, reason="CHANGED_MIND")
    result = await stack.finish(handle)
    assert result.status is RefundStatus.REJECTED
    assert "OUTSIDE_WINDOW" in result.timeline[-1].data["reasons"]
    assert stack.refund("r-late").status == "REJECTED"
    assert stack.reservations("r-late") == [] and stack.payouts("r-late") == []
    [note] = stack.outbox("r-late", "customer")
    assert note.template == "refund_rejected" and note.locale == "zh-CN"
    # The window the customer missed, in words, in each language the notice may be sent in.
    assert note.payload["text"]["zh-CN"].startswith("该原因的退款申请期限为 7 天")
    assert note.payload["text"]["en"].startswith("The refund window for this reason is 7 days")
    assert stack.tender("p1").reserved == 0


# ------------------------------------------------------------------------------- approvals


async def _needs_one_approval(stack: Stack, refund_id: str) -> Handle:
    order = await stack.order(
        lines=[{"line_id": "l1", "sku": "TV", "quantity": 1, "unit_price": 300000}],
        payments=[payment("p1", "card", 300000, await stack.now())],
    )
    handle = await stack.start(refund_id, order)
    state = await wait_status(stack, handle, RefundStatus.AWAITING_APPROVAL)
    assert state.approvers_required == 1
    return handle


async def test_one_approver_approves(stack: Stack) -> None:
    handle = await _needs_one_approval(stack, "r-one")
    assert stack.templates("r-one", "approver") == ["approval_requested"]
    await decide(handle, "alice", comment="ok")
    result = await stack.finish(handle)
    assert result.status is RefundStatus.COMPLETED
    assert [(a.approver_id, a.decision) for a in result.approvals] == [("alice", "APPROVE")]
    assert "refund_approved" in stack.templates("r-one")
    assert stack.payouts("r-one")[0].status == "settled"


async def test_approver_rejects(stack: Stack) -> None:
    handle = await _needs_one_approval(stack, "r-no")
    await decide(handle, "bob", "REJECT", comment="photos show no damage")
    result = await stack.finish(handle)
    assert result.status is RefundStatus.REJECTED
    # The decision's own entry and the stage's "rejected" may land in either order.
    (rejected,) = [t for t in result.timeline if t.kind == "rejected"]
    assert rejected.message == "rejected by bob"
    (decision,) = [t for t in result.timeline if t.kind == "decision"]
    assert decision.message == "rejected by bob: photos show no damage"
    assert stack.refund("r-no").status == "REJECTED"
    assert [r.state for r in stack.reservations("r-no")] == ["released"]
    assert stack.tender("p1").reserved == 0
    assert stack.payouts("r-no") == []
    assert stack.templates("r-no")[-1] == "refund_rejected"


async def test_large_refund_needs_two_different_approvers(stack: Stack) -> None:
    order = await stack.order(
        lines=[{"line_id": "l1", "sku": "SOFA", "quantity": 1, "unit_price": 900000}],
        payments=[payment("p1", "card", 900000, await stack.now())],
    )
    handle = await stack.start("r-big", order, requested_by="alice")
    state = await wait_status(stack, handle, RefundStatus.AWAITING_APPROVAL)
    assert state.approvers_required == 2 and "large" in state.tags

    fp = state.fingerprint
    self_approval = ApprovalDecision(approver_id="alice", decision="APPROVE", quote_fingerprint=fp)
    assert await refused(handle, RefundWorkflow.decide, self_approval) == "self_approval"
    stale = ApprovalDecision(approver_id="bob", decision="APPROVE", quote_fingerprint="0" * 32)
    assert await refused(handle, RefundWorkflow.decide, stale) == "outdated_quote"

    await decide(handle, "bob")
    again = ApprovalDecision(approver_id="bob", decision="APPROVE", quote_fingerprint=fp)
    assert await refused(handle, RefundWorkflow.decide, again) == "repeated_approver"
    # Refused messages change nothing: still one approval of two.
    state = await view(handle)
    assert state.status is RefundStatus.AWAITING_APPROVAL
    assert [a.approver_id for a in state.approvals] == ["bob"]
    assert stack.audit_kinds("r-big").count("decision") == 1

    await decide(handle, "carol")
    state = await wait_status(stack, handle, RefundStatus.AWAITING_CUSTOMER)
    assert sorted(a.approver_id for a in state.current_approvals()) == ["bob", "carol"]
    await handle.execute_update(
        RefundWorkflow.customer_confirmation, CustomerConfirmation(confirmed=True)
    )
    result = await stack.finish(handle)
    assert result.status is RefundStatus.COMPLETED


async def test_approval_reminder_escalation_and_ops_resume(stack: Stack) -> None:
    handle = await _needs_one_approval(stack, "r-sla")
    await stack.env.sleep(timedelta(hours=25))
    assert stack.templates("r-sla", "approver") == ["approval_requested", "approval_reminder"]
    state = await wait_status(stack, handle, RefundStatus.NEEDS_ATTENTION, limit=5000)
    assert "escalated" in state.tags and "72 hours" in state.escalation_reason
    assert stack.refund("r-sla").status == "NEEDS_ATTENTION"
    assert stack.templates("r-sla", "ops") == ["escalation"]
    await handle.execute_update(
        RefundWorkflow.ops_action, OpsAction(actor="ops-1", action="resume", note="chased finance")
    )
    state = await view(handle)
    assert state.status is RefundStatus.AWAITING_APPROVAL
    await decide(handle, "carol")
    result = await stack.finish(handle)
    assert result.status is RefundStatus.COMPLETED
    assert "resumed" in kinds(result)


# --------------------------------------------------------------------------------- presale


async def _presale_order(stack: Stack, production_starts_in_days: int) -> object:
    now = await stack.now()
    return await stack.order(
        status="PAID",
        delivered_at=None,
        presale={
            "supplier_ref": "factory-9",
            "expected_ship_date": (now + timedelta(days=30)).date().isoformat(),
            "production_starts_on": (now + timedelta(days=production_starts_in_days))
            .date()
            .isoformat(),
        },
    )


async def test_presale_before_production_needs_no_supplier(stack: Stack) -> None:
    order = await _presale_order(stack, production_starts_in_days=10)
    handle = await stack.start("r-pre", order, reason="PRESALE_CANCEL")  # type: ignore[arg-type]
    result = await stack.finish(handle)
    assert result.status is RefundStatus.COMPLETED
    assert "supplier_asked" not in kinds(result)
    assert stack.outbox("r-pre", "supplier") == []


async def test_presale_in_production_with_cancellation_fee(stack: Stack) -> None:
    order = await _presale_order(stack, production_starts_in_days=-3)
    handle = await stack.start("r-fee", order, reason="PRESALE_CANCEL")  # type: ignore[arg-type]
    state = await wait_status(stack, handle, RefundStatus.AWAITING_SUPPLIER)
    assert "presale" in state.tags
    assert [r.template for r in stack.outbox("r-fee", "supplier")] == ["presale_cancel_request"]
    await handle.execute_update(
        RefundWorkflow.supplier_response,
        SupplierResponse(
            supplier_ref="factory-9", can_cancel=True, cancellation_fee=500, note="materials cut"
        ),
    )
    # Cancelling in production is a judgement call: one approver signs off on the new amount.
    state = await wait_status(stack, handle, RefundStatus.AWAITING_APPROVAL)
    assert state.quote is not None and state.quote.total == 3500
    await decide(handle, "carol")
    result = await stack.finish(handle)
    assert result.status is RefundStatus.COMPLETED
    assert result.quote is not None and result.quote.total == 4000 - 500
    assert [d.kind for d in result.quote.deductions] == ["presale_cancellation_fee"]
    assert stack.refund("r-fee").total == 3500
    assert [p.amount for p in stack.payouts("r-fee")] == [3500]
    assert stack.tender("p1").refunded == 3500


async def test_presale_supplier_refuses_escalates(stack: Stack) -> None:
    order = await _presale_order(stack, production_starts_in_days=-1)
    handle = await stack.start("r-sup-no", order, reason="PRESALE_CANCEL")  # type: ignore[arg-type]
    await wait_status(stack, handle, RefundStatus.AWAITING_SUPPLIER)
    await handle.execute_update(
        RefundWorkflow.supplier_response,
        SupplierResponse(supplier_ref="factory-9", can_cancel=False, note="already shipped to us"),
    )
    state = await wait_status(stack, handle, RefundStatus.NEEDS_ATTENTION)
    assert "already shipped to us" in state.escalation_reason
    assert stack.refund("r-sup-no").status == "NEEDS_ATTENTION"
    await handle.execute_update(
        RefundWorkflow.ops_action,
        OpsAction(actor="ops", action="cancel", note="customer keeps order"),
    )
    result = await stack.finish(handle)
    assert result.status is RefundStatus.CANCELLED
    assert stack.tender("p1").reserved == 0


async def test_presale_supplier_silent_past_deadline(stack: Stack) -> None:
    order = await _presale_order(stack, production_starts_in_days=-1)
    handle = await stack.start("r-sup-silent", order, reason="PRESALE_CANCEL")  # type: ignore[arg-type]
    await wait_status(stack, handle, RefundStatus.AWAITING_SUPPLIER)
    await stack.env.sleep(timedelta(hours=49))
    state = await wait_status(stack, handle, RefundStatus.NEEDS_ATTENTION)
    assert "48 hours" in state.escalation_reason
    assert stack.templates("r-sup-silent", "ops") == ["escalation"]


# ---------------------------------------------------------------------------------- returns


async def test_return_with_clean_inspection(stack: Stack) -> None:
    order = await stack.order()
    handle = await stack.start("r-ret", order, reason="NOT_AS_DESCRIBED")
    state = await wait_status(stack, handle, RefundStatus.AWAITING_RETURN)
    assert "return_instructions" in stack.templates("r-ret")
    early = await refused(
        handle, RefundWorkflow.customer_confirmation, CustomerConfirmation(confirmed=True)
    )
    assert early == "wrong_state"
    await handle.execute_update(
        RefundWorkflow.return_inspection, ReturnInspection(inspector_id="wh-1")
    )
    result = await stack.finish(handle)
    assert result.status is RefundStatus.COMPLETED
    assert result.quote is not None and result.quote.total == state.quote.total  # type: ignore[union-attr]


async def test_return_with_damage_deduction_goes_back_to_approval(stack: Stack) -> None:
    order = await stack.order()
    handle = await stack.start("r-dmg", order, reason="NOT_AS_DESCRIBED")
    before = await wait_status(stack, handle, RefundStatus.AWAITING_RETURN)
    await handle.execute_update(
        RefundWorkflow.return_inspection,
        ReturnInspection(
            inspector_id="wh-1", condition="DAMAGED", deduction=1500, note="cracked handle"
        ),
    )
    state = await wait_status(stack, handle, RefundStatus.AWAITING_APPROVAL)
    assert state.quote is not None and before.quote is not None
    assert state.quote.total == before.quote.total - 1500
    assert state.fingerprint != before.fingerprint
    # An approval of the old quote is refused.
    old = ApprovalDecision(
        approver_id="bob", decision="APPROVE", quote_fingerprint=before.fingerprint
    )
    assert await refused(handle, RefundWorkflow.decide, old) == "outdated_quote"
    await decide(handle, "bob", comment="deduction is fair")
    result = await stack.finish(handle)
    assert result.status is RefundStatus.COMPLETED
    messages = [(t.kind, t.message) for t in result.timeline]
    assert ("return_inspected", "goods back, damaged, deduction CN¥15.00: cracked handle") in (
        messages
    )
    assert ("requoted", "total CN¥40.00 -> CN¥25.00 (inspection deduction; back to approval)") in (
        messages
    )
    # An approver's comment is on the timeline once, with their decision.
    assert [m for _, m in messages if "deduction is fair" in m] == [
        "approved by bob: deduction is fair"
    ]
    assert stack.refund("r-dmg").total == state.quote.total
    assert [p.amount for p in stack.payouts("r-dmg")] == [state.quote.total]


async def test_return_deadline_passed_cancels(stack: Stack) -> None:
    order = await stack.order()
    handle = await stack.start("r-noret", order, reason="NOT_AS_DESCRIBED")
    await wait_status(stack, handle, RefundStatus.AWAITING_RETURN)
    await stack.env.sleep(timedelta(days=15))
    result = await stack.finish(handle)
    assert result.status is RefundStatus.CANCELLED
    assert stack.templates("r-noret")[-1] == "refund_cancelled_no_return"
    assert stack.tender("p1").reserved == 0 and stack.payouts("r-noret") == []


# -------------------------------------------------------------------------------- cancel


async def test_cancel_before_payout(stack: Stack) -> None:
    order = await stack.order()
    handle = await stack.start("r-cancel", order, reason="NOT_AS_DESCRIBED")
    await wait_status(stack, handle, RefundStatus.AWAITING_RETURN)
    await handle.execute_update(
        RefundWorkflow.cancel_refund,
        CancelRequest(requested_by="desk-1", reason="customer changed their mind"),
    )
    result = await stack.finish(handle)
    assert result.status is RefundStatus.CANCELLED
    assert [r.state for r in stack.reservations("r-cancel")] == ["released"]
    assert stack.tender("p1").reserved == 0
    assert stack.templates("r-cancel")[-1] == "refund_cancelled"


async def test_cancel_after_payout_is_refused(stack: Stack) -> None:
    stack.sandbox.default_settlement("never")
    order = await stack.order()
    handle = await stack.start("r-late-cancel", order)
    await wait_status(stack, handle, RefundStatus.AWAITING_FUNDS)
    code = await refused(handle, RefundWorkflow.cancel_refund, CancelRequest(requested_by="desk-1"))
    assert code == "payout_already_sent"
    assert (await view(handle)).status is RefundStatus.AWAITING_FUNDS
    stack.sandbox.settle("r-late-cancel:1:1")
    await handle.execute_update(RefundWorkflow.receipt, ReceiptReport(received=True))
    result = await stack.finish(handle)
    assert result.status is RefundStatus.COMPLETED
    assert stack.tender("p1").refunded == 4000
