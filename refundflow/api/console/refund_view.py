"""Everything the refund page shows: the quote line by line, evidence, why it needs approval,
approvals so far, the timeline, and the buttons this key may press now. Which buttons is asked
of the run's own rules (:mod:`refundflow.domain.refusals`) on the run's own view, so the page
offers what the run would accept; pressing one still goes to the run, which has the last word."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel import Session

from refundflow.api.console.queries import audit_trail
from refundflow.api.console.web import Visit
from refundflow.api.deps import Principal
from refundflow.api.refund_messages import (
    CANCELLERS,
    DECIDERS,
    INSPECTORS,
    REPAIRERS,
    SUPPLIER_ANSWERERS,
    admitted,
)
from refundflow.api.runs import RefundRuns
from refundflow.db.models import RefundRow
from refundflow.db.repository import get_policy
from refundflow.domain.orders import Destination, DestinationKind
from refundflow.domain.policy import DEFAULT_POLICY, Policy
from refundflow.domain.quote import Quote
from refundflow.domain.refusals import refusal_for_cancel, refusal_for_ops
from refundflow.domain.states import (
    ApprovalRecord,
    OpsAction,
    OpsActionKind,
    RefundState,
    RefundStatus,
)
from refundflow.workflows.client import workflow_id

OPS_ACTIONS: tuple[OpsActionKind, ...] = (
    "retry_payout",
    "switch_destination",
    "mark_settled",
    "resume",
    "cancel",
)
FALLBACKS = (DestinationKind.BANK_TRANSFER, DestinationKind.BALANCE)


@dataclass(frozen=True)
class Moment:
    at: datetime
    kind: str
    message: str
    actor: str


@dataclass
class RefundPage:
    row: RefundRow
    live: RefundState | None
    quote: Quote | None
    fingerprint: str
    policy: Policy
    request: dict[str, Any]
    timeline: list[Moment]
    approvals: list[ApprovalRecord] = field(default_factory=list)
    needs: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    """Why a person must approve: (text key, values)."""
    can_decide: bool = False
    decide_blocked: str = ""
    """Why an approver sees no buttons (their own request, already approved): a text key."""
    ops_actions: list[OpsActionKind] = field(default_factory=list)
    can_inspect: bool = False
    can_answer_supplier: bool = False
    run_url: str | None = None

    @property
    def status(self) -> str:
        return self.live.status.value if self.live else self.row.status

    @property
    def bank_account(self) -> str | None:
        account = (self.request.get("destination") or {}).get("bank_account") or {}
        return account.get("account_number")


async def build(v: Visit, session: Session, runs: RefundRuns, row: RefundRow) -> RefundPage:
    live = await runs.view(row.refund_id, stored_status=row.status)
    quote = live.quote if live and live.quote else Quote.model_validate(row.quote)
    policy = (
        get_policy(session, merchant_id=row.merchant_id, version=row.policy_version)
        or DEFAULT_POLICY
    )
    built = RefundPage(
        row=row,
        live=live,
        quote=quote,
        fingerprint=quote.fingerprint(),
        policy=policy,
        request=row.request,
        timeline=_timeline(session, row, live),
        approvals=list(live.approvals) if live else [],
        run_url=_run_url(v, runs, row.refund_id),
    )
    built.needs = _needs(built)
    assert v.principal is not None
    _decision_buttons(built, v.principal)
    _other_buttons(built, v.principal)
    return built


def _timeline(session: Session, row: RefundRow, live: RefundState | None) -> list[Moment]:
    if live is not None:
        return [Moment(e.at, e.kind, e.message, e.actor) for e in live.timeline]
    return [
        Moment(e.created_at, e.kind, str(e.data.get("message", "")), e.actor)
        for e in audit_trail(session, row.refund_id)
    ]


def _run_url(v: Visit, runs: RefundRuns, refund_id: str) -> str | None:
    base = v.request.app.state.settings.temporal_ui_url
    if not base:
        return None
    namespace = runs.client.namespace
    return f"{base.rstrip('/')}/namespaces/{namespace}/workflows/{workflow_id(refund_id)}"


def _needs(page: RefundPage) -> list[tuple[str, dict[str, Any]]]:
    """The policy's reasons a person decides, from the run's plan and the quote."""
    quote, currency, live = page.quote, page.row.currency, page.live
    if quote is None:
        return []
    needs: list[tuple[str, dict[str, Any]]] = []
    auto = page.policy.limit("auto_approve_max", currency)
    single = page.policy.limit("single_approver_max", currency)
    if quote.total > auto:
        needs.append(("needs.above_auto", {"limit": (auto, currency)}))
    if quote.total > single:
        needs.append(("needs.two_approvers", {"limit": (single, currency)}))
    tags = set(live.tags) if live else set()
    for tag in ("presale", "international", "installments"):
        if tag in tags:
            needs.append((f"needs.{tag}", {}))
    if any(d.kind == "inspection_damage" for d in quote.deductions):
        needs.append(("needs.deduction", {}))
    return needs


def _decision_buttons(page: RefundPage, me: Principal) -> None:
    live = page.live
    if not admitted(me, DECIDERS) or live is None:
        return
    if live.status is not RefundStatus.AWAITING_APPROVAL:
        return
    if me.name == live.requested_by:
        page.decide_blocked = "decide.own_request"
    elif any(a.approver_id == me.name for a in live.current_approvals()):
        page.decide_blocked = "decide.already_approved"
    else:
        page.can_decide = True


def _other_buttons(page: RefundPage, me: Principal) -> None:
    live = page.live
    if live is None:
        return
    if admitted(me, REPAIRERS):
        page.ops_actions = [a for a in OPS_ACTIONS if _run_accepts(live, a, me)]
    elif admitted(me, CANCELLERS) and refusal_for_cancel(live) is None:
        page.ops_actions = ["cancel"]
    page.can_inspect = admitted(me, INSPECTORS) and live.status is RefundStatus.AWAITING_RETURN
    page.can_answer_supplier = (
        admitted(me, SUPPLIER_ANSWERERS) and live.status is RefundStatus.AWAITING_SUPPLIER
    )


def _run_accepts(live: RefundState, action: OpsActionKind, me: Principal) -> bool:
    destination = Destination(kind=DestinationKind.BALANCE)  # any one: the rule asks for one
    msg = OpsAction(
        actor=me.name,
        action=action,
        destination=destination if action == "switch_destination" else None,
    )
    return refusal_for_ops(live, msg) is None
