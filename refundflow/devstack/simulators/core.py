"""What every provider simulator shares: a ledger of payments and refunds, scripted behaviour,
asynchronous settlement and the webhooks owed (``host.py`` serves the simulators and delivers
them).

A provider simulator (``alipay.py``, ``wechat.py``...) is only the protocol: its paths, fields,
signatures and error codes. The ledger behind it decides what happens to each refund, so every
simulator misbehaves the same scripted ways (transient errors, commit-then-timeout, late or
duplicate webhooks, failures after acceptance) and tests script them alike. State lives in one
SQLite file per simulator, so a restarted dev stack, or another process, sees what the provider saw.

Settlement rules: ``"never"``, ``"queries:N"`` (settles at the N-th query: time-skipping tests
move workflow time, not real time) or ``"seconds:S"`` (real seconds after creation, applied by a
query or by the host's sweep).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from refundflow.devstack.simulators.gates import AFTER_COMMIT, BEFORE_COMMIT, Gates
from refundflow.devstack.simulators.store import connect, write_tx

log = logging.getLogger(__name__)

PROCESSING, SUCCESS, FAILED = "PROCESSING", "SUCCESS", "FAILED"
Behaviour = str | tuple[str, str]
_REFUND_KINDS = ("ok", "transient", "timeout_after_commit", "permanent", "fail_later", "declined")
_HOOK_MODES = ("once", "twice", "never", "late", "out_of_order")
_MAX_DELIVERIES = 8
# How long a webhook taken for delivery stays out of sight: past the host's HTTP timeout, so
# only a host that died holding it lets it come due again.
_DELIVERY_LEASE_S = 30.0
AUTO_PAYMENT_AMOUNT = 10**9
"""What an unknown payment is taken to have captured when ``auto_payments`` is on (dev stack)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS payments (
    payment_id TEXT PRIMARY KEY,
    amount INTEGER NOT NULL,
    currency TEXT NOT NULL,
    paid_at REAL NOT NULL,
    extra TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS refunds (
    refund_no TEXT PRIMARY KEY,
    provider_ref TEXT NOT NULL,
    payment_id TEXT NOT NULL,
    amount INTEGER NOT NULL,
    currency TEXT NOT NULL,
    status TEXT NOT NULL,
    code TEXT NOT NULL DEFAULT '',
    trace_ref TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    settled_at REAL,
    settle_at REAL,
    settle_after_queries INTEGER,
    queries INTEGER NOT NULL DEFAULT 0,
    fail_code TEXT NOT NULL DEFAULT '',
    hook_mode TEXT NOT NULL DEFAULT 'once',
    hook_arg TEXT NOT NULL DEFAULT '',
    extra TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS refunds_payment ON refunds (payment_id);
CREATE TABLE IF NOT EXISTS scripts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    family TEXT NOT NULL,
    prefix TEXT NOT NULL,
    kind TEXT NOT NULL,
    arg TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS webhooks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    refund_no TEXT NOT NULL,
    snapshot TEXT NOT NULL,
    event_id TEXT NOT NULL,
    due_at REAL NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 1
);
"""


@dataclass(frozen=True)
class SimPayment:
    payment_id: str
    amount: int
    currency: str
    paid_at: float
    extra: dict[str, Any]


@dataclass(frozen=True)
class SimRefund:
    refund_no: str
    """The merchant's refund number: our payout key, the provider's idempotency handle."""
    provider_ref: str
    payment_id: str
    amount: int
    currency: str
    status: str
    """``PROCESSING``, ``SUCCESS`` or ``FAILED``; each simulator speaks its own words for them."""
    code: str
    trace_ref: str
    created_at: float
    settled_at: float | None
    extra: dict[str, Any]
    queries: int = 0
    """How many times the merchant has asked about it (``queries:N`` settles on the N-th)."""


@dataclass(frozen=True)
class RefundOutcome:
    kind: Literal["created", "existing", "refused", "transient"]
    refund: SimRefund | None = None
    code: str = ""
    hold: bool = False
    """The refund is stored, but the answer must be withheld past the caller's timeout."""


@dataclass(frozen=True)
class WebhookDue:
    delivery_id: str
    refund: SimRefund
    event_id: str
    attempt: int


Check = Callable[[SimPayment | None, list[SimRefund]], str | None]


class SimLedger:
    """The provider's books. Every method is one SQLite transaction, safe across threads and
    processes (BEGIN IMMEDIATE serialises check-then-insert on the same refund number)."""

    def __init__(
        self,
        path: Path,
        *,
        clock: Callable[[], float] = time.time,
        settlement: str = "seconds:2",
        hold_seconds: float = 30.0,
        auto_payments: bool = False,
    ) -> None:
        parse_rule(settlement)
        self.path = Path(path)
        self.clock = clock
        self.settlement = settlement
        self.hold_seconds = hold_seconds
        self.auto_payments = auto_payments
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
        self.gates = Gates(self.path)

    # ------------------------------------------------------------------ payments
    def add_payment(
        self,
        payment_id: str,
        *,
        amount: int,
        currency: str,
        paid_at: float | None = None,
        extra: dict[str, Any] | None = None,
    ) -> SimPayment:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO payments VALUES (?, ?, ?, ?, ?) ON CONFLICT (payment_id) DO UPDATE"
                " SET amount = excluded.amount, currency = excluded.currency,"
                " paid_at = excluded.paid_at, extra = excluded.extra",
                (
                    payment_id,
                    amount,
                    currency,
                    self.clock() if paid_at is None else paid_at,
                    json.dumps(extra or {}),
                ),
            )
            payment = _payment(conn, payment_id)
        assert payment is not None
        return payment

    def payment(self, payment_id: str) -> SimPayment | None:
        with closing(self._connect()) as conn:
            return _payment(conn, payment_id)

    def refunds_of(self, payment_id: str) -> list[SimRefund]:
        with closing(self._connect()) as conn:
            return _refunds_of(conn, payment_id)

    # ------------------------------------------------------------------ refunds
    def create_refund(
        self,
        *,
        refund_no: str,
        payment_id: str,
        amount: int,
        currency: str,
        check: Check,
        make_refs: Callable[[str], tuple[str, str]],
        extra: dict[str, Any] | None = None,
    ) -> RefundOutcome:
        """A refund request as the provider handles it: through a test's gates (``gates.py``)
        on either side of storing it."""
        if not self.gates.wait(refund_no, BEFORE_COMMIT):
            return RefundOutcome("transient")  # dropped: the provider never took it
        with self._tx() as conn:
            kind, arg = _next(conn, "refund", refund_no, default=("ok", ""))
            if kind == "transient":
                return RefundOutcome("transient")
            existing = _find(conn, refund_no)
            if existing is not None:
                return RefundOutcome("existing", existing)
            payment = _payment(conn, payment_id)
            if payment is None and self.auto_payments:
                conn.execute(
                    "INSERT INTO payments VALUES (?, ?, ?, ?, '{}')",
                    (payment_id, max(amount, AUTO_PAYMENT_AMOUNT), currency, self.clock()),
                )
                payment = _payment(conn, payment_id)
            refused = check(payment, _refunds_of(conn, payment_id))
            if refused:
                return RefundOutcome("refused", code=refused)
            if kind == "permanent":
                return RefundOutcome("refused", code=arg)
            declined = kind == "declined"
            rule = arg if kind in ("ok", "timeout_after_commit") and arg else self.settlement
            seconds, queries = (None, None) if declined else parse_rule(rule)
            mode, hook_arg = _next(conn, "hook", refund_no, default=("once", ""))
            now = self.clock()
            provider_ref, trace_ref = make_refs(refund_no)
            conn.execute(
                "INSERT INTO refunds (refund_no, provider_ref, payment_id, amount, currency,"
                " status, code, trace_ref, created_at, settle_at, settle_after_queries, fail_code,"
                " hook_mode, hook_arg, extra)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    *(refund_no, provider_ref, payment_id, amount, currency),
                    *((FAILED, arg) if declined else (PROCESSING, "")),
                    "" if declined else trace_ref,  # declined before the network: no trace
                    now,
                    None if seconds is None else now + seconds,
                    queries,
                    arg if kind == "fail_later" else "",
                    mode,
                    hook_arg,
                    json.dumps(extra or {}),
                ),
            )
            created = _get(conn, refund_no)
        self.gates.wait(refund_no, AFTER_COMMIT)  # stored, not answered yet
        return RefundOutcome("created", created, hold=kind == "timeout_after_commit")

    def query(self, refund_no: str) -> SimRefund | None:
        with self._tx() as conn:
            row = conn.execute("SELECT * FROM refunds WHERE refund_no = ?", (refund_no,)).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE refunds SET queries = queries + 1 WHERE refund_no = ?", (refund_no,)
            )
            after, at = row["settle_after_queries"], row["settle_at"]
            by_queries = after is not None and row["queries"] + 1 >= after
            if by_queries or (at is not None and self.clock() >= at):
                self._come_due(conn, row)
            return _get(conn, refund_no)

    def sweep(self) -> list[SimRefund]:
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT * FROM refunds WHERE status = ? AND settle_at IS NOT NULL"
                " AND settle_at <= ?",
                (PROCESSING, self.clock()),
            ).fetchall()
            return [self._come_due(conn, row) for row in rows]

    def settle(self, refund_no: str) -> SimRefund:
        with self._tx() as conn:
            before = _get(conn, refund_no)
            if before.status == FAILED:
                # Its money never left or already came back; a settlement now would be made up.
                raise ValueError(f"refund {refund_no!r} has already failed")
            return self._change(conn, before, SUCCESS, "")

    def fail(self, refund_no: str, code: str) -> SimRefund:
        """Fails a processing refund, or reverses a settled one (the money came back)."""
        with self._tx() as conn:
            before = _get(conn, refund_no)
            if before.status == FAILED:
                raise ValueError(f"refund {refund_no!r} has already failed")
            return self._change(conn, before, FAILED, code)

    def set_extra(self, refund_no: str, extra: dict[str, Any]) -> SimRefund:
        with self._tx() as conn:
            before = _get(conn, refund_no)
            conn.execute(
                "UPDATE refunds SET extra = ? WHERE refund_no = ?",
                (json.dumps(before.extra | extra), refund_no),
            )
            return _get(conn, refund_no)

    def refunds(self, prefix: str | None = None) -> list[SimRefund]:
        with closing(self._connect()) as conn:
            rows = conn.execute(
                "SELECT * FROM refunds WHERE substr(refund_no, 1, length(?)) = ? ORDER BY rowid",
                (prefix or "", prefix or ""),
            ).fetchall()
        return [_refund(r) for r in rows]

    def count(self, prefix: str | None = None) -> int:
        return len(self.refunds(prefix))

    # ------------------------------------------------------------------ scripting
    def script(self, prefix: str, behaviours: Sequence[Behaviour]) -> None:
        """What the next refund requests on numbers starting with ``prefix`` meet, in order:
        ``"ok"``, ``("ok", rule)``, ``"transient"``, ``"timeout_after_commit"``,
        ``("timeout_after_commit", rule)``, ``("permanent", code)`` (refused, nothing stored),
        ``("fail_later", code)`` or ``("declined", code)`` (stored as failed at once, answered
        with its id: the card networks' way, and what a repeated request finds again)."""
        self._add_scripts("refund", prefix, [_check_refund(b) for b in behaviours])

    def script_webhooks(self, prefix: str, modes: Sequence[Behaviour]) -> None:
        """How the next refunds' notifications travel: ``"once"`` (the default), ``"twice"``,
        ``"never"``, ``("late", seconds)`` or ``"out_of_order"`` (a stale snapshot after it)."""
        self._add_scripts("hook", prefix, [_check_hook(m) for m in modes])

    # ------------------------------------------------------------------ webhooks
    def due_webhooks(self) -> list[WebhookDue]:
        """Take the webhooks due now for delivery. Each stays owed until the merchant's 2xx
        (``webhook_delivered``): taking one only puts it out of sight for a lease, so if the
        host dies before the answer, it comes due again (at least once, like a provider)."""
        now = self.clock()
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT * FROM webhooks WHERE due_at <= ? ORDER BY due_at, id", (now,)
            ).fetchall()
            conn.executemany(
                "UPDATE webhooks SET due_at = ?, attempt = attempt + 1 WHERE id = ?",
                [(now + _DELIVERY_LEASE_S, r["id"]) for r in rows],
            )
        return [
            WebhookDue(
                delivery_id=str(r["id"]),
                refund=_snapshot_from_json(r["snapshot"]),
                event_id=r["event_id"],
                attempt=r["attempt"],
            )
            for r in rows
        ]

    def webhook_delivered(self, due: WebhookDue) -> None:
        """The merchant acknowledged it (2xx): nothing more is owed."""
        with self._tx() as conn:
            conn.execute("DELETE FROM webhooks WHERE id = ?", (int(due.delivery_id),))

    def webhook_failed(self, due: WebhookDue) -> None:
        """Not acknowledged: again after a backoff, up to the provider's number of tries."""
        with self._tx() as conn:
            if due.attempt >= _MAX_DELIVERIES:
                log.warning("simulator: giving up on webhook %s for %s", due.event_id, due.refund)
                conn.execute("DELETE FROM webhooks WHERE id = ?", (int(due.delivery_id),))
                return
            conn.execute(
                "UPDATE webhooks SET due_at = ? WHERE id = ?",
                (self.clock() + _backoff(due.attempt), int(due.delivery_id)),
            )

    async def hold(self) -> None:
        """Withhold an answer until the caller has given up (commit-then-timeout)."""
        await asyncio.sleep(self.hold_seconds)

    # ------------------------------------------------------------------ internals
    def _come_due(self, conn: sqlite3.Connection, row: sqlite3.Row) -> SimRefund:
        before = _refund(row)
        if before.status != PROCESSING:
            return before
        if row["fail_code"]:
            return self._change(conn, before, FAILED, row["fail_code"])
        return self._change(conn, before, SUCCESS, "")

    def _change(
        self, conn: sqlite3.Connection, before: SimRefund, status: str, code: str
    ) -> SimRefund:
        if before.status == status:
            return before
        settled_at = self.clock() if status == SUCCESS else None
        conn.execute(
            "UPDATE refunds SET status = ?, code = ?, settled_at = ? WHERE refund_no = ?",
            (status, code, settled_at, before.refund_no),
        )
        after = _get(conn, before.refund_no)
        row = conn.execute(
            "SELECT hook_mode, hook_arg FROM refunds WHERE refund_no = ?", (before.refund_no,)
        ).fetchone()
        now, mode = self.clock(), row["hook_mode"]
        deliveries: list[tuple[SimRefund, float]] = []
        if mode in ("once", "out_of_order"):
            deliveries.append((after, now))
        elif mode == "twice":
            deliveries += [(after, now), (after, now)]
        elif mode == "late":
            deliveries.append((after, now + float(row["hook_arg"])))
        if mode == "out_of_order":
            # The provider's earlier word arrives after its final one.
            deliveries.append((before, now + 0.05))
        conn.executemany(
            "INSERT INTO webhooks (refund_no, snapshot, event_id, due_at) VALUES (?, ?, ?, ?)",
            [
                (r.refund_no, _snapshot_to_json(r), event_id(r.refund_no, r.status), due)
                for r, due in deliveries
            ],
        )
        return after

    def _add_scripts(self, family: str, prefix: str, parsed: list[tuple[str, str]]) -> None:
        with self._tx() as conn:
            conn.executemany(
                "INSERT INTO scripts (family, prefix, kind, arg) VALUES (?, ?, ?, ?)",
                [(family, prefix, kind, arg) for kind, arg in parsed],
            )

    def _connect(self) -> sqlite3.Connection:
        return connect(self.path)

    def _tx(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return write_tx(self.path)


def event_id(refund_no: str, status: str) -> str:
    """Stable per (refund, status): a redelivered notification keeps its id, so dedup works."""
    return "evt_" + hashlib.sha256(f"{refund_no}|{status}".encode()).hexdigest()[:24]


def digits_ref(refund_no: str, salt: str, length: int) -> str:
    """A deterministic numeric reference (ARN, bank reference...) derived from the refund number."""
    number = int(hashlib.sha256(f"{salt}|{refund_no}".encode()).hexdigest(), 16)
    return f"{number % 10**length:0{length}d}"


def _backoff(attempt: int) -> float:
    """Seconds before delivery ``attempt + 1``: 1, 2, 4 ... up to a minute."""
    return min(0.5 * 2**attempt, 60.0)


def parse_rule(rule: str) -> tuple[float | None, int | None]:
    """``(seconds, queries)``; both None means the refund settles only when told to."""
    kind, _, value = rule.partition(":")
    try:
        if rule == "never":
            return None, None
        if kind == "seconds" and float(value) >= 0:
            return float(value), None
        if kind == "queries" and int(value) >= 1:
            return None, int(value)
    except ValueError:
        pass
    raise ValueError(f"settlement rule {rule!r}: use 'never', 'queries:N>=1' or 'seconds:S>=0'")


def _check_refund(behaviour: Behaviour) -> tuple[str, str]:
    kind, arg = (behaviour, "") if isinstance(behaviour, str) else behaviour
    if kind not in _REFUND_KINDS:
        raise ValueError(f"unknown behaviour {kind!r}; expected one of {_REFUND_KINDS}")
    if kind in ("permanent", "fail_later", "declined") and not arg:
        raise ValueError(f"{kind!r} needs the provider's failure code")
    if kind == "transient" and arg:
        raise ValueError("'transient' takes no argument")
    if kind in ("ok", "timeout_after_commit") and arg:
        parse_rule(arg)
    return kind, arg


def _check_hook(mode: Behaviour) -> tuple[str, str]:
    kind, arg = (mode, "") if isinstance(mode, str) else mode
    if kind not in _HOOK_MODES:
        raise ValueError(f"unknown webhook mode {kind!r}; expected one of {_HOOK_MODES}")
    if kind == "late":
        if float(arg or "-1") < 0:
            raise ValueError("('late', seconds) needs a delay >= 0")
    elif arg:
        raise ValueError(f"webhook mode {kind!r} takes no argument")
    return kind, arg


def _next(
    conn: sqlite3.Connection, family: str, key: str, *, default: tuple[str, str]
) -> tuple[str, str]:
    # The most specific prefix speaks first: a test can script one payout inside a refund.
    row = conn.execute(
        "SELECT id, kind, arg FROM scripts WHERE family = ? AND substr(?, 1, length(prefix)) ="
        " prefix ORDER BY length(prefix) DESC, id LIMIT 1",
        (family, key),
    ).fetchone()
    if row is None:
        return default
    conn.execute("DELETE FROM scripts WHERE id = ?", (row["id"],))
    return str(row["kind"]), str(row["arg"])


def _payment(conn: sqlite3.Connection, payment_id: str) -> SimPayment | None:
    row = conn.execute("SELECT * FROM payments WHERE payment_id = ?", (payment_id,)).fetchone()
    if row is None:
        return None
    return SimPayment(**(dict(row) | {"extra": json.loads(row["extra"])}))


def _refunds_of(conn: sqlite3.Connection, payment_id: str) -> list[SimRefund]:
    rows = conn.execute(
        "SELECT * FROM refunds WHERE payment_id = ? ORDER BY rowid", (payment_id,)
    ).fetchall()
    return [_refund(r) for r in rows]


def _find(conn: sqlite3.Connection, refund_no: str) -> SimRefund | None:
    row = conn.execute("SELECT * FROM refunds WHERE refund_no = ?", (refund_no,)).fetchone()
    return None if row is None else _refund(row)


def _get(conn: sqlite3.Connection, refund_no: str) -> SimRefund:
    found = _find(conn, refund_no)
    if found is None:
        raise KeyError(f"no simulated refund {refund_no!r}")
    return found


_FIELDS = tuple(SimRefund.__dataclass_fields__)


def _refund(row: sqlite3.Row) -> SimRefund:
    values = {name: row[name] for name in _FIELDS}
    return SimRefund(**(values | {"extra": json.loads(row["extra"])}))


def _snapshot_to_json(refund: SimRefund) -> str:
    return json.dumps({name: getattr(refund, name) for name in _FIELDS})


def _snapshot_from_json(text: str) -> SimRefund:
    return SimRefund(**json.loads(text))
