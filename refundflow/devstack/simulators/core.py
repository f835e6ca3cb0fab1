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
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

from refundflow.devstack.simulators.gates import AFTER_COMMIT, BEFORE_COMMIT, Gates
from refundflow.devstack.simulators.records import (
    AUTO_PAYMENT_AMOUNT,
    DELIVERY_LEASE_S,
    FAILED,
    MAX_DELIVERIES,
    PROCESSING,
    SCHEMA,
    SUCCESS,
    Behaviour,
    RefundOutcome,
    SimPayment,
    SimRefund,
    WebhookDue,
    backoff,
    check_hook,
    check_refund,
    digits_ref,
    event_id,
    find_payment,
    find_refund,
    get_refund,
    next_script,
    parse_rule,
    refund_from_row,
    refunds_of_payment,
    snapshot_from_json,
    snapshot_to_json,
)
from refundflow.devstack.simulators.store import connect, write_tx

log = logging.getLogger(__name__)

__all__ = [
    "AUTO_PAYMENT_AMOUNT",
    "FAILED",
    "PROCESSING",
    "SUCCESS",
    "Behaviour",
    "RefundOutcome",
    "SimLedger",
    "SimPayment",
    "SimRefund",
    "WebhookDue",
    "digits_ref",
    "event_id",
    "parse_rule",
]

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
            conn.executescript(SCHEMA)
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
            payment = find_payment(conn, payment_id)
        assert payment is not None
        return payment

    def payment(self, payment_id: str) -> SimPayment | None:
        with closing(self._connect()) as conn:
            return find_payment(conn, payment_id)

    def refunds_of(self, payment_id: str) -> list[SimRefund]:
        with closing(self._connect()) as conn:
            return refunds_of_payment(conn, payment_id)

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
            kind, arg = next_script(conn, "refund", refund_no, default=("ok", ""))
            if kind == "transient":
                return RefundOutcome("transient")
            existing = find_refund(conn, refund_no)
            if existing is not None:
                return RefundOutcome("existing", existing)
            payment = find_payment(conn, payment_id)
            if payment is None and self.auto_payments:
                conn.execute(
                    "INSERT INTO payments VALUES (?, ?, ?, ?, '{}')",
                    (payment_id, max(amount, AUTO_PAYMENT_AMOUNT), currency, self.clock()),
                )
                payment = find_payment(conn, payment_id)
            refused = check(payment, refunds_of_payment(conn, payment_id))
            if refused:
                return RefundOutcome("refused", code=refused)
            if kind == "permanent":
                return RefundOutcome("refused", code=arg)
            declined = kind == "declined"
            rule = arg if kind in ("ok", "timeout_after_commit") and arg else self.settlement
            seconds, queries = (None, None) if declined else parse_rule(rule)
            mode, hook_arg = next_script(conn, "hook", refund_no, default=("once", ""))
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
            created = get_refund(conn, refund_no)
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
            return get_refund(conn, refund_no)

    def sweep(self) -> list[SimRefund]:
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT * FROM refunds WHERE status = ? AND settle_at IS NOT NULL"
                " AND settle_at <= ?",
                (PROCESSING, self.clock()),
            ).fetchall()
            return [self._come_due(conn, row) for row in rows]

    def settle_if_due(self, refund_no: str) -> SimRefund:
        """The refund, settled first if its time has come (not counted as a query): a
        ``seconds:0`` rule then means the money moved while the provider answered."""
        with self._tx() as conn:
            row = conn.execute("SELECT * FROM refunds WHERE refund_no = ?", (refund_no,)).fetchone()
            at = row["settle_at"]
            if at is not None and self.clock() >= at:
                return self._come_due(conn, row)
            return refund_from_row(row)

    def settle(self, refund_no: str) -> SimRefund:
        with self._tx() as conn:
            before = get_refund(conn, refund_no)
            if before.status == FAILED:
                # Its money never left or already came back; a settlement now would be made up.
                raise ValueError(f"refund {refund_no!r} has already failed")
            return self._change(conn, before, SUCCESS, "")

    def fail(self, refund_no: str, code: str) -> SimRefund:
        """Fails a processing refund, or reverses a settled one (the money came back)."""
        with self._tx() as conn:
            before = get_refund(conn, refund_no)
            if before.status == FAILED:
                raise ValueError(f"refund {refund_no!r} has already failed")
            return self._change(conn, before, FAILED, code)

    def set_extra(self, refund_no: str, extra: dict[str, Any]) -> SimRefund:
        with self._tx() as conn:
            before = get_refund(conn, refund_no)
            conn.execute(
                "UPDATE refunds SET extra = ? WHERE refund_no = ?",
                (json.dumps(before.extra | extra), refund_no),
            )
            return get_refund(conn, refund_no)

    def refunds(self, prefix: str | None = None) -> list[SimRefund]:
        with closing(self._connect()) as conn:
            rows = conn.execute(
                "SELECT * FROM refunds WHERE substr(refund_no, 1, length(?)) = ? ORDER BY rowid",
                (prefix or "", prefix or ""),
            ).fetchall()
        return [refund_from_row(r) for r in rows]

    def refund_no_by_ref(self, provider_ref: str) -> str | None:
        """The refund a provider's own reference names (the id its API handed out), whichever
        process or run created it."""
        with closing(self._connect()) as conn:
            row = conn.execute(
                "SELECT refund_no FROM refunds WHERE provider_ref = ?", (provider_ref,)
            ).fetchone()
        return None if row is None else str(row[0])

    def count(self, prefix: str | None = None) -> int:
        return len(self.refunds(prefix))

    # ------------------------------------------------------------------ scripting
    def script(self, prefix: str, behaviours: Sequence[Behaviour]) -> None:
        """What the next refund requests on numbers starting with ``prefix`` meet, in order:
        ``"ok"``, ``("ok", rule)``, ``"transient"``, ``"timeout_after_commit"``,
        ``("timeout_after_commit", rule)``, ``("permanent", code)`` (refused, nothing stored),
        ``("fail_later", code)`` or ``("declined", code)`` (stored as failed at once, answered
        with its id: the card networks' way, and what a repeated request finds again)."""
        self._add_scripts("refund", prefix, [check_refund(b) for b in behaviours])

    def script_webhooks(self, prefix: str, modes: Sequence[Behaviour]) -> None:
        """How the next refunds' notifications travel: ``"once"`` (the default), ``"twice"``,
        ``"never"``, ``("late", seconds)`` or ``"out_of_order"`` (a stale snapshot after it)."""
        self._add_scripts("hook", prefix, [check_hook(m) for m in modes])

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
                [(now + DELIVERY_LEASE_S, r["id"]) for r in rows],
            )
        return [
            WebhookDue(
                delivery_id=str(r["id"]),
                refund=snapshot_from_json(r["snapshot"]),
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
            if due.attempt >= MAX_DELIVERIES:
                log.warning("simulator: giving up on webhook %s for %s", due.event_id, due.refund)
                conn.execute("DELETE FROM webhooks WHERE id = ?", (int(due.delivery_id),))
                return
            conn.execute(
                "UPDATE webhooks SET due_at = ? WHERE id = ?",
                (self.clock() + backoff(due.attempt), int(due.delivery_id)),
            )

    async def hold(self) -> None:
        """Withhold an answer until the caller has given up (commit-then-timeout)."""
        await asyncio.sleep(self.hold_seconds)

    # ------------------------------------------------------------------ internals
    def _come_due(self, conn: sqlite3.Connection, row: sqlite3.Row) -> SimRefund:
        before = refund_from_row(row)
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
        after = get_refund(conn, before.refund_no)
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
                (r.refund_no, snapshot_to_json(r), event_id(r.refund_no, r.status), due)
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
