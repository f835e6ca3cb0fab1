"""`refundflow dev` as a newcomer runs it: a real process on real ports, driven over HTTP and the
`refundflow` and `temporal` commands; stopped with Ctrl-C and started again on the same data."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.e2e.conftest import Stack, assert_private
from tests.workflows.conftest import ACCOUNT


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


def _console_links_the_run(stack: Stack, key: str, refund_id: str) -> bool:
    with httpx.Client(base_url=stack.api_url, timeout=30) as browser:
        form = browser.get("/console/sign-in").text
        csrf = form.split('name="csrf" value="')[1].split('"')[0]
        signed = browser.post("/console/sign-in", data={"csrf": csrf, "api_key": key})
        assert signed.status_code == 303, signed.text
        page = browser.get(f"/console/refunds/{refund_id}").text
    return f"/namespaces/default/workflows/refund-{refund_id}" in page


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
        # The console is where the banner says, and links runs to the stack's Temporal UI.
        assert f"Console       {stack.api_url}/console" in stack.log.read_text()
        assert _console_links_the_run(stack, admin, refund_id)
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
