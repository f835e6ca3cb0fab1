"""`refundflow dev` as a newcomer runs it: a real process on real ports (the `stack` fixture),
stopped with Ctrl-C; a Temporal server a test left behind is killed at the end."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from refundflow.devstack.ports import free_ports

BIN = Path(sys.executable).parent


class Stack:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        ports = free_ports(6)
        self.api_port, self.temporal_port, self.ui_port, self.sim_port, self.smtp_port = ports[:5]
        self.codec_port = ports[5]
        self.process: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / "dev.log"
        self.extra_args: list[str] = []

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self.args(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"{self.api_url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"the dev stack did not get ready:\n{self.log.read_text()}")

    def args(self) -> list[str]:
        return [
            *(str(BIN / "refundflow"), "dev", "--data-dir", str(self.data_dir)),
            *("--api-port", str(self.api_port), "--temporal-port", str(self.temporal_port)),
            *("--ui-port", str(self.ui_port), "--sim-port", str(self.sim_port)),
            *("--smtp-port", str(self.smtp_port), "--codec-port", str(self.codec_port)),
            *self.extra_args,
        ]

    def refused(self) -> subprocess.CompletedProcess[str]:
        """A start expected to stop at once: its exit status and everything it printed."""
        return subprocess.run(
            self.args(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60
        )

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)  # what Ctrl-C sends
        try:
            return self.process.wait(timeout=60)
        finally:
            if self.process.poll() is None:
                self.process.kill()

    def cli(self, *args: str) -> str:
        # The data folder's keys, not the test session's.
        env = {k: v for k, v in os.environ.items() if k != "REFUNDFLOW_PAYLOAD_KEYS"}
        env["REFUNDFLOW_DATA_DIR"] = str(self.data_dir)
        done = subprocess.run(
            [str(BIN / "refundflow"), *args], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def temporal_list(self, query: str) -> list[dict[str, Any]]:
        done = subprocess.run(
            [
                *(str(BIN / "temporal"), "workflow", "list"),
                *("--address", f"127.0.0.1:{self.temporal_port}", "--query", query),
                *("--output", "json"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        found: list[dict[str, Any]] = json.loads(done.stdout or "[]")
        return found


def temporal_servers(data_dir: Path) -> list[int]:
    """Pids of Temporal dev servers running on ``data_dir``'s database (Linux /proc)."""
    database = str(data_dir / "temporal.db").encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"start-dev" in args and database in args:
            found.append(int(entry.name))
    return found


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path / "data")
    try:
        yield s
    finally:
        if s.process is not None and s.process.poll() is None:
            # Ctrl-C first: a killed stack would leave its Temporal server running.
            s.stop()
        for pid in temporal_servers(s.data_dir):  # left by a test that failed half-way
            os.kill(pid, signal.SIGKILL)


def assert_private(data_dir: Path) -> None:
    """Folders 0700 and files 0600, everything under ``data_dir`` included."""
    loose = {}
    for path in [data_dir, *data_dir.rglob("*")]:
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:  # a SQLite journal that came and went meanwhile
            continue
        wanted = 0o700 if stat.S_ISDIR(mode) else 0o600
        if not stat.S_ISLNK(mode) and stat.S_IMODE(mode) != wanted:
            loose[str(path.relative_to(data_dir))] = oct(stat.S_IMODE(mode))
    assert loose == {}
    names = {p.name for p in data_dir.rglob("*")}
    assert {"refundflow.db", "temporal.db", "admin.key", "encryption.keys", "ledger.db"} <= names
