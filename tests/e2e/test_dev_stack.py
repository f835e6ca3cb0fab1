"""`refundflow dev` as a newcomer runs it: a real process on real ports, driven over HTTP and the
`refundflow` and `temporal` commands; stopped with Ctrl-C and started again on the same data."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.ports import free_ports
from tests.workflows.conftest import ACCOUNT

BIN = Path(sys.executable).parent


class Stack:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.api_port, self.temporal_port, self.ui_port, self.sim_port, self.smtp_port = free_ports(
            5
        )
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
            *("--smtp-port", str(self.smtp_port)),
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
        env = {**os.environ, "REFUNDFLOW_DATA_DIR": str(self.data_dir)}
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


def _client(stack: Stack, key: str) -> httpx.Client:
    return httpx.Client(
        base_url=stack.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )


def _wait_status(http: httpx.Client, refund_id: str, wanted: str, seconds: float = 60) -> None:
    deadline, status = time.monotonic() + seconds, ""
    while time.monotonic() < deadline:
        status = http.get(f"/v1/refunds/{refund_id}").json()["status"]
        if status == wanted:
            return
        time.sleep(0.5)
    raise AssertionError(f"{refund_id} stayed {status}, never {wanted}")


def _wait_settled(http: httpx.Client, refund_id: str, seconds: float = 30) -> list[Any]:
    deadline = time.monotonic() + seconds
    while True:
        payouts: list[Any] = http.get(f"/v1/refunds/{refund_id}").json()["live"]["payouts"]
        if all(p["status"] == "settled" for p in payouts) or time.monotonic() > deadline:
            return payouts
        time.sleep(0.5)


def _order(method: str, amount: int) -> dict[str, Any]:
    placed = (datetime.now(UTC) - timedelta(days=2)).isoformat()
    return {
        "channel": "own_store",
        "customer_id": "cust-1",
        "country": "CN",
        "currency": "CNY",
        "placed_at": placed,
        "status": "PAID",
        "lines": [{"line_id": "l1", "sku": "KETTLE", "quantity": 1, "unit_price": amount}],
        "payments": [
            {
                "payment_id": "p1",
                "method": method,
                # A card payment is a Stripe PaymentIntent.
                "provider_txn_id": f"{'pi_' if method == 'card' else 'txn-'}{method}{amount}",
                "captured": amount,
                "currency": "CNY",
                "paid_at": placed,
            }
        ],
    }


def _start_refund(
    http: httpx.Client, order_id: str, method: str, amount: int, **request: Any
) -> str:
    assert http.put(f"/v1/orders/{order_id}", json=_order(method, amount)).status_code == 200
    response = http.post(
        "/v1/refunds",
        json={
            "order_id": order_id,
            "items": [{"line_id": "l1", "quantity": 1}],
            "reason": "CHANGED_MIND",
            "contact": {"email": "c1@example.com", "locale": "zh-CN"},
            **request,
        },
        headers={"Idempotency-Key": f"smoke-{order_id}"},
    )
    assert response.status_code == 202, response.text
    return str(response.json()["refund_id"])


def test_dev_stack_from_first_start_to_a_completed_refund_and_back(stack: Stack) -> None:
    stack.start()
    admin = (stack.data_dir / "admin.key").read_text().strip()
    approver = stack.cli(
        "keys", "create", "--merchant", "demo", "--role", "approver", "--name", "alice"
    ).strip()
    with _client(stack, admin) as http:
        refund_id = _start_refund(http, "smoke-1", "alipay", 89900)
        _wait_status(http, refund_id, "AWAITING_APPROVAL")
        stack.cli("approve", refund_id, "--key", approver, "--api-url", stack.api_url)
        # The simulator settles the payout; the customer then says the money arrived.
        _wait_status(http, refund_id, "AWAITING_FUNDS")
        assert http.post(f"/v1/refunds/{refund_id}/receipt", json={"received": True}).is_success
        _wait_status(http, refund_id, "COMPLETED")
        # The customer's notices went through the dev mail server into the mail folder.
        mails = sorted((stack.data_dir / "mail").glob("*.eml"))
        assert mails and all(b"Subject:" in m.read_bytes() for m in mails)
        # Keys, the customers' mail, ledgers and both databases are the user's alone, and
        # the admin key is never printed (its file is named instead).
        assert_private(stack.data_dir)
        assert admin not in stack.log.read_text()
        assert f"Admin key     {stack.data_dir / 'admin.key'}" in stack.log.read_text()
        waiting = _start_refund(http, "smoke-2", "wechat", 99900)
        _wait_status(http, waiting, "AWAITING_APPROVAL")

    completed = stack.temporal_list("RefundStatus='COMPLETED'")
    assert f"refund-{refund_id}" in [w["execution"]["workflowId"] for w in completed]
    assert stack.stop() == 0

    stack.start()
    assert (stack.data_dir / "admin.key").read_text().strip() == admin  # still valid, reused
    with _client(stack, admin) as http:
        assert http.get(f"/v1/refunds/{refund_id}").json()["status"] == "COMPLETED"
        # The run that was waiting when the stack stopped goes on where it was.
        stack.cli("approve", waiting, "--key", approver, "--api-url", stack.api_url)
        _wait_status(http, waiting, "AWAITING_FUNDS")

        # Every other provider, each through its own simulator (no fallback to the balance).
        to_bank = {"destination": {"kind": "BANK_TRANSFER", "bank_account": ACCOUNT}}
        small = {
            "card": _start_refund(http, "smoke-card", "card", 5000),
            "paypal": _start_refund(http, "smoke-paypal", "paypal", 6000),
            "bank_transfer": _start_refund(http, "smoke-bank", "alipay", 7000, **to_bank),
        }
        for route, rid in small.items():
            _wait_status(http, rid, "AWAITING_FUNDS")
            payouts = _wait_settled(http, rid)
            assert [(p["route"], p["status"]) for p in payouts] == [(route, "settled")]

        # Approver and ops commands, as an approver and ops would type them.
        rejected = _start_refund(http, "smoke-reject", "alipay", 99800)
        cancelled = _start_refund(http, "smoke-cancel", "alipay", 99700)
        for rid in (rejected, cancelled):
            _wait_status(http, rid, "AWAITING_APPROVAL")
        remote = ("--api-url", stack.api_url)
        stack.cli(
            "reject", rejected, "--comment", "not as described? photos", "--key", approver, *remote
        )
        stack.cli(
            "ops", "cancel", cancelled, "--note", "customer withdrew", "--key", admin, *remote
        )
        _wait_status(http, rejected, "REJECTED")
        _wait_status(http, cancelled, "CANCELLED")
        listed = stack.cli("refunds", "list", "--status", "COMPLETED", "--key", admin, *remote)
        assert refund_id in listed and waiting not in listed
        shown = stack.cli("refunds", "show", refund_id, "--key", admin, *remote)
        assert "COMPLETED" in shown and "payout_settled" in shown and "alice" in shown
    assert f"refund-{refund_id}" in [
        w["execution"]["workflowId"] for w in stack.temporal_list("RefundStatus='COMPLETED'")
    ]
    assert stack.stop() == 0
