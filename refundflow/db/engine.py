"""Engines and sessions: SQLite (an embedded file, the default) or PostgreSQL, same code."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlmodel import Session

from refundflow.db.sqlite_writers import WriterQueue

DEFAULT_BUSY_TIMEOUT_MS = 30_000
"""How long a SQLite writer waits for the write lock before giving up with 'database is
locked'. Transactions here are short, so a long wait only happens under real overload."""


def normalize_url(url: str | URL) -> URL:
    """Plain ``postgresql://``/``postgres://`` URLs use psycopg 3, the driver we ship."""
    parsed = make_url(url)
    if parsed.drivername in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def is_sqlite(url: str | URL) -> bool:
    return normalize_url(url).get_backend_name() == "sqlite"


def make_engine(
    url: str | URL, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS, **kwargs: Any
) -> Engine:
    """An engine with our guards switched on; ``kwargs`` go to :func:`create_engine`."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, busy_timeout_ms, kwargs)
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(parsed, **kwargs)


def _sqlite_engine(url: URL, busy_timeout_ms: int, kwargs: dict[str, Any]) -> Engine:
    database = url.database or ""
    on_disk = bool(database) and database != ":memory:" and not database.startswith("file:")
    if on_disk:
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, **kwargs)
    event.listen(engine, "connect", partial(_sqlite_on_connect, busy_timeout_ms=busy_timeout_ms))
    path = str(Path(database).expanduser()) if on_disk else None
    writers = WriterQueue(path, timeout_s=busy_timeout_ms / 1000)
    event.listen(engine, "begin", partial(_sqlite_begin, writers=writers))
    for name in ("commit", "rollback"):
        event.listen(engine, name, writers.leave)
    event.listen(engine.pool, "checkin", lambda _dbapi, record: writers.leave_record(record))
    return engine


def _sqlite_on_connect(dbapi_connection: Any, _record: Any, *, busy_timeout_ms: int) -> None:
    # sqlite3's own transaction handling defers BEGIN and ignores SAVEPOINT; we emit BEGIN
    # ourselves (below) so savepoints nest properly and rollbacks undo everything.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        # Foreign keys are off by default in SQLite, per connection.
        cursor.execute("PRAGMA foreign_keys = ON")
        # Set before WAL: switching the journal mode itself may have to wait for a lock.
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        cursor.execute("PRAGMA journal_mode = WAL")
    finally:
        cursor.close()


READONLY = "refundflow_readonly"
"""Execution option marking an engine whose sessions only read (see :func:`new_session`)."""


def _sqlite_begin(conn: Connection, *, writers: WriterQueue) -> None:
    if conn.get_execution_options().get(READONLY):
        # A WAL reader sees a consistent snapshot and neither blocks nor waits for writers.
        conn.exec_driver_sql("BEGIN DEFERRED")
        return
    writers.enter(conn)  # waits its turn (refundflow.db.sqlite_writers)
    # IMMEDIATE takes the write lock up front. A deferred transaction that reads and then
    # writes fails at once with "database is locked" if another writer committed in between
    # (its snapshot cannot be upgraded, and busy_timeout does not apply); waiting for the lock
    # at BEGIN instead turns 20 concurrent refunds into a queue that busy_timeout handles.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def new_session(engine: Engine, *, readonly: bool = False) -> Session:
    """A session; ``readonly`` for one that never writes.

    On SQLite a writing session holds the database's write lock from its first statement to
    its commit, so keep it short, and read through ``readonly`` sessions where you can: they
    run beside writers. On PostgreSQL a ``readonly`` transaction refuses writes.
    """
    bind = engine
    if readonly:
        options = {READONLY: True}
        if engine.dialect.name == "postgresql":
            options["postgresql_readonly"] = True
        bind = engine.execution_options(**options)
    # Rows stay readable after commit: callers return them from activities and handlers.
    return Session(bind, expire_on_commit=False)


@contextmanager
def session_scope(engine: Engine, *, readonly: bool = False) -> Iterator[Session]:
    """One transaction: commit when the block succeeds, roll back when it raises."""
    with new_session(engine, readonly=readonly) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


__all__ = [
    "DEFAULT_BUSY_TIMEOUT_MS",
    "READONLY",
    "Session",
    "is_sqlite",
    "make_engine",
    "new_session",
    "normalize_url",
    "session_scope",
]
