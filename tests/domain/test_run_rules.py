"""The pure rules the refund run follows: stage order, the payout decision table, fallbacks,
follow-up steps, which messages are refused. Milliseconds each, no Temporal."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from refundflow.domain.calendar import arrival_plan
from refundflow.domain.follow_up import (
    FollowUpAction,
    after_poll,
    follow_up_step,
    start_follow_up,
)
from refundflow.domain.orders import DestinationKind, PaymentMethod
from refundflow.domain.payout_rules import (
    PayoutChange,
    event_mismatch,
    fallback_route,
    next_generation,
    next_pending,
    payout_change,
    route_for_destination,
)
from refundflow.domain.policy import DEFAULT_POLICY, FallbackAction, FollowUp
from refundflow.domain.provider_rules import first_poll_after
from refundflow.domain.refusals import (
    payouts_to_mark,
    refusal_for_cancel,
    refusal_for_ops,
)
from refundflow.domain.stages import next_stage
from refundflow.domain.states import (
    OpsAction,
    PayoutEvent,
    PayoutRecord,
    PayoutStatus,
    RefundState,
    RefundStatus,
    Stage,
)

NOW = datetime(2026, 6, 1, 8, tzinfo=UTC)
S = PayoutStatus


def record(seq: int = 1, generation: int = 1, status: S = S.PENDING, **kw: Any) -> PayoutRecord:
    data: dict[str, Any] = {
        "seq": seq,
        "installment": seq,
        "generation": generation,
        "key": f"r:{seq}:{generation}",
        "route": PaymentMethod.ALIPAY,
        "amount": 1000,
        "payout_currency": "CNY",
        "payout_amount": 1000,
        "status": status,
    }
    data.update(kw)
    return PayoutRecord.model_validate(data)


def state(**kw: Any) -> RefundState:
    return RefundState.model_validate({"refund_id": "r", "requested_by": "desk", **kw})


# ---------------------------------------------------------------------------------- stages


def test_stages_run_in_order_and_skip_what_review_did_not_ask_for() -> None:
    plan = state(approvers_required=1, return_required=True, customer_confirmation=True)
    assert next_stage(plan) is Stage.APPROVAL
    plan.completed_stages = [Stage.APPROVAL]
    assert next_stage(plan) is Stage.RETURN
    plan.completed_stages += [Stage.RETURN]
    assert next_stage(plan) is Stage.CUSTOMER_CONFIRMATION
    plan.completed_stages += [Stage.CUSTOMER_CONFIRMATION, Stage.PAYOUT]
    assert next_stage(plan) is Stage.FOLLOW_UP
    plan.completed_stages += [Stage.FOLLOW_UP]
    assert next_stage(plan) is Stage.DONE
    assert next_stage(state()) is Stage.PAYOUT  # auto-approved: straight to the money
    assert next_stage(state(supplier_check=True)) is Stage.SUPPLIER


# ------------------------------------------------------------------------- payout answers


@pytest.mark.parametrize(
    ("ours", "theirs", "trace", "expected"),
    [
        (S.PENDING, S.ACCEPTED, "", PayoutChange.UPDATED),
        (S.ACCEPTED, S.ACCEPTED, "", PayoutChange.NONE),
        (S.ACCEPTED, S.ACCEPTED, "T-NEW", PayoutChange.UPDATED),
        (S.ACCEPTED, S.SETTLED, "", PayoutChange.SETTLED),
        (S.UNKNOWN, S.SETTLED, "", PayoutChange.SETTLED),
        (S.ACCEPTED, S.FAILED_PERMANENT, "", PayoutChange.FAILED),
        (S.ACCEPTED, S.NOT_FOUND, "", PayoutChange.NONE),
        (S.ACCEPTED, S.UNKNOWN, "", PayoutChange.NONE),
        (S.ACCEPTED, S.PENDING, "", PayoutChange.NONE),
        (S.FAILED_PERMANENT, S.SETTLED, "", PayoutChange.NONE),
        (S.SETTLED, S.SETTLED, "", PayoutChange.NONE),
        (S.SETTLED, S.FAILED_PERMANENT, "", PayoutChange.REVERSED),
    ],
)
def test_payout_decision_table(ours: S, theirs: S, trace: str, expected: PayoutChange) -> None:
    assert payout_change(record(status=ours, trace_ref="T-OLD"), theirs, trace, "AC04") is expected


def test_a_repeated_answer_changes_nothing() -> None:
    mine = record(status=S.ACCEPTED, trace_ref="T-1")
    assert payout_change(mine, S.ACCEPTED, "T-1", "") is PayoutChange.NONE
    reversed_ = record(status=S.SETTLED, code="REVERSED_AC04")
    assert payout_change(reversed_, S.FAILED_PERMANENT, "", "AC04") is PayoutChange.NONE


def test_an_event_naming_another_amount_or_currency_is_not_ours() -> None:
    mine = record()
    assert not event_mismatch(PayoutEvent(payout_key="r:1:1", status=S.SETTLED), mine)
    assert event_mismatch(PayoutEvent(payout_key="r:1:1", status=S.SETTLED, amount=999), mine)
    odd = PayoutEvent(payout_key="r:1:1", status=S.SETTLED, amount=1000, currency="USD")
    assert event_mismatch(odd, mine)


def test_fallback_follows_the_policy_and_never_repeats_a_route() -> None:
    chain = [FallbackAction.BANK_TRANSFER, FallbackAction.BALANCE, FallbackAction.ESCALATE]
    card = {PaymentMethod.CARD}
    assert fallback_route(chain, tried=card, has_bank_account=True) is PaymentMethod.BANK_TRANSFER
    # No account to send a transfer to: the next action.
    assert fallback_route(chain, tried=card, has_bank_account=False) is PaymentMethod.BALANCE
    both = card | {PaymentMethod.BANK_TRANSFER, PaymentMethod.BALANCE}
    assert fallback_route(chain, tried=both, has_bank_account=True) is None
    escalate_first = [FallbackAction.ESCALATE, FallbackAction.BALANCE]
    assert fallback_route(escalate_first, tried=card, has_bank_account=True) is None


def test_ops_destination_picks_the_route() -> None:
    wechat = PaymentMethod.WECHAT
    assert route_for_destination(DestinationKind.BALANCE, wechat) is PaymentMethod.BALANCE
    bank = DestinationKind.BANK_TRANSFER
    assert route_for_destination(bank, wechat) is PaymentMethod.BANK_TRANSFER
    assert route_for_destination(DestinationKind.ORIGINAL, wechat) is wechat


def test_the_next_tranche_to_send_is_the_newest_generation_not_sent() -> None:
    plan = state(
        payouts=[
            record(1, 1, S.FAILED_PERMANENT),
            record(1, 2, S.PENDING),
            record(2, 1, S.PENDING),
        ]
    )
    pending = next_pending(plan)
    assert pending is not None and (pending.seq, pending.generation) == (1, 2)
    assert next_generation(plan, 1) == 3 and next_generation(plan, 3) == 1
    plan.payouts[1].status = S.SETTLED
    plan.payouts[2].status = S.ACCEPTED
    assert next_pending(plan) is None


# -------------------------------------------------------------------------------- follow-up

POLICY = FollowUp(first_poll_minutes=30, backoff_factor=2, max_poll_interval_hours=1, max_polls=3)


def _following(status: S, window: timedelta = timedelta(days=2), **kw: Any) -> RefundState:
    follow = start_follow_up(POLICY, NOW)
    return state(
        status=RefundStatus.AWAITING_FUNDS,
        stage=Stage.FOLLOW_UP,
        payouts=[record(status=status)],
        first_payout_at=NOW,
        expected_by="2026-06-02",
        window_ends_at=NOW + window,
        follow_up=follow,
        **kw,
    )


def test_follow_up_polls_with_backoff_up_to_the_cap() -> None:
    follow = start_follow_up(POLICY, NOW)
    assert follow.next_poll_at == NOW + timedelta(minutes=30)
    follow = after_poll(follow, POLICY, NOW)
    assert (follow.polls, follow.interval_seconds) == (1, 3600)
    follow = after_poll(follow, POLICY, NOW)
    assert follow.interval_seconds == 3600  # capped at an hour


def test_follow_up_steps() -> None:
    waiting = _following(S.ACCEPTED)
    step = follow_up_step(waiting, POLICY, NOW)
    assert step.action is FollowUpAction.WAIT and step.wake_at == NOW + timedelta(minutes=30)
    assert follow_up_step(waiting, POLICY, NOW + timedelta(minutes=31)).action is (
        FollowUpAction.POLL
    )
    # Settled, but the promised window is still open: wait for it, no more polls.
    settled = _following(S.SETTLED)
    step = follow_up_step(settled, POLICY, NOW)
    assert step.action is FollowUpAction.WAIT and step.wake_at == NOW + timedelta(days=2)
    assert follow_up_step(settled, POLICY, NOW + timedelta(days=2)).action is (
        FollowUpAction.COMPLETE
    )
    # The customer's word completes at once.
    confirmed = _following(S.ACCEPTED, customer_confirmed_receipt=True)
    assert follow_up_step(confirmed, POLICY, NOW).action is FollowUpAction.COMPLETE


def test_follow_up_tells_of_a_delay_once_per_promise_then_escalates() -> None:
    late = _following(S.ACCEPTED, window=timedelta(hours=1))
    later = NOW + timedelta(hours=2)
    assert follow_up_step(late, POLICY, later).action is FollowUpAction.DELAY_NOTICE
    assert late.follow_up is not None
    late.follow_up = late.follow_up.model_copy(update={"delay_noticed_for": "2026-06-02"})
    assert follow_up_step(late, POLICY, later).action is FollowUpAction.POLL
    late.follow_up = late.follow_up.model_copy(update={"polls": 3})
    assert follow_up_step(late, POLICY, later).action is FollowUpAction.ESCALATE


# --------------------------------------------------------------------------------- refusals


def test_cancel_is_refused_once_a_payout_exists_unless_every_payout_failed() -> None:
    assert refusal_for_cancel(state(status=RefundStatus.PAYING, stage=Stage.PAYOUT)) is None
    # Recorded but not sent yet (send_payout may be retrying): money may be moving.
    registered = state(status=RefundStatus.PAYING, stage=Stage.PAYOUT, payouts=[record()])
    refusal = refusal_for_cancel(registered)
    assert refusal is not None and refusal.code == "payout_already_sent"
    failed = state(
        status=RefundStatus.NEEDS_ATTENTION,
        stage=Stage.PAYOUT,
        payouts=[record(status=S.FAILED_PERMANENT)],
    )
    assert refusal_for_cancel(failed) is None


def test_mark_settled_needs_a_sent_payout_and_repairs_need_a_stuck_one() -> None:
    mark = OpsAction(actor="ops", action="mark_settled", reference="REF")
    attention = {"status": RefundStatus.NEEDS_ATTENTION, "stage": Stage.PAYOUT}
    nothing_sent = state(**attention, payouts=[record()])
    refusal = refusal_for_ops(nothing_sent, mark)
    assert refusal is not None and refusal.code == "nothing_to_mark"
    failed = state(**attention, payouts=[record(status=S.FAILED_PERMANENT), record(2)])
    assert refusal_for_ops(failed, mark) is None
    assert payouts_to_mark(failed) == [1]  # the unsent second tranche is still to be paid
    resume = OpsAction(actor="ops", action="resume")
    refusal = refusal_for_ops(failed, resume)
    assert refusal is not None and refusal.code == "payout_needs_repair"
    retry = OpsAction(actor="ops", action="retry_payout")
    assert refusal_for_ops(failed, retry) is None
    healthy = state(**attention, payouts=[record(status=S.ACCEPTED)])
    refusal = refusal_for_ops(healthy, retry)
    assert refusal is not None and refusal.code == "wrong_state"


# ------------------------------------------------------------------------------- arrival


def test_arrival_plan_over_national_day_and_for_routes_that_pay_at_once() -> None:
    # Alipay 1-3 CN business days from Thursday 2027-09-30: Oct 1-7 are holidays, the 9th
    # a make-up working Saturday.
    plan = arrival_plan(
        date(2027, 9, 30),
        [PaymentMethod.ALIPAY],
        DEFAULT_POLICY,
        "CN",
        open_routes=[PaymentMethod.ALIPAY],
    )
    assert (plan.earliest, plan.latest) == (date(2027, 10, 6), date(2027, 10, 8))
    assert plan.window_ends_at == datetime(2027, 10, 11, tzinfo=UTC)
    # An earlier payout's promise is never shortened by a faster one.
    widened = arrival_plan(
        date(2027, 9, 30),
        [PaymentMethod.BALANCE],
        DEFAULT_POLICY,
        "CN",
        open_routes=[PaymentMethod.BALANCE, PaymentMethod.ALIPAY],
        not_before=date(2027, 10, 8),
    )
    assert widened.latest == date(2027, 10, 8) and widened.window_ends_at is not None
    at_once = arrival_plan(
        date(2027, 9, 30),
        [PaymentMethod.BALANCE],
        DEFAULT_POLICY,
        "CN",
        open_routes=[PaymentMethod.BALANCE],
    )
    assert at_once.window_ends_at is None


def test_the_first_poll_follows_the_fastest_providers_typical_settle_time() -> None:
    policy_default = timedelta(minutes=30)
    alipay, bank = PaymentMethod.ALIPAY, PaymentMethod.BANK_TRANSFER
    assert first_poll_after([alipay], policy_default) == timedelta(minutes=2)
    assert first_poll_after([bank], policy_default) == timedelta(hours=2)
    assert first_poll_after([bank, alipay], policy_default) == timedelta(minutes=2)
    assert first_poll_after([PaymentMethod.BALANCE], policy_default) == policy_default
    follow = start_follow_up(POLICY, NOW, timedelta(minutes=2))
    assert follow.next_poll_at == NOW + timedelta(minutes=2)
