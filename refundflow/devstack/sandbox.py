"""A local payment provider and its adapter, for workflow tests and the dev stack
(docs/architecture.md, "Providers").

The provider's books are the simulators' ledger (``simulators/core.py``): the payout key is the
refund number (a repeated key never pays twice), refunds settle later than they are accepted by
the ledger's settlement rules, and tests script failures by key prefix, including the nasty one
where the provider commits and the caller times out. This module is only the sandbox's protocol:
payout instructions in, ``PayoutResult`` out, events handed to ``on_event`` and signed webhooks.
Everything, scripts included, lives in one SQLite file, so a restarted worker, or another
process on the same file, sees exactly what the provider saw.

Settlement rules are written ``"never"``, ``"queries:N"`` (settles at the N-th query: time-
skipping tests advance workflow time, not real time) or ``"seconds:S"`` (real seconds since the
refund was created, by the injected clock).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from refundflow.devstack.simulators.core import (
    FAILED,
    SUCCESS,
    SimLedger,
    SimRefund,
    WebhookDue,
    digits_ref,
    parse_rule,
)
from refundflow.devstack.simulators.keys import load_or_create_secret
from refundflow.domain.states import PayoutEvent, PayoutStatus
from refundflow.gateways.base import (
    WEBHOOK_TOLERANCE_S,
    GatewayError,
    GatewayTimeout,
    PayoutInstruction,
    PayoutResult,
    check_sent_time,
)

log = logging.getLogger(__name__)

Behaviour = str | tuple[str, str]
"""``"ok"``, ``"transient"``, ``"timeout_after_commit"``, ``("permanent", code)``, or
``("ok" | "timeout_after_commit", rule)`` to give that one refund its own settlement rule."""

EventCallback = Callable[[PayoutEvent], Awaitable[None]]

SIGNATURE_HEADER = "Sandbox-Signature"
_KINDS = ("ok", "transient", "permanent", "timeout_after_commit")
_STATUS = {FAILED: PayoutStatus.FAILED_PERMANENT, SUCCESS: PayoutStatus.SETTLED}


@dataclass(frozen=True)
class SandboxRefund:
    """One refund as the provider stores it (times are unix seconds of the gateway's clock)."""

    payout_key: str
    amount: int
    currency: str
    route: str
    status: PayoutStatus
    provider_ref: str
    trace_ref: str
    code: str
    created_at: float
    settled_at: float | None
    queries: int


class SandboxGateway:
    name = "sandbox"

    def __init__(
        self,
        path: Path,
        *,
        settle_after_seconds: float | None = 2.0,
        settle_after_queries: int | None = None,
        secret: str | None = None,
        webhook_tolerance: float = WEBHOOK_TOLERANCE_S,
        clock: Callable[[], float] = time.time,
        on_event: EventCallback | None = None,
    ) -> None:
        """``settle_after_queries`` wins over ``settle_after_seconds``; both None means never.
        Without a ``secret``, one is generated once and kept beside the file, so every process
        on the file signs and verifies alike and no secret lives in code."""
        if settle_after_queries is not None:
            rule = f"queries:{settle_after_queries}"
        elif settle_after_seconds is not None:
            rule = f"seconds:{settle_after_seconds}"
        else:
            rule = "never"
        self.path = Path(path)
        self.clock = clock
        self.on_event = on_event
        self.webhook_tolerance = webhook_tolerance
        self.ledger = SimLedger(self.path, clock=clock, settlement=rule)
        self._pending: set[asyncio.Task[None]] = set()
        if secret is None:
            secret_file = self.path.with_name(self.path.name + ".webhook-secret")
            secret = load_or_create_secret(secret_file, lambda: secrets.token_hex(32))
        self._secret = secret.encode()

    # ------------------------------------------------------------------ Gateway protocol
    async def refund(self, instruction: PayoutInstruction) -> PayoutResult:
        return await asyncio.to_thread(self._refund, instruction)

    async def query(self, instruction: PayoutInstruction | str) -> PayoutResult:
        """Takes the instruction like every gateway, or just the key (test convenience)."""
        key = instruction if isinstance(instruction, str) else instruction.payout_key
        found, owed = await asyncio.to_thread(self._query, key)
        await self._deliver(owed)
        if found is None:
            return PayoutResult(status=PayoutStatus.NOT_FOUND, message="no such refund")
        return _result(found)

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> PayoutEvent:
        header = next((v for k, v in headers.items() if k.lower() == SIGNATURE_HEADER.lower()), "")
        parts = [p.partition("=") for p in header.split(",")]
        stamps = [v.strip() for k, _, v in parts if k.strip() == "t"]
        given = [v.strip() for k, _, v in parts if k.strip() == "v1"]
        if len(stamps) != 1 or not stamps[0].isdigit() or not given:
            raise ValueError(f"missing or malformed {SIGNATURE_HEADER} header")
        expected = self._signature(body, int(stamps[0]))
        # Compare against every v1 so a secret can be rotated without a gap.
        if not any(hmac.compare_digest(expected, g) for g in given):
            raise ValueError("webhook signature does not match")
        check_sent_time("sandbox", int(stamps[0]), self.clock(), self.webhook_tolerance)
        try:
            return PayoutEvent.model_validate_json(body)
        except ValidationError as exc:
            raise ValueError(f"webhook body is not a payout event: {exc}") from exc

    def sign_webhook(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        """Headers that make ``body`` a genuine sandbox webhook sent at ``timestamp``."""
        t = int(self.clock()) if timestamp is None else timestamp
        return {SIGNATURE_HEADER: f"t={t},v1={self._signature(body, t)}"}

    # ------------------------------------------------------------------ test controls
    def script(self, prefix: str, behaviours: Sequence[Behaviour]) -> None:
        """Queue what the next ``refund`` calls on keys starting with ``prefix`` do, in order."""
        self.ledger.script(prefix, [_ledger_behaviour(b) for b in behaviours])

    def default_settlement(self, rule: str) -> None:
        """The rule for refunds created from now on by this instance."""
        parse_rule(rule)
        self.ledger.settlement = rule

    def settle(self, payout_key: str) -> SandboxRefund:
        settled = self.ledger.settle(payout_key)
        self._deliver_soon()
        return _record(settled)

    def fail(self, payout_key: str, code: str) -> SandboxRefund:
        """A reversal: the refund, even a settled one, comes back as failed_permanent."""
        failed = self.ledger.fail(payout_key, code)
        self._deliver_soon()
        return _record(failed)

    def refunds(self, prefix: str | None = None) -> list[SandboxRefund]:
        return [_record(r) for r in self.ledger.refunds(prefix)]

    def count(self, prefix: str | None = None) -> int:
        return self.ledger.count(prefix)

    # ------------------------------------------------------------------ internals
    def _signature(self, body: bytes, timestamp: int) -> str:
        return hmac.new(self._secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()

    def _refund(self, ins: PayoutInstruction) -> PayoutResult:
        key = ins.payout_key
        outcome = self.ledger.create_refund(
            refund_no=key,
            # The sandbox knows no payments: a refund's payouts are filed under the refund.
            payment_id=ins.refund_id,
            amount=ins.amount,
            currency=ins.currency,
            check=lambda _payment, _refunds: None,
            make_refs=_refs,
            extra={"route": ins.route.value},
        )
        if outcome.kind == "transient":
            raise GatewayError(f"sandbox: scripted transient error for {key}")
        refund = outcome.refund
        if refund is None:  # refused unstored: the ledger's own "permanent", scripted directly
            return PayoutResult(status=PayoutStatus.FAILED_PERMANENT, code=outcome.code)
        if (refund.amount, refund.currency) != (ins.amount, ins.currency):
            # No provider_ref: that refund is not this caller's and must not pass for it.
            reused = f"refund number already used for {refund.amount} {refund.currency}"
            return PayoutResult(
                status=PayoutStatus.FAILED_PERMANENT, code="KEY_REUSED", message=reused
            )
        if outcome.hold:
            raise GatewayTimeout(f"sandbox: scripted timeout after commit for {key}")
        if outcome.kind == "created":
            refund = self.ledger.settle_if_due(key)
        return _result(refund)

    def _query(self, payout_key: str) -> tuple[SimRefund | None, list[WebhookDue]]:
        found = self.ledger.query(payout_key)
        return found, self._take_owed()

    def _take_owed(self) -> list[WebhookDue]:
        # The ledger keeps what it owes until delivered; nobody listening, nothing is taken.
        return [] if self.on_event is None else self.ledger.due_webhooks()

    async def _deliver(self, owed: list[WebhookDue]) -> None:
        if self.on_event is None:
            return
        for due in owed:
            try:
                await self.on_event(_event(due))
            except Exception:
                # A real provider's API keeps working when the merchant's endpoint fails, and
                # tries that event again later (the ledger's backoff).
                log.exception("sandbox: on_event callback failed for %s", due.event_id)
                self.ledger.webhook_failed(due)
            else:
                self.ledger.webhook_delivered(due)

    def _deliver_soon(self) -> None:
        """For the synchronous test controls: deliver on the running loop, or right now."""
        owed = self._take_owed()
        if not owed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run(self._deliver(owed))
            return
        task = loop.create_task(self._deliver(owed))
        self._pending.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._pending.discard)


def _ledger_behaviour(behaviour: Behaviour) -> tuple[str, str]:
    """The ledger's words for a sandbox behaviour: the sandbox's ``permanent`` is a refund
    declined on the spot and kept, so a repeated request gets the same failed refund back."""
    kind, arg = (behaviour, "") if isinstance(behaviour, str) else behaviour
    if kind not in _KINDS:
        raise ValueError(f"unknown sandbox behaviour {kind!r}; expected one of {_KINDS}")
    if kind == "permanent":
        return "declined", arg or "DECLINED"
    return kind, arg


def _refs(payout_key: str) -> tuple[str, str]:
    digest = hashlib.sha256(payout_key.encode()).hexdigest()
    return f"sbx_{digest[:16]}", "74" + digits_ref(payout_key, "sandbox-arn", 21)  # card ARN


def _status(refund: SimRefund) -> PayoutStatus:
    return _STATUS.get(refund.status, PayoutStatus.ACCEPTED)


def _record(r: SimRefund) -> SandboxRefund:
    return SandboxRefund(
        payout_key=r.refund_no,
        amount=r.amount,
        currency=r.currency,
        route=str(r.extra.get("route", "")),
        status=_status(r),
        provider_ref=r.provider_ref,
        trace_ref=r.trace_ref,
        code=r.code,
        created_at=r.created_at,
        settled_at=r.settled_at,
        queries=r.queries,
    )


def _result(r: SimRefund) -> PayoutResult:
    status, at = _status(r), r.settled_at
    settled = at is not None and status is PayoutStatus.SETTLED
    return PayoutResult(
        status=status,
        provider_ref=r.provider_ref,
        trace_ref=r.trace_ref,
        code=r.code,
        settled_at=datetime.fromtimestamp(at, UTC) if settled and at is not None else None,
    )


def _event(due: WebhookDue) -> PayoutEvent:
    r = due.refund
    return PayoutEvent(
        payout_key=r.refund_no,
        status=_status(r),
        provider_ref=r.provider_ref,
        trace_ref=r.trace_ref,
        code=r.code,
        event_id=due.event_id,  # the ledger's: stable per transition, so redelivery dedups
    )
