"""The simulators' ledger records and rules: the SQLite schema, payments and refunds as
stored, the scripted behaviours and settlement rules and how they are parsed, and the row
helpers the ledger (``core.py``) works with."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from typing import Any, Literal

PROCESSING, SUCCESS, FAILED = "PROCESSING", "SUCCESS", "FAILED"
Behaviour = str | tuple[str, str]
REFUND_KINDS = ("ok", "transient", "timeout_after_commit", "permanent", "fail_later", "declined")
HOOK_MODES = ("once", "twice", "never", "late", "out_of_order")
MAX_DELIVERIES = 8
# How long a webhook taken for delivery stays out of sight: past the host's HTTP timeout, so
# only a host that died holding it lets it come due again.
DELIVERY_LEASE_S = 30.0
AUTO_PAYMENT_AMOUNT = 10**9
"""What an unknown payment is taken to have captured when ``auto_payments`` is on (dev stack)."""

SCHEMA = """
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
CREATE INDEX IF NOT EXISTS refunds_provider_ref ON refunds (provider_ref);
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


def refunded_total(refunds: list[SimRefund]) -> int:
    """What the refunds of one payment take from it (a failed one takes nothing)."""
    return sum(r.amount for r in refunds if r.status != FAILED)


def event_id(refund_no: str, status: str) -> str:
    """Stable per (refund, status): a redelivered notification keeps its id, so dedup works."""
    return "evt_" + hashlib.sha256(f"{refund_no}|{status}".encode()).hexdigest()[:24]


def digits_ref(refund_no: str, salt: str, length: int) -> str:
    """A deterministic numeric reference (ARN, bank reference...) derived from the refund number."""
    number = int(hashlib.sha256(f"{salt}|{refund_no}".encode()).hexdigest(), 16)
    return f"{number % 10**length:0{length}d}"


def backoff(attempt: int) -> float:
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


def check_refund(behaviour: Behaviour) -> tuple[str, str]:
    kind, arg = (behaviour, "") if isinstance(behaviour, str) else behaviour
    if kind not in REFUND_KINDS:
        raise ValueError(f"unknown behaviour {kind!r}; expected one of {REFUND_KINDS}")
    if kind in ("permanent", "fail_later", "declined") and not arg:
        raise ValueError(f"{kind!r} needs the provider's failure code")
    if kind == "transient" and arg:
        raise ValueError("'transient' takes no argument")
    if kind in ("ok", "timeout_after_commit") and arg:
        parse_rule(arg)
    return kind, arg


def check_hook(mode: Behaviour) -> tuple[str, str]:
    kind, arg = (mode, "") if isinstance(mode, str) else mode
    if kind not in HOOK_MODES:
        raise ValueError(f"unknown webhook mode {kind!r}; expected one of {HOOK_MODES}")
    if kind == "late":
        if float(arg or "-1") < 0:
            raise ValueError("('late', seconds) needs a delay >= 0")
    elif arg:
        raise ValueError(f"webhook mode {kind!r} takes no argument")
    return kind, arg


def next_script(
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


def find_payment(conn: sqlite3.Connection, payment_id: str) -> SimPayment | None:
    row = conn.execute("SELECT * FROM payments WHERE payment_id = ?", (payment_id,)).fetchone()
    if row is None:
        return None
    return SimPayment(**(dict(row) | {"extra": json.loads(row["extra"])}))


def refunds_of_payment(conn: sqlite3.Connection, payment_id: str) -> list[SimRefund]:
    rows = conn.execute(
        "SELECT * FROM refunds WHERE payment_id = ? ORDER BY rowid", (payment_id,)
    ).fetchall()
    return [refund_from_row(r) for r in rows]


def find_refund(conn: sqlite3.Connection, refund_no: str) -> SimRefund | None:
    row = conn.execute("SELECT * FROM refunds WHERE refund_no = ?", (refund_no,)).fetchone()
    return None if row is None else refund_from_row(row)


def get_refund(conn: sqlite3.Connection, refund_no: str) -> SimRefund:
    found = find_refund(conn, refund_no)
    if found is None:
        raise KeyError(f"no simulated refund {refund_no!r}")
    return found


_FIELDS = tuple(SimRefund.__dataclass_fields__)


def refund_from_row(row: sqlite3.Row) -> SimRefund:
    values = {name: row[name] for name in _FIELDS}
    return SimRefund(**(values | {"extra": json.loads(row["extra"])}))


def snapshot_to_json(refund: SimRefund) -> str:
    return json.dumps({name: getattr(refund, name) for name in _FIELDS})


def snapshot_from_json(text: str) -> SimRefund:
    return SimRefund(**json.loads(text))
