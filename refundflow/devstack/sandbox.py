"""A local payment provider and its adapter, for workflow tests and the dev stack
(docs/architecture.md, "Providers").

It behaves like a real provider where it matters: the payout key is the refund number (a
repeated key never pays twice), refunds settle later than they are accepted, and tests can
script failures, including the nasty one where the provider commits and the caller times out.
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
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager, closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from refundflow.devstack.simulators.core import parse_rule as _parse_rule
from refundflow.devstack.simulators.store import connect, write_tx
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
_FAILED = PayoutStatus.FAILED_PERMANENT

_SCHEMA = """
CREATE TABLE IF NOT EXISTS refunds (
    payout_key TEXT PRIMARY KEY,
    amount INTEGER NOT NULL,
    currency TEXT NOT NULL,
    route TEXT NOT NULL,
    status TEXT NOT NULL,
    provider_ref TEXT NOT NULL,
    trace_ref TEXT NOT NULL,
    code TEXT NOT NULL,
    created_at REAL NOT NULL,
    settle_at REAL,
    settle_after_queries INTEGER,
    queries INTEGER NOT NULL DEFAULT 0,
    settled_at REAL
);
CREATE TABLE IF NOT EXISTS scripts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    prefix TEXT NOT NULL,
    kind TEXT NOT NULL,
    arg TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


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
    settle_at: float | None
    settle_after_queries: int | None
    queries: int
    settled_at: float | None


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
        Without a ``secret``, one is generated once and kept in the file, so every process
        on the file signs and verifies alike and no secret lives in code."""
        self.path = Path(path)
        self.clock = clock
        self.on_event = on_event
        self.webhook_tolerance = webhook_tolerance
        if settle_after_queries is not None:
            rule = f"queries:{settle_after_queries}"
        elif settle_after_seconds is not None:
            rule = f"seconds:{settle_after_seconds}"
        else:
            rule = "never"
        _parse_rule(rule)
        self._rule = rule
        self._pending: set[asyncio.Task[None]] = set()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
        self._secret = (secret or self._stored_secret()).encode()

    # ------------------------------------------------------------------ Gateway protocol
    async def refund(self, instruction: PayoutInstruction) -> PayoutResult:
        outcome = await asyncio.to_thread(self._refund, instruction)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def query(self, instruction: PayoutInstruction | str) -> PayoutResult:
        """Takes the instruction like every gateway, or just the key (test convenience)."""
        key = instruction if isinstance(instruction, str) else instruction.payout_key
        result, event = await asyncio.to_thread(self._query, key)
        if event is not None:
            await self._deliver(event)
        return result

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
        parsed = [_check_behaviour(b) for b in behaviours]
        with self._tx() as conn:
            conn.executemany(
                "INSERT INTO scripts (prefix, kind, arg) VALUES (?, ?, ?)",
                [(prefix, kind, arg) for kind, arg in parsed],
            )

    def default_settlement(self, rule: str) -> None:
        """The rule for refunds created from now on by this instance."""
        _parse_rule(rule)
        self._rule = rule

    def settle(self, payout_key: str) -> SandboxRefund:
        return self._force(payout_key, PayoutStatus.SETTLED, "")

    def fail(self, payout_key: str, code: str) -> SandboxRefund:
        """A reversal: the refund, even a settled one, comes back as failed_permanent."""
        return self._force(payout_key, PayoutStatus.FAILED_PERMANENT, code)

    def refunds(self, prefix: str | None = None) -> list[SandboxRefund]:
        with closing(self._connect()) as conn:
            rows = conn.execute(
                "SELECT * FROM refunds WHERE substr(payout_key, 1, length(?)) = ? ORDER BY rowid",
                (prefix or "", prefix or ""),
            ).fetchall()
        return [_record(r) for r in rows]

    def count(self, prefix: str | None = None) -> int:
        return len(self.refunds(prefix))

    # ------------------------------------------------------------------ internals
    def _connect(self) -> sqlite3.Connection:
        return connect(self.path)

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return write_tx(self.path)

    def _stored_secret(self) -> str:
        with self._tx() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO meta VALUES ('webhook_secret', ?)", (secrets.token_hex(32),)
            )
            row = conn.execute("SELECT value FROM meta WHERE name = 'webhook_secret'").fetchone()
        return str(row["value"])

    def _signature(self, body: bytes, timestamp: int) -> str:
        return hmac.new(self._secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()

    def _refund(self, ins: PayoutInstruction) -> PayoutResult | Exception:
        """The result, or the exception to raise once the transaction is over."""
        key = ins.payout_key
        with self._tx() as conn:
            kind, arg = _next_behaviour(conn, key)
            if kind == "transient":
                # The used-up script step is committed; the refund itself never got here.
                return GatewayError(f"sandbox: scripted transient error for {key}")
            row = _find(conn, key)
            if row is None:
                row = self._insert(conn, ins, kind, arg)
            elif (row["amount"], row["currency"]) != (ins.amount, ins.currency):
                # No provider_ref: that refund is not this caller's and must not pass for it.
                reused = f"refund number already used for {row['amount']} {row['currency']}"
                return PayoutResult(status=_FAILED, code="KEY_REUSED", message=reused)
        if kind == "timeout_after_commit":
            return GatewayTimeout(f"sandbox: scripted timeout after commit for {key}")
        return _result(_record(row))

    def _insert(
        self, conn: sqlite3.Connection, ins: PayoutInstruction, kind: str, arg: str
    ) -> sqlite3.Row:
        now, failed = self.clock(), kind == "permanent"
        seconds, queries = (None, None) if failed else _parse_rule(arg or self._rule)
        digest = hashlib.sha256(ins.payout_key.encode()).hexdigest()
        conn.execute(
            "INSERT INTO refunds (payout_key, amount, currency, route, status, provider_ref,"
            " trace_ref, code, created_at, settle_at, settle_after_queries)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                *(ins.payout_key, ins.amount, ins.currency, ins.route.value),
                _FAILED if failed else PayoutStatus.ACCEPTED,
                f"sbx_{digest[:16]}",
                "" if failed else f"74{int(digest[16:40], 16) % 10**21:021d}",  # card-ARN shape
                arg if failed else "",
                now,
                None if seconds is None else now + seconds,
                queries,
            ),
        )
        return _get(conn, ins.payout_key)

    def _query(self, payout_key: str) -> tuple[PayoutResult, PayoutEvent | None]:
        with self._tx() as conn:
            row = _find(conn, payout_key)
            if row is None:
                return PayoutResult(status=PayoutStatus.NOT_FOUND, message="no such refund"), None
            conn.execute(
                "UPDATE refunds SET queries = queries + 1 WHERE payout_key = ?", (payout_key,)
            )
            after = row["settle_after_queries"]
            due = (after is not None and row["queries"] + 1 >= after) or (
                row["settle_at"] is not None and self.clock() >= row["settle_at"]
            )
            changed = due and row["status"] == PayoutStatus.ACCEPTED
            record = self._set_status(conn, payout_key, PayoutStatus.SETTLED, "", changed)
        return _result(record), _event(record) if changed else None

    def _force(self, payout_key: str, status: PayoutStatus, code: str) -> SandboxRefund:
        with self._tx() as conn:
            row = _get(conn, payout_key)
            if row["status"] == _FAILED:
                raise ValueError(f"sandbox refund {payout_key!r} has already failed")
            changed = row["status"] != status
            record = self._set_status(conn, payout_key, status, code, changed)
        if changed:
            self._deliver_soon(_event(record))
        return record

    def _set_status(
        self, conn: sqlite3.Connection, key: str, status: PayoutStatus, code: str, change: bool
    ) -> SandboxRefund:
        if change:
            settled_at = self.clock() if status is PayoutStatus.SETTLED else None
            conn.execute(
                "UPDATE refunds SET status = ?, code = ?, settled_at = ? WHERE payout_key = ?",
                (status, code, settled_at, key),
            )
        return _record(_get(conn, key))

    async def _deliver(self, event: PayoutEvent) -> None:
        if self.on_event is None:
            return
        try:
            await self.on_event(event)
        except Exception:
            # A real provider's API keeps working when the merchant's webhook endpoint fails.
            log.exception("sandbox: on_event callback failed for %s", event.event_id)

    def _deliver_soon(self, event: PayoutEvent) -> None:
        """For the synchronous test controls: deliver on the running loop, or right now."""
        if self.on_event is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run(self._deliver(event))
            return
        task = loop.create_task(self._deliver(event))
        self._pending.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._pending.discard)


def _check_behaviour(behaviour: Behaviour) -> tuple[str, str]:
    kind, arg = (behaviour, "") if isinstance(behaviour, str) else behaviour
    if kind not in _KINDS:
        raise ValueError(f"unknown sandbox behaviour {kind!r}; expected one of {_KINDS}")
    if kind == "permanent":
        return kind, arg or "DECLINED"
    if arg and kind == "transient":
        raise ValueError("'transient' takes no argument")
    if arg:
        _parse_rule(arg)
    return kind, arg


def _next_behaviour(conn: sqlite3.Connection, key: str) -> tuple[str, str]:
    # The most specific prefix speaks first: a test can script one payout inside a refund.
    row = conn.execute(
        "SELECT id, kind, arg FROM scripts WHERE substr(?, 1, length(prefix)) = prefix"
        " ORDER BY length(prefix) DESC, id LIMIT 1",
        (key,),
    ).fetchone()
    if row is None:
        return "ok", ""
    conn.execute("DELETE FROM scripts WHERE id = ?", (row["id"],))
    return str(row["kind"]), str(row["arg"])


def _find(conn: sqlite3.Connection, payout_key: str) -> sqlite3.Row | None:
    return conn.execute("SELECT * FROM refunds WHERE payout_key = ?", (payout_key,)).fetchone()


def _get(conn: sqlite3.Connection, payout_key: str) -> sqlite3.Row:
    row = _find(conn, payout_key)
    if row is None:
        raise KeyError(f"no sandbox refund {payout_key!r}")
    return row


def _record(row: sqlite3.Row) -> SandboxRefund:
    return SandboxRefund(**dict(row) | {"status": PayoutStatus(row["status"])})


def _result(r: SandboxRefund) -> PayoutResult:
    settled = datetime.fromtimestamp(r.settled_at, UTC) if r.settled_at is not None else None
    return PayoutResult(
        status=r.status,
        provider_ref=r.provider_ref,
        trace_ref=r.trace_ref,
        code=r.code,
        settled_at=settled if r.status is PayoutStatus.SETTLED else None,
    )


def _event(r: SandboxRefund) -> PayoutEvent:
    # Derived from the transition, so a redelivered event keeps its id and dedup works.
    event_id = "evt_" + hashlib.sha256(f"{r.payout_key}|{r.status}".encode()).hexdigest()[:24]
    return PayoutEvent(
        payout_key=r.payout_key,
        status=r.status,
        provider_ref=r.provider_ref,
        trace_ref=r.trace_ref,
        code=r.code,
        event_id=event_id,
    )
