"""Gates: a fault test stops a simulator's handling of one refund request at a chosen point,
learns that the request is there, and lets it go on (or drops it) when it has crashed whatever
it wanted to crash. This turns "kill the worker while the provider has the request" into a
state to wait for instead of a moment to guess.

Two points, in the order a provider handles a refund:

- ``before_commit``: the request has arrived and nothing is stored. Dropped there, the provider
  never took it (the caller's request was lost on the way); released, it goes on as usual.
- ``after_commit``: the refund is stored and the answer not sent. Released, it is answered
  (to nobody, if the caller has died meanwhile).

A gate is armed for one refund number and catches the first request for it that reaches its
point; later requests pass. State lives in the ledger's SQLite file, so the test and a host in
another process share it. A held request holds one of the host's threads: hold one at a time.
"""

from __future__ import annotations

import time
from contextlib import closing
from pathlib import Path
from typing import Literal

from refundflow.devstack.simulators.store import connect, write_tx

Point = Literal["before_commit", "after_commit"]
BEFORE_COMMIT: Point = "before_commit"
AFTER_COMMIT: Point = "after_commit"
_POLL_S = 0.05

_SCHEMA = """
CREATE TABLE IF NOT EXISTS gates (
    refund_no TEXT PRIMARY KEY,
    point TEXT NOT NULL,
    state TEXT NOT NULL
);
"""


class Gates:
    def __init__(self, path: Path) -> None:
        self.path = path
        with closing(connect(path)) as conn:
            conn.executescript(_SCHEMA)

    # ------------------------------------------------------------------ the test's side
    def arm(self, refund_no: str, point: Point) -> None:
        with write_tx(self.path) as conn:
            conn.execute(
                "INSERT INTO gates VALUES (?, ?, 'armed') ON CONFLICT (refund_no) DO UPDATE"
                " SET point = excluded.point, state = 'armed'",
                (refund_no, point),
            )

    def arrived(self, refund_no: str) -> bool:
        """A request for ``refund_no`` is held at its gate."""
        return self._state(refund_no) == "arrived"

    def release(self, refund_no: str, *, drop: bool = False) -> None:
        """Let the held request go on, or (``drop``) end it there as if it never came."""
        with write_tx(self.path) as conn:
            conn.execute(
                "UPDATE gates SET state = ? WHERE refund_no = ?",
                ("dropped" if drop else "released", refund_no),
            )

    # ------------------------------------------------------------------ the simulator's side
    def wait(self, refund_no: str, point: Point) -> bool:
        """Called by the ledger at ``point``; blocks while a gate holds this request. False
        when the test dropped it."""
        with write_tx(self.path) as conn:
            caught = conn.execute(
                "UPDATE gates SET state = 'arrived' WHERE refund_no = ? AND point = ?"
                " AND state = 'armed'",
                (refund_no, point),
            ).rowcount
        if not caught:
            return True
        while (state := self._state(refund_no)) == "arrived":
            time.sleep(_POLL_S)
        return state != "dropped"

    def _state(self, refund_no: str) -> str:
        with closing(connect(self.path)) as conn:
            row = conn.execute(
                "SELECT state FROM gates WHERE refund_no = ?", (refund_no,)
            ).fetchone()
        return "" if row is None else str(row["state"])
