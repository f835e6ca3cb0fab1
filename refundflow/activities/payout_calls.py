"""The payout calls RefundWorkflow makes to providers: ``send_payout`` and ``query_payout``.

Both heartbeat while they wait on the provider. A worker that dies mid-call stops
heartbeating, Temporal notices within the run's heartbeat timeout (seconds), and another worker
takes the call over; since it is a retry, it asks the provider about the key before sending
anything (docs/architecture.md, "Payouts").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TypeVar

from sqlalchemy import Engine
from temporalio import activity
from temporalio.exceptions import ApplicationError

from refundflow.activities.contracts import PayoutCall
from refundflow.activities.retries import retry_later
from refundflow.db.engine import session_scope
from refundflow.db.repository import count_provider_refunds, get_payout
from refundflow.domain.orders import PaymentMethod
from refundflow.domain.provider_rules import provider_refusal
from refundflow.domain.states import PayoutStatus
from refundflow.gateways.base import (
    Gateway,
    GatewayError,
    GatewayMismatch,
    GatewayTimeout,
    PayoutResult,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
_BEATS_PER_TIMEOUT = 3  # a late beat or two is not taken for a dead worker


async def while_heartbeating(work: Awaitable[T]) -> T:
    """``work``'s result, heartbeating meanwhile when the activity has a heartbeat timeout."""
    timeout = activity.info().heartbeat_timeout
    if not timeout:
        return await work
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait(
                {task}, timeout=timeout.total_seconds() / _BEATS_PER_TIMEOUT
            )
            if done:
                return task.result()
            activity.heartbeat()
    finally:
        task.cancel()  # the activity was cancelled, or the worker stops: stop waiting too


class ProviderCalls:
    """The provider half of the refund activities (``RefundActivities`` has the rest)."""

    engine: Engine
    gateways: dict[PaymentMethod, Gateway]

    @activity.defn
    async def send_payout(self, call: PayoutCall) -> PayoutResult:
        try:
            return await while_heartbeating(self._send(call))
        except GatewayMismatch as exc:
            # Not retried, and no fallback: the run escalates with the outcome unknown.
            raise ApplicationError(
                f"provider answered with another refund: {exc}",
                type="GatewayMismatch",
                non_retryable=True,
            ) from exc
        except GatewayTimeout as exc:
            what = f"payout {call.record.key}: outcome unknown, asked before any resend: {exc}"
            raise retry_later(log, what, error_type="GatewayTimeout") from exc
        except GatewayError as exc:
            what = f"payout {call.record.key}: provider refused for now: {exc}"
            raise retry_later(log, what, error_type="GatewayError") from exc

    async def _send(self, call: PayoutCall) -> PayoutResult:
        instruction = call.instruction()
        gateway = self._gateway(instruction.route)
        # What the database knows, in one read: whether an earlier attempt got this far, and
        # the refunds already made of the same payment (the provider's own limits).
        sent_before, earlier = await asyncio.to_thread(self._read_before_send, call)
        if activity.info().attempt > 1 or sent_before:
            # An earlier attempt (of this activity, or before ops retried an unknown outcome)
            # may have reached the provider: ask before sending again.
            known = await gateway.query(instruction)
            if known.status is not PayoutStatus.NOT_FOUND:
                return known
        refused = None if earlier is None else self._provider_refusal(call, earlier)
        if refused is not None:
            code, message = refused
            return PayoutResult(status=PayoutStatus.FAILED_PERMANENT, code=code, message=message)
        return await gateway.refund(instruction)

    @activity.defn
    async def query_payout(self, call: PayoutCall) -> PayoutResult:
        try:
            gateway = self._gateway(call.record.route)
            return await while_heartbeating(gateway.query(call.instruction()))
        except GatewayMismatch as exc:
            # No news for this payout: the run's record stays as it is (ops repair it).
            return PayoutResult(
                status=PayoutStatus.UNKNOWN, code="PROVIDER_MISMATCH", message=str(exc)
            )
        except GatewayError as exc:
            what = f"payout {call.record.key}: provider did not answer the query: {exc}"
            raise retry_later(log, what, error_type="GatewayError") from exc

    def _read_before_send(self, call: PayoutCall) -> tuple[bool, int | None]:
        """Whether the payout left PENDING in our records, and (for a refund of an original
        payment) how many other refunds of that payment went through the same provider."""
        record = call.record
        with session_scope(self.engine, readonly=True) as session:
            row = get_payout(session, payout_key=record.key)
            earlier = None
            if call.payment_id and call.original_txn_id:
                earlier = count_provider_refunds(
                    session,
                    merchant_id=call.merchant_id,
                    order_id=call.order_id,
                    payment_id=call.payment_id,
                    route=record.route.value,
                    excluding=record.key,
                )
        return row is not None and row.status != PayoutStatus.PENDING.value, earlier

    def _provider_refusal(self, call: PayoutCall, earlier: int) -> tuple[str, str] | None:
        return provider_refusal(
            call.record.route,
            paid_at=call.original_paid_at,
            # The server's clock, like the run's: test servers skip time.
            now=activity.info().current_attempt_scheduled_time,
            earlier_refunds=earlier,
        )

    def _gateway(self, route: PaymentMethod) -> Gateway:
        gateway = self.gateways.get(route)
        if gateway is None:
            raise ApplicationError(
                f"no gateway for {route.value}", type="DomainError", non_retryable=True
            )
        return gateway
