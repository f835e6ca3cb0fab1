"""Core statements beside the ORM, for the writes a refund makes many times.

Through the ORM a statement cost 120-250 microseconds of Python (a statement object built per
call, then the unit of work or the ORM's bulk-update path); the same SQL built once at import
and executed with new parameters costs 17-40 (``docs/performance.md``, "Statements built
once"). Such a statement bypasses the session's bookkeeping, so the session must not hold rows
unwritten that it should precede (:func:`flush_pending`), nor copies it changes
(:func:`expire_copy`).
"""

from __future__ import annotations

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm.util import identity_key
from sqlmodel import Session, SQLModel


def table_of(model: type[SQLModel]) -> Table:
    return model.metadata.tables[str(model.__tablename__)]


def upsert_into(session: Session, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT into ``table`` that can say ON CONFLICT, in the session's dialect (the only
    two we run on spell it the same)."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def flush_pending(session: Session) -> None:
    """Write what the session holds unwritten, so a Core statement comes after it."""
    if session.new or session.dirty or session.deleted:
        session.flush()


def expire_copy(session: Session, model: type[SQLModel], key: object) -> None:
    """A copy of the row this session holds is read again when next used: a Core statement
    changed the row behind the ORM's back."""
    held = session.identity_map.get(identity_key(model, key))
    if held is not None:
        session.expire(held)
