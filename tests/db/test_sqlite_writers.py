"""SQLite's one write lock: a process's writing transactions queue for it in the order they ask
(``refundflow.db.sqlite_writers``) instead of sleeping and retrying in SQLite's busy
handler; readers never queue."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from refundflow.db.engine import make_engine, new_session, session_scope


def test_writers_take_turns_and_readers_do_not_wait(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'queue.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (n INTEGER)"))
    first_in = threading.Event()
    release_first = threading.Event()
    log: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _begin(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement == "BEGIN IMMEDIATE":
            log.append(f"BEGIN {threading.current_thread().name}")

    @event.listens_for(engine, "commit")
    def _commit(_conn: Any) -> None:
        if threading.current_thread() is not threading.main_thread():  # not the reader's
            log.append(f"COMMIT {threading.current_thread().name}")

    def writer(hold: threading.Event | None) -> None:
        with session_scope(engine) as session:
            session.execute(text("INSERT INTO t VALUES (1)"))
            if hold is not None:
                first_in.set()
                hold.wait(5)

    first = threading.Thread(target=writer, args=(release_first,), name="first")
    first.start()
    assert first_in.wait(5)
    second = threading.Thread(target=writer, args=(None,), name="second")
    second.start()
    time.sleep(0.3)
    with session_scope(engine, readonly=True) as session:  # a reader meanwhile: not queued
        assert session.execute(text("SELECT count(*) FROM t")).scalar_one() == 0
    release_first.set()
    first.join(5)
    second.join(5)
    # The second writer asked SQLite for the lock only once the first had committed: it waited
    # in the queue, not in SQLite's busy handler.
    assert log == ["BEGIN first", "COMMIT first", "BEGIN second", "COMMIT second"]
    with session_scope(engine, readonly=True) as session:
        assert session.execute(text("SELECT count(*) FROM t")).scalar_one() == 2
    engine.dispose()


def test_a_failed_transaction_leaves_the_queue(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'queue.db'}", busy_timeout_ms=200)
    with pytest.raises(RuntimeError), session_scope(engine) as session:
        session.execute(text("CREATE TABLE t (n INTEGER)"))
        raise RuntimeError("the block failed")
    with session_scope(engine) as session:  # would wait for ever if the first held the queue
        session.execute(text("CREATE TABLE t (n INTEGER)"))
    with new_session(engine) as session:  # closed without commit or rollback
        session.execute(text("INSERT INTO t VALUES (1)"))
    with session_scope(engine) as session:
        session.execute(text("INSERT INTO t VALUES (2)"))
    with session_scope(engine, readonly=True) as session:
        assert session.execute(text("SELECT n FROM t")).scalars().all() == [2]
    engine.dispose()


def test_a_writer_inside_a_writer_fails_as_sqlite_would_instead_of_hanging(
    tmp_path: Path,
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'queue.db'}", busy_timeout_ms=300)
    started = time.monotonic()
    with session_scope(engine) as outer:
        outer.execute(text("CREATE TABLE t (n INTEGER)"))
        with pytest.raises(Exception, match="database is locked"), session_scope(engine) as inner:
            inner.execute(text("INSERT INTO t VALUES (1)"))
    assert time.monotonic() - started < 5
    engine.dispose()


def test_writers_of_other_processes_take_turns_through_the_lock_file(tmp_path: Path) -> None:
    """Another process's writer holds the file lock (taken here through a file description of
    its own, as another process would): ours waits for it before asking SQLite; a holder that
    outlasts the busy timeout is left to SQLite's own wait."""
    database = tmp_path / "queue.db"
    engine = make_engine(f"sqlite:///{database}", busy_timeout_ms=2000)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (n INTEGER)"))
    other = os.open(f"{database}.writer-lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(other, fcntl.LOCK_EX)
    done = threading.Event()

    def writer() -> None:
        with session_scope(engine) as session:
            session.execute(text("INSERT INTO t VALUES (1)"))
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    assert not done.wait(0.5)  # queued behind the other process
    fcntl.flock(other, fcntl.LOCK_UN)
    assert done.wait(5)
    thread.join(5)

    fcntl.flock(other, fcntl.LOCK_EX)  # and never released in time
    impatient = make_engine(f"sqlite:///{database}", busy_timeout_ms=300)
    started = time.monotonic()
    with session_scope(impatient) as session:  # SQLite's lock is free: it writes
        session.execute(text("INSERT INTO t VALUES (2)"))
    assert 0.3 <= time.monotonic() - started < 5
    os.close(other)
    impatient.dispose()
    engine.dispose()
