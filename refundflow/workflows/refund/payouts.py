"""Paying the refund: tranches sent under their keys, the providers' answers applied as they
arrive, fallbacks by policy, ops' manual settlements.

Every tranche is registered in our database under its key before it is sent, and sent again only
under the same key (the provider deduplicates); a new route means a new generation and a new key.
See docs/architecture.md, "Payouts".
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from refundflow.activities import decisions
    from refundflow.activities.contracts import (
        FallbackInput,
        PayoutCall,
        RecheckInput,
    )
    from refundflow.activities.refund import RefundActivities
    from refundflow.domain.orders import BankAccount, PaymentMethod
    from refundflow.domain.payout_rules import (
        REVERSED,
        PayoutChange,
        event_mismatch,
        fallback_route,
        needs_repair,
        next_generation,
        next_pending,
        payout_change,
    )
    from refundflow.domain.refusals import payouts_to_mark
    from refundflow.domain.states import (
        OpsAction,
        PayoutRecord,
        PayoutStatus,
        RefundStatus,
        Stage,
        payout_key,
    )

from refundflow.workflows.refund import money, telemetry
from refundflow.workflows.refund.effects import DB_STEP, Run

FALLBACK_DECIDED = "fallback-route-decided"
"""Patch: the route a tranche falls back to is the ``choose_fallback`` local activity's recorded
answer (a change of the rule reaches new fallbacks only); before it, workflow code chose."""

# Providers may be slow or down for a while: retries back off, and an attempt after the first
# asks the provider about the key before sending anything again.
GATEWAY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=10),
    non_retryable_error_types=["DomainError"],
)
# A provider call heartbeats while it waits: if its worker dies, another takes it over after
# this long instead of after the call's whole timeout (only options: no command changes).
PROVIDER_HEARTBEAT = timedelta(seconds=10)
_MAX_UNMATCHED = 20  # events for keys this run never made must not pile up for ever


async def pay(run: Run) -> None:
    """The payout stage: a second check, then every tranche when it is due."""
    state = run.state
    if not state.payouts:
        if run.inbox.cancel is not None:  # accepted while the stage before was ending
            await run.cancelled()
            return
        await run.enter("payout_started", "second check before the first payout")
        check = run.second_check  # made with the review when the payout follows at once
        if check is None:
            check = await workflow.execute_local_activity_method(
                RefundActivities.recheck_quote,
                RecheckInput(
                    refund_id=state.refund_id,
                    expected_fingerprint=state.fingerprint,
                    fx_rate=run.inp.fx_rate,
                ),
                start_to_close_timeout=DB_STEP,
                summary="recompute the quote independently",
            )
        if not check.matches or check.fingerprint != state.fingerprint:
            detail = check.detail or f"the run's quote is no longer {check.fingerprint[:8]}"
            await run.escalate(f"second check failed: {detail}")
            return
        now = workflow.now()
        # From here on a cancel is refused: the records exist before anything is sent.
        state.payouts = [
            PayoutRecord(
                seq=planned.seq,
                installment=planned.installment,
                generation=1,
                key=payout_key(state.refund_id, planned.seq, 1),
                route=planned.route,
                amount=planned.amount,
                payout_currency=planned.payout_currency,
                payout_amount=planned.payout_amount,
                due_at=now + timedelta(days=planned.due_after_days),
                bank_account=run.inp.request.destination.bank_account,
            )
            for planned in run.quote.payouts
        ]
    else:
        await run.enter("payout_resumed", "paying")
    while state.status is RefundStatus.PAYING and state.stage is Stage.PAYOUT:
        await apply_news(run)
        record = next_pending(state)
        if record is None:
            run.advance()
            return
        if record.due_at and record.due_at > workflow.now():
            count = max(p.installment for p in state.payouts)
            await run.wait_for_news(
                record.due_at, f"installment {record.installment} of {count} due"
            )
            continue
        if await send(run, record) is PayoutStatus.FAILED_PERMANENT:
            await fallback(run, record)


def charges(run: Run, record: PayoutRecord) -> dict[str, int]:
    """Per tender, what this tranche takes from the refund's holds when it settles."""
    planned = next(p for p in run.quote.payouts if p.seq == record.seq)
    return {charge.payment_id: charge.amount for charge in planned.charges}


def payout_call(run: Run, record: PayoutRecord) -> PayoutCall:
    order = run.context.order
    tenders = charges(run, record)
    tender = order.payment(next(iter(tenders), "")) if tenders else None
    return PayoutCall(
        refund_id=run.state.refund_id,
        merchant_id=order.merchant_id,
        customer_id=order.customer_id,
        record=record,
        original_txn_id=tender.provider_txn_id if tender else "",
        original_amount=tender.captured if tender else 0,
        original_paid_at=tender.paid_at if tender else None,
        order_id=order.order_id,
        payment_id=tender.payment_id if tender else "",
        bank_account=record.bank_account,
        reason=run.inp.request.reason.value,
    )


async def send(run: Run, record: PayoutRecord) -> PayoutStatus:
    """Register the key, send, record the answer. A day of failed attempts leaves the outcome
    unknown and escalates; ops retry under the same key."""
    await money.save_payout(run, record, charges(run, record))
    _rematch(run, record)
    try:
        async with run.calling_out():
            result = await workflow.execute_activity_method(
                RefundActivities.send_payout,
                payout_call(run, record),
                start_to_close_timeout=timedelta(minutes=2),
                schedule_to_close_timeout=timedelta(days=1),
                heartbeat_timeout=PROVIDER_HEARTBEAT,
                retry_policy=GATEWAY_RETRY,
                summary=f"pay {run.amount(record.amount)} via {record.route.value}: {record.key}",
            )
    except ActivityError as err:
        record.status = PayoutStatus.UNKNOWN
        await money.save_payout(run, record, charges(run, record))
        await run.escalate(f"payout {record.key} did not go through: {err.cause or err}")
        return record.status
    telemetry.payout_answered(record.route.value, result.status.value)
    record.status = result.status
    record.provider_ref = result.provider_ref or record.provider_ref
    record.trace_ref = result.trace_ref or record.trace_ref
    record.code = result.code
    record.sent_at = record.sent_at or workflow.now()
    if result.status is PayoutStatus.SETTLED:
        record.settled_at = record.settled_at or workflow.now()
    await money.save_payout(run, record, charges(run, record))
    if record.status is PayoutStatus.FAILED_PERMANENT:
        await run.record(
            "payout_failed",
            f"payout {record.key} failed for good: {record.code}",
            data={"key": record.key, "code": record.code},
        )
        return record.status
    plan = await money.plan_arrival(run, [record.route])
    run.state.first_payout_at = run.state.first_payout_at or workflow.now()
    await run.record(
        "payout_sent",
        f"sent {run.amount(record.amount)} via {record.route.value}, "
        f"expected by {plan.latest.isoformat()}",
        data={"key": record.key, "provider_ref": record.provider_ref},
        notify=[
            run.customer(
                "payout_sent",
                amount=record.payout_amount,
                currency=record.payout_currency,
                route=record.route.value,
                expected_from=plan.earliest.isoformat(),
                expected_by=plan.latest.isoformat(),
                trace_ref=record.trace_ref,
            )
        ],
    )
    return record.status


async def fallback(run: Run, record: PayoutRecord) -> None:
    """The policy's next route for a tranche that failed for good, or escalation."""
    state = run.state
    account = run.inp.request.destination.bank_account
    tried = sorted({p.route for p in state.payouts if p.seq == record.seq})
    if workflow.patched(FALLBACK_DECIDED):
        chosen = await workflow.execute_local_activity(
            decisions.choose_fallback,
            FallbackInput(
                actions=run.context.policy.on_permanent_failure,
                tried=tried,
                has_bank_account=account is not None,
            ),
            start_to_close_timeout=DB_STEP,
            summary=f"fallback for {record.key}",
        )
        route = chosen.route
    else:  # runs that reached a fallback before the rule was an activity of its own
        route = fallback_route(
            run.context.policy.on_permanent_failure,
            tried=set(tried),
            has_bank_account=account is not None,
        )
    if route is None:
        await run.escalate(f"payout {record.key} failed ({record.code}) and no fallback is left")
        return
    new = new_generation(
        run, record, route, account if route is PaymentMethod.BANK_TRANSFER else None
    )
    await run.record(
        "payout_fallback",
        f"tranche {record.seq} falls back to {route.value} ({new.key})",
        data={"from": record.key, "to": new.key},
    )


def new_generation(
    run: Run, record: PayoutRecord, route: PaymentMethod, account: BankAccount | None = None
) -> PayoutRecord:
    """The same tranche again through ``route``, under a new key, due now."""
    state = run.state
    generation = next_generation(state, record.seq)
    new = record.model_copy(
        update={
            "generation": generation,
            "key": payout_key(state.refund_id, record.seq, generation),
            "route": route,
            "bank_account": account or record.bank_account,
            "status": PayoutStatus.PENDING,
            "provider_ref": "",
            "trace_ref": "",
            "code": "",
            "sent_at": None,
            "settled_at": None,
            "due_at": workflow.now(),
        }
    )
    state.payouts.append(new)
    return new


async def poll_open_payouts(run: Run) -> None:
    """Ask the provider about every payout it accepted and has not settled."""
    for record in run.state.latest_payouts():
        if record.status is not PayoutStatus.ACCEPTED:
            continue
        async with run.calling_out():
            result = await workflow.execute_activity_method(
                RefundActivities.query_payout,
                payout_call(run, record),
                start_to_close_timeout=timedelta(minutes=1),
                heartbeat_timeout=PROVIDER_HEARTBEAT,
                retry_policy=GATEWAY_RETRY,
                summary=f"check {record.key}",
            )
        await update_payout(
            run, record, result.status, result.provider_ref, result.trace_ref, result.code
        )


async def apply_news(run: Run) -> None:
    """Apply ops' marks and the providers' events, in the order they came."""
    inbox = run.inbox
    while inbox.marks:
        await mark_settled(run, inbox.marks.pop(0))
    while inbox.events:
        event = inbox.events.pop(0)
        record = next((p for p in run.state.payouts if p.key == event.payout_key), None)
        if record is None:
            inbox.unmatched = [*inbox.unmatched, event][-_MAX_UNMATCHED:]
            continue
        if event_mismatch(event, record):
            await run.record(
                "message_ignored",
                f"provider event for {record.key} names {event.amount} {event.currency},"
                f" the payout is {record.payout_amount} {record.payout_currency}",
                data={"code": "payout_event_mismatch", "event_id": event.event_id},
            )
            continue
        await update_payout(
            run, record, event.status, event.provider_ref, event.trace_ref, event.code
        )


def _rematch(run: Run, record: PayoutRecord) -> None:
    """Events that came before our record of ``record`` are news now."""
    inbox = run.inbox
    early = [e for e in inbox.unmatched if e.payout_key == record.key]
    if early:
        inbox.unmatched = [e for e in inbox.unmatched if e.payout_key != record.key]
        inbox.events = [*early, *inbox.events]


async def update_payout(
    run: Run,
    record: PayoutRecord,
    status: PayoutStatus,
    provider_ref: str,
    trace_ref: str,
    code: str,
) -> None:
    change = payout_change(record, status, trace_ref, code)
    if change is PayoutChange.NONE:
        return
    if change is PayoutChange.REVERSED:
        record.code = REVERSED + code
        await run.record(
            "payout_reversed",
            f"provider reversed settled payout {record.key}: {code}",
            data={"key": record.key, "code": code},
        )
        await run.escalate(f"provider reversed settled payout {record.key}: {code}")
        return
    record.status = status
    record.provider_ref = provider_ref or record.provider_ref
    record.trace_ref = trace_ref or record.trace_ref
    record.code = code or record.code
    if change is PayoutChange.SETTLED:
        record.settled_at = workflow.now()
    await money.save_payout(run, record, charges(run, record))
    if change is PayoutChange.SETTLED:
        await run.record(
            "payout_settled", f"provider settled {record.key}", data={"key": record.key}
        )
    elif change is PayoutChange.FAILED:
        await run.record(
            "payout_failed",
            f"payout {record.key} failed after acceptance: {record.code}",
            data={"key": record.key, "code": record.code},
        )
        # The same policy as a refusal at sending: back to the payout stage, which sends the
        # fallback (entering it again from follow-up or after ops resume).
        run.state.stage = Stage.PAYOUT
        await fallback(run, record)


async def mark_settled(run: Run, action: OpsAction) -> None:
    """Ops confirm that the sent tranches are paid (out of band, with a reference): settled in
    our books like a provider's settlement, failed or unknown ones included."""
    state = run.state
    marked = set(payouts_to_mark(state))
    for record in state.latest_payouts():
        if record.seq not in marked or record.status is PayoutStatus.SETTLED:
            continue
        if needs_repair(record) or not record.provider_ref:
            # Paid outside the provider that failed (or never answered): ops' reference is
            # the payment's. An accepted payout keeps the provider's own reference.
            record.provider_ref = action.reference
        record.status = PayoutStatus.SETTLED
        record.code = "MARKED_SETTLED"
        record.settled_at = workflow.now()
        await money.save_payout(run, record, charges(run, record))
    await run.record(
        "marked_settled",
        f"marked settled by {action.actor}: {action.reference}",
        actor=action.actor,
        data={"reference": action.reference, "note": action.note, "tranches": sorted(marked)},
    )
