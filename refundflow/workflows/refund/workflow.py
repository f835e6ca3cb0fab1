"""RefundWorkflow: one durable run per refund, from the request until the customer has the money.

The run loop walks the stages (:mod:`.stages`, :mod:`.payouts`, :mod:`.follow_up`), handing over
to :mod:`.attention` while the refund needs ops, and continues as new when its history grows
long. Messages arrive as Updates: each validator asks :mod:`refundflow.domain.refusals`, so a
refused message changes nothing and its caller learns why. docs/architecture.md has the map.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from refundflow.activities.contracts import (
        ApprovalInput,
        DbStep,
        RefundWorkflowInput,
    )
    from refundflow.activities.refund import RefundActivities
    from refundflow.domain.refusals import (
        refusal_for_cancel,
        refusal_for_decision,
        refusal_for_ops,
        refusal_for_receipt,
        refusal_for_stage,
    )
    from refundflow.domain.states import (
        ApprovalDecision,
        ApprovalRecord,
        CancelRequest,
        CustomerConfirmation,
        MessageResult,
        OpsAction,
        PayoutEvent,
        ReceiptReport,
        RefundState,
        RefundStatus,
        Refusal,
        ReturnInspection,
        Stage,
        SupplierResponse,
    )

from refundflow.workflows.refund import stages
from refundflow.workflows.refund.attention import needs_attention
from refundflow.workflows.refund.effects import DB_STEP, Run
from refundflow.workflows.refund.follow_up import follow_up
from refundflow.workflows.refund.payouts import pay

_STAGES: dict[Stage, Callable[[Run], Awaitable[None]]] = {
    Stage.SUPPLIER: stages.supplier,
    Stage.APPROVAL: stages.approval,
    Stage.RETURN: stages.return_goods,
    Stage.CUSTOMER_CONFIRMATION: stages.customer_confirmation,
    Stage.PAYOUT: pay,
    Stage.FOLLOW_UP: follow_up,
}


def _refuse(refusal: Refusal | None) -> None:
    if refusal is not None:
        raise ApplicationError(refusal.message, type=refusal.code, non_retryable=True)


@workflow.defn(name="RefundWorkflow")
class RefundWorkflow:
    @workflow.init
    def __init__(self, inp: RefundWorkflowInput) -> None:
        self.refund = Run(inp)

    @property
    def state(self) -> RefundState:
        return self.refund.state

    @workflow.run
    async def run(self, inp: RefundWorkflowInput) -> RefundState:
        run = self.refund
        if run.loaded is None:
            await stages.review(run)  # a continued run was reviewed before it continued
        while run.state.stage is not Stage.DONE:
            if run.state.status is RefundStatus.NEEDS_ATTENTION:
                await needs_attention(run)
            else:
                await _STAGES[run.state.stage](run)
            if run.state.stage is not Stage.DONE and self._should_continue_as_new():
                await self._close()
                workflow.continue_as_new(
                    inp.model_copy(update={"state": run.state, "context": run.loaded})
                )
        await self._close()
        return run.state

    async def _close(self) -> None:
        """Before the run ends or continues as new: notices delivered, every Update answered
        (a message still in the inbox travels with the state)."""
        run = self.refund
        run.waiting = run.closing = True
        await run.delivered()
        await workflow.wait_condition(workflow.all_handlers_finished)

    def _should_continue_as_new(self) -> bool:
        info = workflow.info()
        limit = self.refund.inp.history_limit
        return info.is_continue_as_new_suggested() or (
            limit is not None and info.get_current_history_length() > limit
        )

    async def _answer(self, taken: Callable[[], bool], detail: str = "") -> MessageResult:
        """Answer once the run has acted on the message and waits on the world again, so the
        status is the one the message led to (not the one it found)."""
        run = self.refund
        await workflow.wait_condition(lambda: run.waiting and (taken() or run.closing))
        return MessageResult(accepted=True, status=self.state.status, detail=detail)

    # ---------------------------------------------------------------- approvals
    # The API authenticates the approver's key (role and merchant) at the moment of the
    # decision; the run checks what only it knows: who requested, which quote, who approved.
    @workflow.update
    async def decide(self, msg: ApprovalDecision) -> MessageResult:
        # Asked again: validators of racing Updates all ran before either handler did.
        _refuse(refusal_for_decision(self.state, msg))
        record = ApprovalRecord(
            approver_id=msg.approver_id,
            decision=msg.decision,
            quote_fingerprint=msg.quote_fingerprint,
            at=workflow.now(),
            comment=msg.comment,
        )
        self.state.approvals.append(record)  # before any await: a racing duplicate is refused
        approval = ApprovalInput(
            refund_id=self.state.refund_id, requested_by=self.state.requested_by, approval=record
        )
        if self.refund.batched:
            self.refund.write(DbStep(approval=approval))
        else:
            await workflow.execute_local_activity_method(
                RefundActivities.record_approval,
                approval,
                start_to_close_timeout=DB_STEP,
                summary=f"record {msg.decision.lower()} by {msg.approver_id}",
            )
        verb = "approved" if msg.decision == "APPROVE" else "rejected"
        await self.refund.record(
            "decision",
            f"{verb} by {msg.approver_id}: {msg.comment}".rstrip(": "),
            actor=msg.approver_id,
            data={
                "decision": msg.decision,
                "comment": msg.comment,
                "quote": record.quote_fingerprint,
            },
        )
        await self.refund.flush()  # the approval and its entry, whether the run wakes or not
        got = len(self.state.current_approvals())
        return await self._answer(lambda: True, f"{got}/{self.state.approvers_required} approvals")

    @decide.validator
    def _validate_decide(self, msg: ApprovalDecision) -> None:
        _refuse(refusal_for_decision(self.state, msg))

    # ------------------------------------------------------- stage messages
    @workflow.update
    async def supplier_response(self, msg: SupplierResponse) -> MessageResult:
        inbox = self.state.inbox
        inbox.supplier = msg
        return await self._answer(lambda: inbox.supplier is not msg)

    @supplier_response.validator
    def _validate_supplier(self, msg: SupplierResponse) -> None:
        _refuse(refusal_for_stage(self.state, Stage.SUPPLIER, "a supplier response"))

    @workflow.update
    async def return_inspection(self, msg: ReturnInspection) -> MessageResult:
        inbox = self.state.inbox
        inbox.inspection = msg
        return await self._answer(lambda: inbox.inspection is not msg)

    @return_inspection.validator
    def _validate_inspection(self, msg: ReturnInspection) -> None:
        _refuse(refusal_for_stage(self.state, Stage.RETURN, "a return inspection"))

    @workflow.update
    async def customer_confirmation(self, msg: CustomerConfirmation) -> MessageResult:
        inbox = self.state.inbox
        inbox.confirmation = msg
        return await self._answer(lambda: inbox.confirmation is not msg)

    @customer_confirmation.validator
    def _validate_confirmation(self, msg: CustomerConfirmation) -> None:
        _refuse(
            refusal_for_stage(self.state, Stage.CUSTOMER_CONFIRMATION, "a customer confirmation")
        )

    @workflow.update
    async def receipt(self, msg: ReceiptReport) -> MessageResult:
        inbox = self.state.inbox
        inbox.receipts.append(msg)
        return await self._answer(lambda: all(r is not msg for r in inbox.receipts))

    @receipt.validator
    def _validate_receipt(self, msg: ReceiptReport) -> None:
        _refuse(refusal_for_receipt(self.state))

    # -------------------------------------------------------------- cancel, ops
    @workflow.update
    async def cancel_refund(self, msg: CancelRequest) -> MessageResult:
        self.state.inbox.cancel = msg
        return await self._answer(lambda: self.state.stage is Stage.DONE)

    @cancel_refund.validator
    def _validate_cancel(self, msg: CancelRequest) -> None:
        _refuse(refusal_for_cancel(self.state))

    @workflow.update
    async def ops_action(self, msg: OpsAction) -> MessageResult:
        inbox = self.state.inbox
        if msg.action == "cancel":
            inbox.cancel = CancelRequest(requested_by=msg.actor, reason=msg.note)
            return await self._answer(lambda: self.state.stage is Stage.DONE, msg.action)
        if msg.action == "mark_settled" and self.state.status is not RefundStatus.NEEDS_ATTENTION:
            inbox.marks.append(msg)  # news for the payout stages, like a provider's event
            return await self._answer(lambda: all(m is not msg for m in inbox.marks), msg.action)
        inbox.ops = msg
        return await self._answer(lambda: inbox.ops is not msg, msg.action)

    @ops_action.validator
    def _validate_ops(self, msg: OpsAction) -> None:
        _refuse(refusal_for_ops(self.state, msg))

    # ---------------------------------------------------------------- providers
    # The one signal: webhooks from providers, relayed by the API after their signature is
    # verified. A signal, not an Update: a provider's delivery must never wait on the run.
    @workflow.signal
    def payout_event(self, event: PayoutEvent) -> None:
        self.state.inbox.events.append(event)

    @workflow.query
    def view(self) -> RefundState:
        return self.state
