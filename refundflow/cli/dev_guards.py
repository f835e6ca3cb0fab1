"""What ``refundflow dev`` checks and holds before it starts anything.

- One stack per data folder: an exclusive lock on ``dev.lock`` for the stack's lifetime. The
  kernel drops it when the process dies, however it dies.
- The Temporal server of a data folder runs in a session of its own (so Ctrl-C reaches the
  stack, which stops it in order), so a ``kill -9`` of the stack leaves it running. Its pid is
  kept in ``temporal.pid``; the next start stops such an orphan before binding its ports.
- Every port the stack will use is free before anything starts.
- The data folder holds keys, customers' mail and payment ledgers: only its owner may read it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

LOCK_FILE = "dev.lock"
TEMPORAL_PID_FILE = "temporal.pid"


class DevStackRefused(Exception):
    """The stack cannot start; ``code`` and the message are what the user reads."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# ---------------------------------------------------------------------------- the data folder


def make_private(folder: Path) -> None:
    """Folders 0700 and files 0600 under ``folder`` (itself included): a data folder made by
    an earlier version, or by tools run with a looser umask, is tightened before use."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            path = Path(root, name)
            if not path.is_symlink():
                path.chmod(0o700)
        for name in files:
            path = Path(root, name)
            if not path.is_symlink():
                path.chmod(0o600)


def write_private(path: Path, text: str) -> None:
    """``text`` into ``path``, readable by its owner only from the first byte."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write(text)
    path.chmod(0o600)  # an existing file keeps its old mode through O_CREAT


@contextlib.contextmanager
def data_dir_lock(folder: Path) -> Iterator[None]:
    """Held while this stack uses ``folder``; :class:`DevStackRefused` if another one does."""
    descriptor = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DevStackRefused(
                "data_dir_in_use",
                f"another `refundflow dev` uses {folder}; stop it (Ctrl-C) or pass --data-dir",
            ) from None
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


# ---------------------------------------------------------------------------- ports


@dataclass(frozen=True)
class PortUse:
    port: int
    option: str
    """The ``refundflow dev`` option that changes it, e.g. ``--api-port``."""


def busy_ports(host: str, uses: list[PortUse]) -> list[PortUse]:
    """Those of ``uses`` something already listens on (or that cannot be bound at all)."""
    return [use for use in uses if not _bindable(host, use.port)]


def _bindable(host: str, port: int) -> bool:
    # SO_REUSEADDR as servers set it: a port left in TIME_WAIT by a stack that just stopped is
    # free, one with a listener is not.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def ports_refusal(busy: list[PortUse]) -> DevStackRefused:
    if len(busy) == 1:
        use = busy[0]
        return DevStackRefused(
            "port_in_use",
            f"port {use.port} ({use.option}) is in use; stop the other stack or pass {use.option}",
        )
    listed = ", ".join(f"{use.port} ({use.option})" for use in busy)
    return DevStackRefused(
        "port_in_use",
        f"ports {listed} are in use; stop the other stack or pass those options",
    )


# ---------------------------------------------------------------------------- Temporal server


class TemporalPidFile:
    """``temporal.pid`` of a data folder: the Temporal dev server its stack started."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / TEMPORAL_PID_FILE
        self.database = folder / "temporal.db"

    def record(self, pid: int) -> None:
        write_private(self.path, f"{pid}\n")

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    def orphan(self) -> int | None:
        """The pid of this data folder's Temporal server still running without its stack."""
        try:
            pid = int(self.path.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if self._is_ours(pid) else None

    def stop_orphan(self, *, grace_s: float = 10.0) -> int | None:
        """Stop the orphan, if any (SIGTERM, then SIGKILL after ``grace_s``); its pid."""
        pid = self.orphan()
        if pid is not None:
            for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, sig)  # its own session: the group is the server
                if self._gone(pid, wait_s):
                    break
            else:
                raise DevStackRefused(
                    "temporal_orphan",
                    f"the Temporal server (pid {pid}) of {self.database.parent} did not stop",
                )
        self.clear()
        return pid

    def _gone(self, pid: int, wait_s: float) -> bool:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not self._is_ours(pid):
                return True
            time.sleep(0.1)
        return not self._is_ours(pid)

    def _is_ours(self, pid: int) -> bool:
        # The pid may have been reused since: only a dev server on this very database counts.
        # A zombie has no command line, so a server that exited counts as gone.
        command = _command_line(pid)
        return (
            command is not None
            and "start-dev" in command
            and str(self.database) in command.split("\0")
        )


def _command_line(pid: int) -> str | None:
    """The process's arguments joined by NUL, or ``None`` when there is no such process."""
    if Path("/proc/self/cmdline").exists():
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").rstrip("\0")
        except OSError:
            return None
    # No /proc (macOS): ps prints the arguments separated by spaces.
    done = subprocess.run(
        ["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, check=False
    )
    return "\0".join(done.stdout.split()) if done.returncode == 0 else None
