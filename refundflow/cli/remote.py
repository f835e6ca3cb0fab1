"""Approver and ops commands. They go through the HTTP API like any client, so roles, merchant
scoping and the workflow's own validation apply exactly as they do to the service desk."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.table import Table

from refundflow.cli.output import console, die
from refundflow.domain.money import format_minor

ApiUrl = Annotated[
    str,
    typer.Option("--api-url", envvar="REFUNDFLOW_API_URL", help="Base URL of the refundflow API."),
]
ApiKey = Annotated[
    str,
    typer.Option(
        "--key",
        envvar="REFUNDFLOW_API_KEY",
        help="Bearer API key (approver/ops/admin as the command needs).",
    ),
]
DataDir = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        envvar="REFUNDFLOW_DATA_DIR",
        help="Without --key: the dev stack's data folder, whose admin.key is used.",
    ),
]
DEFAULT_URL = "http://127.0.0.1:8000"
# Written by `refundflow dev`; read by the commands a developer runs beside it.
ADMIN_KEY_FILE = "admin.key"

refunds_app = typer.Typer(help="Read refunds.", no_args_is_help=True)
ops_app = typer.Typer(help="Repair a refund's run (ops role).", no_args_is_help=True)


class Api:
    def __init__(self, url: str, key: str) -> None:
        if not key:
            die("missing_key", "pass --key or set REFUNDFLOW_API_KEY")
        self.client = httpx.Client(
            base_url=url.rstrip("/"), headers={"Authorization": f"Bearer {key}"}, timeout=30.0
        )

    def call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            response = self.client.request(method, path, **kw)
        except httpx.HTTPError as exc:
            die("unreachable", f"{self.client.base_url}: {exc}")
        if response.is_success:
            return response.json()
        try:
            problem = response.json()
        except ValueError:
            problem = {"code": str(response.status_code), "detail": response.text}
        die(str(problem.get("code", response.status_code)), str(problem.get("detail", "")))


def dev_admin_key(key: str, data_dir: Path) -> str:
    """``key`` when given, else the dev stack's admin key from ``data_dir``."""
    if key:
        return key
    path = data_dir / ADMIN_KEY_FILE
    try:
        return path.read_text().strip()
    except OSError:
        die(
            "missing_key",
            f"no --key, no REFUNDFLOW_API_KEY and no {path} (written by `refundflow dev`)",
        )


def _money(refund: dict[str, Any]) -> str:
    return format_minor(int(refund["total"]), str(refund["currency"]))


@refunds_app.command("list")
def refunds_list(
    status: Annotated[str | None, typer.Option(help="Only this status.")] = None,
    order_id: Annotated[str | None, typer.Option("--order", help="Only this order.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 50,
    api_url: ApiUrl = DEFAULT_URL,
    key: ApiKey = "",
    data_dir: DataDir = Path("data"),
) -> None:
    """Refunds of your merchant, newest first."""
    params = {k: v for k, v in {"status": status, "order_id": order_id}.items() if v}
    api, cursor = Api(api_url, dev_admin_key(key, data_dir)), None
    rows: list[dict[str, Any]] = []
    while len(rows) < limit:
        page = api.call(
            "GET", "/v1/refunds", params=params | ({"cursor": cursor} if cursor else {})
        )
        rows += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    table = Table("refund", "status", "amount", "order", "reason", "updated")
    for column in table.columns[:3]:
        column.no_wrap = True  # ids and statuses are copied whole, never wrapped
    for r in rows[:limit]:
        table.add_row(
            r["refund_id"], r["status"], _money(r), r["order_id"], r["reason"], r["updated_at"][:16]
        )
    console.print(table)


@refunds_app.command("show")
def refunds_show(
    refund_id: str,
    api_url: ApiUrl = DEFAULT_URL,
    key: ApiKey = "",
    data_dir: DataDir = Path("data"),
) -> None:
    """One refund: status, amount, approvals, payouts and its timeline."""
    r = Api(api_url, dev_admin_key(key, data_dir)).call("GET", f"/v1/refunds/{refund_id}")
    console.print(f"[bold]{r['refund_id']}[/bold]  order {r['order_id']}  [bold]{r['status']}[/]")
    console.print(f"amount {_money(r)}  reason {r['reason']}  workflow {r['workflow_id']}")
    live = r.get("live") or {}
    for approval in live.get("approvals", []):
        console.print(f"approval: {approval.get('approver_id')} {approval.get('decision')}")
    payouts = live.get("payouts", [])
    if payouts:
        table = Table("key", "route", "amount", "status", "provider ref", "trace")
        for p in payouts:
            amount = format_minor(int(p["payout_amount"]), str(p["payout_currency"]))
            table.add_row(
                p["key"], p["route"], amount, p["status"], p["provider_ref"], p["trace_ref"]
            )
        console.print(table)
    timeline = live.get("timeline", [])
    if timeline:
        table = Table("at", "event", "actor", "message")
        for t in timeline:
            table.add_row(
                str(t.get("at"))[:19], t.get("kind", ""), t.get("actor", ""), t["message"]
            )
        console.print(table)


def _decide(refund_id: str, decision: str, comment: str, api_url: str, key: str) -> None:
    api = Api(api_url, key)
    refund = api.call("GET", f"/v1/refunds/{refund_id}")
    if not refund.get("quote_fingerprint"):
        die("no_quote", f"refund {refund_id} has no quote to decide on")
    # The fingerprint ties the decision to the amount the approver saw.
    body = {
        "decision": decision,
        "quote_fingerprint": refund["quote_fingerprint"],
        "comment": comment,
    }
    out = api.call("POST", f"/v1/refunds/{refund_id}/decisions", json=body)
    verb = "approved" if decision == "APPROVE" else "rejected"
    # An approval says how many the refund has of those it needs ("1/2 approvals").
    counted = f" ({out['detail']})" if decision == "APPROVE" and out.get("detail") else ""
    console.print(
        f"{verb} {refund_id}: status {out['status']}{counted}", markup=False, soft_wrap=True
    )


def approve(
    refund_id: str,
    comment: Annotated[str, typer.Option(help="Why, for the audit trail.")] = "",
    api_url: ApiUrl = DEFAULT_URL,
    key: ApiKey = "",
) -> None:
    """Approve a refund waiting for you (approver role; never your own request)."""
    _decide(refund_id, "APPROVE", comment, api_url, key)


def reject(
    refund_id: str,
    comment: Annotated[str, typer.Option(help="The reason the customer will read.")] = "",
    api_url: ApiUrl = DEFAULT_URL,
    key: ApiKey = "",
) -> None:
    """Reject a refund waiting for you (approver role)."""
    _decide(refund_id, "REJECT", comment, api_url, key)


def _ops(refund_id: str, api_url: str, key: str, **body: Any) -> None:
    body = {k: v for k, v in body.items() if v not in (None, "")}
    out = Api(api_url, key).call("POST", f"/v1/refunds/{refund_id}/ops-actions", json=body)
    console.print(f"{body['action']} {refund_id}: {out}")


Note = Annotated[str, typer.Option(help="Why, for the audit trail.")]


@ops_app.command("retry")
def ops_retry(
    refund_id: str, note: Note = "", api_url: ApiUrl = DEFAULT_URL, key: ApiKey = ""
) -> None:
    """Retry failed or unknown payouts (an unknown one keeps its key: the provider is asked
    first, so it is never paid twice)."""
    _ops(refund_id, api_url, key, action="retry_payout", note=note)


@ops_app.command("switch")
def ops_switch(
    refund_id: str,
    to: Annotated[str, typer.Option(help="BALANCE or BANK_TRANSFER.")],
    holder: Annotated[str, typer.Option(help="Account holder (bank transfer).")] = "",
    account: Annotated[str, typer.Option(help="Account number / IBAN (bank transfer).")] = "",
    bank: Annotated[str, typer.Option(help="Bank name (bank transfer).")] = "",
    bank_code: Annotated[str, typer.Option(help="SWIFT/BIC or CNAPS (bank transfer).")] = "",
    country: Annotated[str, typer.Option(help="Bank country, ISO 3166 (bank transfer).")] = "",
    currency: Annotated[str, typer.Option(help="Account currency (bank transfer).")] = "",
    note: Note = "",
    api_url: ApiUrl = DEFAULT_URL,
    key: ApiKey = "",
) -> None:
    """Pay failed payouts to another destination (a new key generation)."""
    destination: dict[str, Any] = {"kind": to.upper()}
    if to.upper() == "BANK_TRANSFER":
        destination["bank_account"] = {
            "holder_name": holder,
            "account_number": account,
            "bank_name": bank,
            "bank_code": bank_code,
            "country": country,
            "currency": currency,
        }
    _ops(refund_id, api_url, key, action="switch_destination", destination=destination, note=note)


@ops_app.command("settle")
def ops_settle(
    refund_id: str,
    reference: Annotated[str, typer.Option(help="The out-of-band payment reference.")],
    note: Note = "",
    api_url: ApiUrl = DEFAULT_URL,
    key: ApiKey = "",
) -> None:
    """Mark payouts settled that were paid outside the provider flow."""
    _ops(refund_id, api_url, key, action="mark_settled", reference=reference, note=note)


@ops_app.command("cancel")
def ops_cancel(
    refund_id: str, note: Note = "", api_url: ApiUrl = DEFAULT_URL, key: ApiKey = ""
) -> None:
    """Cancel a refund before any payout."""
    _ops(refund_id, api_url, key, action="cancel", note=note)


@ops_app.command("resume")
def ops_resume(
    refund_id: str, note: Note = "", api_url: ApiUrl = DEFAULT_URL, key: ApiKey = ""
) -> None:
    """Resume an escalated refund in the stage it stopped in, with fresh deadlines."""
    _ops(refund_id, api_url, key, action="resume", note=note)
