"""Child processes a fault test or the bench starts, kills and restarts: each in a process
group of its own (so a kill reaches whatever it started too), logging to a file, and all
stopped at the end whatever happened."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from temporalio.client import Client

_GRACE_S = 15.0


class Processes:
    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.logs.mkdir(parents=True, exist_ok=True)
        self._running: dict[str, subprocess.Popen[bytes]] = {}
        self.kills: dict[str, int] = {}
        """How many times each process was killed with SIGKILL."""

    def start(
        self, name: str, args: Sequence[str], env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        assert not self.alive(name), f"{name} is already running"
        with (self.logs / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                list(args),
                env=dict(env) if env is not None else None,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._running[name] = process
        return process

    def alive(self, name: str) -> bool:
        process = self._running.get(name)
        return process is not None and process.poll() is None

    def pid(self, name: str) -> int:
        return self._running[name].pid

    def environment(self, name: str) -> dict[str, str]:
        """The environment the running process ``name`` was started with, as the kernel has it."""
        raw = Path(f"/proc/{self._running[name].pid}/environ").read_bytes()
        pairs = [item.partition(b"=") for item in raw.split(b"\0") if item]
        return {key.decode(): value.decode() for key, _, value in pairs}

    def kill9(self, name: str) -> None:
        """SIGKILL, as a crash: no handler runs, nothing is flushed or closed."""
        process = self._running.pop(name)
        _signal_group(process, signal.SIGKILL)
        process.wait()
        self.kills[name] = self.kills.get(name, 0) + 1

    def stop(self, name: str) -> None:
        """SIGTERM, then SIGKILL if the process has not ended after a grace period."""
        process = self._running.pop(name, None)
        if process is None:
            return
        _signal_group(process, signal.SIGTERM)
        try:
            process.wait(timeout=_GRACE_S)
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait()
        # Whatever the process started in its group goes too.
        _signal_group(process, signal.SIGKILL)

    def stop_all(self) -> None:
        for name in list(reversed(self._running)):
            self.stop(name)

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.logs / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


def temporal_dev_server_args(
    binary: str, *, port: int, http_port: int, db_file: Path, flags: Sequence[str] = ()
) -> list[str]:
    """A headless Temporal dev server on 127.0.0.1 keeping its state in ``db_file`` (WAL, so a
    kill loses nothing committed), with ``flags`` besides (e.g. refundflow's search attributes,
    ``refundflow.workflows.search_attributes.dev_server_flags()``)."""
    return [
        *(binary, "server", "start-dev", "--ip", "127.0.0.1", "--headless"),
        *("--port", str(port), "--http-port", str(http_port), "--db-filename", str(db_file)),
        *("--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal"),
        *("--log-level", "error"),
        *flags,
    ]


async def wait_for_temporal(
    processes: Processes, address: str, *, name: str = "temporal", patience_s: float = 120.0
) -> None:
    """Until the Temporal server ``name`` started answers on ``address`` with its shards loaded;
    its log's tail if it dies or takes longer than ``patience_s``."""
    deadline = time.monotonic() + patience_s
    while time.monotonic() < deadline:
        if not processes.alive(name):
            raise RuntimeError(f"the Temporal server died:\n{processes.log_tail(name)}")
        try:
            client = await Client.connect(address)
            await client.count_workflows()  # answered only once the shards are loaded
            return
        except Exception:  # not listening yet, or still loading its state
            await asyncio.sleep(0.2)
    raise RuntimeError(f"the Temporal server did not come up:\n{processes.log_tail(name)}")
