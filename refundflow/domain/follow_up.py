"""Follow-up after the payouts are sent: poll with backoff, tell the customer of a delay, complete
once the money is there, escalate when it never comes.

Pure rules over the run's state and the policy recorded at review; the workflow carries out the
step they choose. A change here is a change of workflow code (docs/architecture.md,
"Versioning").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from refundflow.domain.policy import FollowUp
from refundflow.domain.states import FollowUpState, PayoutStatus, RefundState


class FollowUpAction(StrEnum):
    COMPLETE = "complete"
    DELAY_NOTICE = "delay_notice"
    ESCALATE = "escalate"
    POLL = "poll"
    WAIT = "wait"


@dataclass(frozen=True)
class FollowUpStep:
    action: FollowUpAction
    wake_at: datetime | None = None
    """For ``WAIT``: the next moment something is due (news from outside may come earlier)."""


def start_follow_up(
    policy: FollowUp, now: datetime, first_poll: timedelta | None = None
) -> FollowUpState:
    """The first poll after ``first_poll`` (the providers' typical settle time), or the
    policy's ``first_poll_minutes``; backoff then doubles it."""
    first = first_poll or timedelta(minutes=policy.first_poll_minutes)
    return FollowUpState(
        interval_seconds=int(first.total_seconds()),
        next_poll_at=now + first,
        final_at=now + timedelta(days=policy.final_escalation_days),
    )


def after_poll(follow: FollowUpState, policy: FollowUp, now: datetime) -> FollowUpState:
    """Back off: each poll waits ``backoff_factor`` times longer, up to the policy's cap."""
    interval = min(
        follow.interval_seconds * policy.backoff_factor, policy.max_poll_interval_hours * 3600
    )
    return follow.model_copy(
        update={
            "polls": follow.polls + 1,
            "interval_seconds": interval,
            "next_poll_at": now + timedelta(seconds=interval),
        }
    )


def window_end(state: RefundState, now: datetime) -> datetime:
    """When the customer should have the money: the recorded end of the arrival window, or at
    once for routes that pay immediately."""
    return state.window_ends_at or state.first_payout_at or now


def follow_up_step(state: RefundState, policy: FollowUp, now: datetime) -> FollowUpStep:
    follow = state.follow_up
    assert follow is not None, "follow-up starts before its first step"
    settled = all(p.status is PayoutStatus.SETTLED for p in state.latest_payouts())
    window_over = window_end(state, now)
    if state.customer_confirmed_receipt or (settled and now >= window_over):
        return FollowUpStep(FollowUpAction.COMPLETE)
    if settled:
        return FollowUpStep(FollowUpAction.WAIT, wake_at=window_over)
    if now >= window_over and follow.delay_noticed_for != state.expected_by:
        return FollowUpStep(FollowUpAction.DELAY_NOTICE)
    if now >= follow.final_at or follow.polls >= policy.max_polls:
        return FollowUpStep(FollowUpAction.ESCALATE)
    if now >= follow.next_poll_at:
        return FollowUpStep(FollowUpAction.POLL)
    wakes = [follow.final_at, follow.next_poll_at] + ([window_over] if window_over > now else [])
    return FollowUpStep(FollowUpAction.WAIT, wake_at=min(wakes))
