"""The order of a refund's stages and which of them a refund needs.

Review decides the plan once (``RefundState.supplier_check``, ``approvers_required``, ...); these
rules walk it. Workflow code calls them, so a change here is a change of workflow code
(docs/architecture.md, "Versioning").
"""

from __future__ import annotations

from refundflow.domain.states import RefundState, Stage

STAGE_ORDER = (
    Stage.SUPPLIER,
    Stage.APPROVAL,
    Stage.RETURN,
    Stage.CUSTOMER_CONFIRMATION,
    Stage.PAYOUT,
    Stage.FOLLOW_UP,
)


def stage_needed(state: RefundState, stage: Stage) -> bool:
    return {
        Stage.SUPPLIER: state.supplier_check,
        Stage.APPROVAL: state.approvers_required > 0,
        Stage.RETURN: state.return_required,
        Stage.CUSTOMER_CONFIRMATION: state.customer_confirmation,
        Stage.PAYOUT: True,
        Stage.FOLLOW_UP: True,
    }[stage]


def next_stage(state: RefundState) -> Stage:
    """The first needed stage not completed yet, in order; ``DONE`` when none is left."""
    for stage in STAGE_ORDER:
        if stage not in state.completed_stages and stage_needed(state, stage):
            return stage
    return Stage.DONE
