"""Database refusals turned into the domain's typed errors.

The database is the last line of defence (docs/architecture.md, "Books and the database"): CHECK
constraints, unique keys and triggers refuse an over-refund, a duplicate payout key, a
self-approval, an unbalanced posting and an edit of an audit row, whatever code wrote the SQL. Here
those refusals are recognised, on SQLite and PostgreSQL alike, by the constraint name or the token
our triggers put first in their message, and the repository's savepoint is rolled back so nothing of
the call remains."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import PrimaryKeyConstraint, UniqueConstraint
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, SQLModel

from refundflow.db import models as _models  # noqa: F401  (fills the metadata read below)
from refundflow.domain.errors import DomainError, OverRefund

Kind = Literal["unique", "check", "foreign_key", "not_null", "guard", "busy", "other"]

# Tokens our triggers put first in their message (see the migration).
GUARD_TOKENS = frozenset({"audit_immutable", "ledger_immutable", "unbalanced_posting"})

_PG_KINDS: dict[str, Kind] = {
    "23505": "unique",
    "23514": "check",
    "23503": "foreign_key",
    "23502": "not_null",
    "40P01": "busy",  # deadlock detected
    "40001": "busy",  # serialization failure
    "55P03": "busy",  # lock not available
}
_TOKEN = re.compile(r"^\s*(?:ERROR:\s*)?([a-z_]+):")


@dataclass(frozen=True)
class Violation:
    kind: Kind
    name: str
    """Constraint name, trigger token, or ``""`` when the database does not say."""
    message: str


def _sqlite_unique_names() -> dict[str, str]:
    # SQLite reports "UNIQUE constraint failed: t.a, t.b" without the constraint's name.
    names: dict[str, str] = {}
    for table in SQLModel.metadata.tables.values():
        for constraint in table.constraints:
            if isinstance(constraint, UniqueConstraint | PrimaryKeyConstraint):
                cols = ", ".join(f"{table.name}.{col.name}" for col in constraint.columns)
                names[cols] = str(constraint.name)
    return names


_SQLITE_UNIQUE = _sqlite_unique_names()


def violation_of(exc: DBAPIError) -> Violation:
    orig = exc.orig
    message = str(orig).strip()
    token = _TOKEN.match(message)
    if token and token.group(1) in GUARD_TOKENS:
        return Violation("guard", token.group(1), message)
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate is not None:  # psycopg
        diag = getattr(orig, "diag", None)
        name = getattr(diag, "constraint_name", None) or ""
        return Violation(_PG_KINDS.get(sqlstate, "other"), name, message)
    return _sqlite_violation(message)


def _sqlite_violation(message: str) -> Violation:
    head, _, rest = message.partition(": ")
    if head == "CHECK constraint failed":
        return Violation("check", rest, message)
    if head == "UNIQUE constraint failed":
        return Violation("unique", _SQLITE_UNIQUE.get(rest, rest), message)
    if head == "NOT NULL constraint failed":
        return Violation("not_null", rest, message)
    if message.startswith("FOREIGN KEY constraint failed"):
        return Violation("foreign_key", "", message)
    if "database is locked" in message or "database table is locked" in message:
        return Violation("busy", "", message)
    return Violation("other", "", message)


def _dup_payout(_v: Violation) -> DomainError:
    return DomainError(
        "this payout key (or refund/tranche/generation) is already registered with other data",
        code="duplicate_payout_key",
    )


DEFAULT_ERRORS: dict[str, Callable[[Violation], DomainError]] = {
    "ck_tender_balances_within_captured": lambda v: OverRefund(
        "the refund would take a payment over what was captured on it"
    ),
    "ck_reservations_amounts": lambda v: OverRefund("more would be paid out than was reserved"),
    "uq_payouts_payout_key": _dup_payout,
    "uq_payouts_refund_id_seq_generation": _dup_payout,
    "ck_approvals_not_self": lambda v: DomainError(
        "nobody approves a refund they requested", code="self_approval"
    ),
    "ck_customer_balances_non_negative": lambda v: DomainError(
        "the customer balance cannot go below zero", code="insufficient_balance"
    ),
    "unbalanced_posting": lambda v: DomainError(
        "ledger entries of a posting must be at least two and sum to zero",
        code="unbalanced_posting",
    ),
    "audit_immutable": lambda v: DomainError(
        "audit events are append-only", code="audit_immutable"
    ),
    "ledger_immutable": lambda v: DomainError(
        "ledger postings and entries are append-only", code="ledger_immutable"
    ),
}

Refine = Callable[[Violation], DomainError | None]
"""A call site's more specific error for a violation, or ``None`` for the default."""


def to_domain_error(exc: DBAPIError, refine: Refine | None = None) -> DomainError | None:
    violation = violation_of(exc)
    if violation.kind == "busy":
        return DomainError(
            f"the database is busy, try again: {violation.message}", code="database_busy"
        )
    specific = refine(violation) if refine is not None else None
    if specific is not None:
        return specific
    default = DEFAULT_ERRORS.get(violation.name)
    return default(violation) if default is not None else None


@contextmanager
def atomic(session: Session, refine: Refine | None = None) -> Iterator[None]:
    """Run the block in a savepoint of the caller's transaction.

    On a refusal the savepoint is rolled back, so the caller's earlier work survives and
    nothing of this block is written, and the refusal is raised as a typed domain error.
    Refusals nobody recognises are re-raised unchanged: they are bugs, not input errors.
    """
    try:
        with session.begin_nested():
            yield
            session.flush()
    except DBAPIError as exc:
        error = to_domain_error(exc, refine)
        if error is None:
            raise
        raise error from exc


class DuplicateRow(DomainError):
    """The row's key is taken; raised only inside this package (see ``insert_once``)."""

    code = "duplicate"


def insert_once(session: Session, row: SQLModel, *, constraint: str) -> bool:
    """Insert ``row``; ``False`` (and nothing written) when ``constraint`` says it exists.

    Idempotent writes go through here: on PostgreSQL a concurrent insert of the same key
    waits for the first transaction, then fails on the key, so callers re-read and compare.
    """

    def refine(violation: Violation) -> DomainError | None:
        if violation.kind == "unique" and violation.name == constraint:
            return DuplicateRow(f"{constraint} already holds this key")
        return None

    try:
        with atomic(session, refine):
            session.add(row)
    except DuplicateRow:
        return False
    return True
