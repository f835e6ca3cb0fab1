"""SQLite's one write lock, taken in turn.

SQLite lets one transaction write at a time. A writer that finds the lock taken waits in
SQLite's busy handler, which sleeps and retries, longer and longer (up to 100 ms between tries):
under load, who gets the lock next is luck, and a writer that had bad luck once keeps sleeping
through the moments the lock is free. With a worker writing for twenty runs at once, the API's
idempotency claim waited seconds that way.

So every writing transaction first takes its place here: the threads of one process queue on a
lock of the engine's, and the one at the head takes an advisory lock on a file beside the
database (``<database>.writer-lock``), which the processes sharing the database (API, worker,
CLI) hand over among themselves, polling every millisecond or two instead of SQLite's 100 ms.
It then asks SQLite for the write lock, which is free by then. Readers never queue: in WAL mode
they read a snapshot beside the writer.

A writer that has waited the busy timeout goes on to SQLite's own wait, which then fails with
"database is locked" as it would have without the queue: nothing waits for ever.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
import weakref
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection

_HELD = "refundflow_sqlite_writer"
_POLL_FIRST_S = 0.0005
_POLL_MAX_S = 0.002


class WriterQueue:
    """One per engine: ``enter`` before BEGIN IMMEDIATE, ``leave`` when the transaction ends."""

    def __init__(self, database: str | None, *, timeout_s: float) -> None:
        self._threads = threading.Lock()
        self._timeout_s = timeout_s
        self._path = Path(f"{database}.writer-lock") if database else None
        self._fd: int | None = None

    def enter(self, conn: Connection) -> None:
        deadline = time.monotonic() + self._timeout_s
        if not self._threads.acquire(timeout=self._timeout_s):
            return  # SQLite's own wait from here
        conn.info[_HELD] = True
        if self._path is not None:
            self._take_file_lock(deadline)

    def leave(self, conn: Connection) -> None:
        self._release(conn.info)

    def leave_record(self, record: Any) -> None:
        """A connection back in the pool ends what it held (normally already released by its
        commit or rollback)."""
        self._release(record.info)

    def _release(self, info: dict[str, Any]) -> None:
        if not info.pop(_HELD, False):
            return
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._threads.release()

    def _take_file_lock(self, deadline: float) -> None:
        # Only the thread at the head of this process's queue gets here: one fd for the engine.
        if self._fd is None:
            assert self._path is not None
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            weakref.finalize(self, os.close, self._fd)
        pause = _POLL_FIRST_S
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    # Unlocking a lock not held is harmless: _release may run as usual.
                    return
                time.sleep(pause)
                pause = min(pause * 2, _POLL_MAX_S)
