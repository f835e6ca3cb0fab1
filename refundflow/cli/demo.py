"""``refundflow demo``: sample orders and one refund per scenario, started through the API of a
running dev stack, so a newcomer can follow each in the Temporal UI and over HTTP."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from refundflow.cli.remote import Api, dev_admin_key
from refundflow.devstack.simulators.dev import never_settle
from refundflow.domain.money import format_minor
from refundflow.workflows.client import refund_id_for

console = Console()
_CNY_ACCOUNT = {
    "holder_name": "Li Lei",
    "account_number": "6222020200112233",
    "bank_name": "ICBC",
    "bank_code": "ICBKCNBJ",
    "country": "CN",
    "currency": "CNY",
}
# Each provider's own id shape (Stripe refunds a PaymentIntent).
_TXN_PREFIX = {"card": "pi_", "stripe": "pi_", "alipay": "2026", "wechat": "4200"}


def _order(
    *,
    method: str,
    amount: int,
    currency: str = "CNY",
    country: str = "CN",
    status: str = "PAID",
    days_ago: int = 3,
    sku: str = "TEA-SET",
    **extra: Any,
) -> dict[str, Any]:
    now = datetime.now(UTC)
    placed = now - timedelta(days=days_ago)
    return {
        "channel": "own_store",
        "customer_id": f"cust-{uuid.uuid4().hex[:6]}",
        "country": country,
        "currency": currency,
        "placed_at": placed.isoformat(),
        "status": status,
        **(
            {"delivered_at": (now - timedelta(days=1)).isoformat()} if status == "DELIVERED" else {}
        ),
        "lines": [{"line_id": "l1", "sku": sku, "quantity": 1, "unit_price": amount}],
        "payments": [
            {
                "payment_id": "p1",
                "method": method,
                "provider_txn_id": _TXN_PREFIX.get(method, method + "-") + uuid.uuid4().hex[:16],
                "captured": amount,
                "currency": currency,
                "paid_at": placed.isoformat(),
            }
        ],
        **extra,
    }


def scenarios() -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """(name, what to look for, order, refund request) for each scenario of the demo."""
    today = datetime.now(UTC).date()
    presale = {
        "supplier_ref": "SUP-7",
        "expected_ship_date": (today + timedelta(days=20)).isoformat(),
        "production_starts_on": (today - timedelta(days=2)).isoformat(),
    }
    everything = {"items": [{"line_id": "l1", "quantity": 1}]}
    zh = {"contact": {"email": "buyer@example.com", "locale": "zh-CN"}}
    return [
        (
            "auto",
            "approved by policy, paid by Alipay, waits for the funds to arrive",
            _order(method="alipay", amount=5900),
            {**everything, "reason": "CHANGED_MIND", **zh},
        ),
        (
            "approval",
            "above the auto-approve limit: waits for one approver",
            _order(method="wechat", amount=89900),
            {**everything, "reason": "CHANGED_MIND", **zh},
        ),
        (
            "large",
            "two approvers, customer confirmation, then three installments by card",
            _order(method="card", amount=2_600_000, sku="SOFA"),
            {**everything, "reason": "NOT_AS_DESCRIBED"},
        ),
        (
            "presale",
            "in production: waits for the supplier's answer and fee",
            _order(method="alipay", amount=45000, presale=presale, sku="PRESALE-LAMP"),
            {**everything, "reason": "PRESALE_CANCEL", **zh},
        ),
        (
            "return",
            "damaged on delivery: waits for the goods to come back and be inspected",
            _order(method="wechat", amount=12800, status="DELIVERED"),
            {**everything, "reason": "DAMAGED", **zh},
        ),
        (
            "international",
            "paid in USD through PayPal, refunded in CNY to a Chinese bank account at a"
            " recorded rate, with the policy's cross-border fee",
            _order(method="paypal", amount=12000, currency="USD", country="US"),
            {
                **everything,
                "reason": "CHANGED_MIND",
                "destination": {"kind": "BANK_TRANSFER", "bank_account": _CNY_ACCOUNT},
                # The default policy takes rates from source "manual": the shop's own.
                "fx_rate": {
                    "base": "USD",
                    "quote": "CNY",
                    "rate": "7.1234",
                    "source": "manual",
                    "as_of": datetime.now(UTC).isoformat(),
                },
                "contact": {"email": "b@example.com"},
            },
        ),
        (
            "delayed",
            "paid by bank transfer, which the bank does not confirm: a delay notice follows",
            _order(method="bank_transfer", amount=15000),
            {
                **everything,
                "reason": "CHANGED_MIND",
                "destination": {"kind": "BANK_TRANSFER", "bank_account": _CNY_ACCOUNT},
                **zh,
            },
        ),
    ]


def run_demo(api_url: str, key: str, data_dir: Path) -> None:
    api = Api(api_url, dev_admin_key(key, data_dir))
    run = uuid.uuid4().hex[:6]
    started: list[tuple[str, str, str]] = []
    for name, what, order, request in scenarios():
        order_id = f"demo-{run}-{name}"
        merchant = api.call("PUT", f"/v1/orders/{order_id}", json=order)["order"]["merchant_id"]
        key = f"demo-{run}-{name}"
        if name == "delayed":
            # The bank accepts the transfer and never confirms it: the run follows up, and
            # tells the customer once the expected date has passed.
            never_settle(data_dir, "bank_transfer", f"{refund_id_for(merchant, key)}:")
        refund = api.call(
            "POST",
            "/v1/refunds",
            json={"order_id": order_id, **request},
            headers={"Idempotency-Key": key},
        )
        started.append((name, what, refund["refund_id"]))
    # A few seconds let the runs reach the stage they wait in.
    time.sleep(5)
    table = Table("scenario", "refund", "status", "what happens")
    for column in table.columns[:3]:
        column.no_wrap = True
    refunds = {name: api.call("GET", f"/v1/refunds/{rid}") for name, _, rid in started}
    for name, what, refund_id in started:
        due = _delay_notice_due(refunds[name]) if name == "delayed" else ""
        table.add_row(name, refund_id, refunds[name]["status"], what + due)
    console.print(table)
    conversion = _conversion(refunds["international"])
    if conversion:
        console.print(conversion, markup=False, soft_wrap=True)
    console.print(
        "Follow them in the Temporal UI (filter: RefundMerchant and RefundStatus), with\n"
        "`refundflow refunds show <refund>`, and approve with an approver key:\n"
        "  refundflow keys create --merchant demo --role approver --name alice\n"
        "  refundflow approve <refund> --key <that key>",
        markup=False,
    )


def _delay_notice_due(refund: dict[str, Any]) -> str:
    """When the customer of a refund waiting for its money is told it is late."""
    ends = (refund.get("live") or {}).get("window_ends_at")
    if refund["status"] != "AWAITING_FUNDS" or not ends:
        return ""
    due = datetime.fromisoformat(ends)
    if due - datetime.now(UTC) < timedelta(hours=1):  # the dev stack's fast follow-up
        return f" at {due.astimezone().strftime('%H:%M:%S')}"
    return (
        f" on {due.date().isoformat()} (start `refundflow dev --business-day-seconds 20` to see"
        " it within minutes)"
    )


def _conversion(refund: dict[str, Any]) -> str:
    quote = refund.get("quote") or {}
    fx = quote.get("fx")
    if not fx:
        return ""
    rate, source, target = fx["rate"], fx["from_currency"], fx["to_currency"]
    return (
        f"international: {format_minor(quote['total'], source)} converted at {rate['rate']}"
        f" {rate['base']}/{rate['quote']} ({rate['source']}, {rate['as_of'][:19]}) ="
        f" {format_minor(fx['converted_total'], target)}; cross-border fee"
        f" {format_minor(fx['cross_border_fee'], target)} borne by {fx['fee_bearer'].lower()};"
        f" paid out {format_minor(quote['payout_total'], target)}"
    )
