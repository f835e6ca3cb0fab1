"""A simulator's SQLite file: connections and write transactions, shared by the ledger, the
gates and the sandbox provider (several threads and processes use one file)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

# Long enough to queue behind every writer of a busy test run, short enough to surface a hang.
_BUSY_TIMEOUT_S = 30.0


def connect(path: Path) -> sqlite3.Connection:
    """A simulator's SQLite file in autocommit mode, so ``write_tx`` alone decides where
    transactions begin and end; rows by column name."""
    conn = sqlite3.connect(path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
    conn.row_factory = sqlite3.Row
    return conn


@contextmanager
def write_tx(path: Path) -> Iterator[sqlite3.Connection]:
    """One write transaction. IMMEDIATE takes the write lock before the first read, so a
    check-then-insert cannot interleave with another thread or process doing the same."""
    with closing(connect(path)) as conn:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
