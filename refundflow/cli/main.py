"""The ``refundflow`` command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from refundflow.cli import cluster, deploy, remote
from refundflow.cli.output import console, err_console, say_error
from refundflow.domain.calculation import compute_quote
from refundflow.domain.errors import DomainError
from refundflow.domain.money import format_minor, to_major
from refundflow.domain.orders import OrderSnapshot, RefundRequest
from refundflow.domain.policy import DEFAULT_POLICY, Policy
from refundflow.domain.quote import Quote
from refundflow.settings import Settings

app = typer.Typer(
    help="refundflow: every refund as a durable Temporal workflow.", no_args_is_help=True
)
policy_app = typer.Typer(help="Refund policy documents.", no_args_is_help=True)
db_app = typer.Typer(help="The refundflow database.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys (run where the database is).", no_args_is_help=True)
merchants_app = typer.Typer(
    help="Merchant settings (run where the database is).", no_args_is_help=True
)
secrets_app = typer.Typer(help="Encryption keys for secrets at rest.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
app.add_typer(merchants_app, name="merchants")
app.add_typer(secrets_app, name="secrets")
app.add_typer(remote.refunds_app, name="refunds")
app.add_typer(remote.ops_app, name="ops")
app.add_typer(deploy.deploy_app, name="deploy")
app.command()(deploy.replay)
app.command()(cluster.setup)
app.command()(cluster.check)
app.command()(remote.approve)
app.command()(remote.reject)


def _fail(exc: DomainError) -> typer.Exit:
    say_error(exc.code, exc.message)
    return typer.Exit(code=2)


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise _fail(DomainError(f"cannot read {path}: {exc}", code="invalid_file")) from None


def _load_policy(path: Path | None) -> Policy:
    if path is None:
        return DEFAULT_POLICY
    try:
        return Policy.from_yaml(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise _fail(DomainError(f"cannot read {path}: {exc}", code="invalid_file")) from None
    except DomainError as exc:
        raise _fail(exc) from None


PolicyOption = Annotated[
    Path | None, typer.Option("--policy", help="Policy YAML; the built-in default when omitted.")
]


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or upgrade the database named by REFUNDFLOW_DATABASE_URL (SQLite by default)."""
    from refundflow.db.migrate import current, upgrade
    from refundflow.settings import get_settings

    settings = get_settings()
    url = settings.resolved_database_url
    if url.startswith("sqlite:///"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(url)
    console.print(f"database at revision [bold]{current(url)}[/bold]")


@keys_app.command("create")
def keys_create(
    merchant: Annotated[str, typer.Option(help="The merchant the key acts for.")],
    name: Annotated[
        str,
        typer.Option(
            help="Who holds it (required): requests and approvals are attributed to it, and"
            " two approvals need two different names."
        ),
    ],
    role: Annotated[
        str, typer.Option(help="client, approver, warehouse, ops or admin.")
    ] = "client",
    create_merchant: Annotated[
        bool, typer.Option(help="Create the merchant if it does not exist yet.")
    ] = False,
) -> None:
    """Create an API key and print its secret, once (only a hash is stored)."""
    from refundflow.db.engine import make_engine, session_scope
    from refundflow.db.repository import create_api_key, get_merchant, upsert_merchant
    from refundflow.settings import get_settings

    engine = make_engine(get_settings().resolved_database_url)
    try:
        with session_scope(engine) as session:
            if create_merchant and get_merchant(session, merchant_id=merchant) is None:
                upsert_merchant(session, merchant_id=merchant)
            row, token = create_api_key(session, merchant_id=merchant, name=name, role=role)
    except DomainError as exc:
        raise _fail(exc) from None
    finally:
        engine.dispose()
    err_console.print(f"key {row.key_id}: role {role}, merchant {merchant}, name {row.name}")
    console.print(token)


@merchants_app.command("webhook")
def merchants_webhook(
    merchant: Annotated[str, typer.Option(help="The merchant.")],
    url: Annotated[
        str, typer.Option(help="Where refund events are POSTed; 'off' switches them off.")
    ],
) -> None:
    """Send the merchant every refund event, signed (header Refundflow-Signature: t=..,v1=..,
    HMAC-SHA256 over "{t}.{body}"). Prints the signing secret; the database keeps it sealed
    with the encryption keys (REFUNDFLOW_ENCRYPTION_KEYS or REFUNDFLOW_ENCRYPTION_KEYS_FILE)."""
    from refundflow.crypto import KeyringError
    from refundflow.db.engine import make_engine, session_scope
    from refundflow.db.repository import set_merchant_webhook
    from refundflow.settings import get_settings

    settings = get_settings()
    try:
        keyring = settings.keyring()
    except KeyringError as exc:
        raise _fail(DomainError(exc.message, code=exc.code)) from None
    engine = make_engine(settings.resolved_database_url)
    try:
        with session_scope(engine) as session:
            hook = set_merchant_webhook(
                session, merchant_id=merchant, url=None if url == "off" else url, keyring=keyring
            )
    except (DomainError, KeyringError) as exc:
        raise _fail(DomainError(exc.message, code=exc.code)) from None
    finally:
        engine.dispose()
    if hook is not None:
        err_console.print(f"merchant {merchant}: events go to {url}; signing secret:")
        console.print(hook.secret, markup=False)
    else:
        err_console.print(f"merchant {merchant}: webhook off")


@secrets_app.command("new-key")
def secrets_new_key(
    key_id: Annotated[
        str, typer.Option(help="Its id, stored with every value it seals (e.g. the date).")
    ],
) -> None:
    """Print a new encryption key entry, '<key id>:<base64 key>'. Put it first in
    REFUNDFLOW_ENCRYPTION_KEYS (comma-separated) or the keys file, keeping the older keys after
    it: workers seal every secret again with it when they start."""
    from refundflow.crypto import KeyringError, new_key_entry

    try:
        console.print(new_key_entry(key_id), markup=False)
    except KeyringError as exc:
        raise _fail(DomainError(exc.message, code=exc.code)) from None


@app.command()
def dev(
    data_dir: Annotated[Path, typer.Option(help="Where all dev state lives.")] = Path("data"),
    host: Annotated[str, typer.Option(help="Interface for every service.")] = "127.0.0.1",
    api_port: Annotated[int, typer.Option(help="HTTP API port.")] = 8000,
    temporal_port: Annotated[int, typer.Option(help="Temporal gRPC port.")] = 7233,
    ui_port: Annotated[int, typer.Option(help="Temporal Web UI port.")] = 8233,
    sim_port: Annotated[int, typer.Option(help="Provider simulators port.")] = 8090,
    smtp_port: Annotated[int, typer.Option(help="Dev mail server port.")] = 8025,
    codec_port: Annotated[
        int, typer.Option(help="Codec server port (the Temporal UI decrypts through it).")
    ] = 8234,
    merchant: Annotated[str, typer.Option(help="The merchant of the admin key.")] = "demo",
    business_day_seconds: Annotated[
        int | None,
        typer.Option(
            envvar="REFUNDFLOW_DEV_BUSINESS_DAY_SECONDS",
            min=1,
            help="Dev only: a business day of arrival windows lasts this many seconds, so a"
            " delayed refund's notice comes within minutes. Off by default.",
        ),
    ] = None,
) -> None:
    """Run the whole stack: Temporal dev server (Web UI), worker, API, provider simulators."""
    from datetime import timedelta

    from refundflow.cli.dev import DevPorts, run_dev

    ports = DevPorts(
        api=api_port,
        temporal=temporal_port,
        ui=ui_port,
        simulators=sim_port,
        smtp=smtp_port,
        codec=codec_port,
    )
    business_day = timedelta(seconds=business_day_seconds) if business_day_seconds else None
    run_dev(data_dir, ports, host, merchant, business_day=business_day)


@app.command()
def demo(
    api_url: remote.ApiUrl = remote.DEFAULT_URL,
    key: Annotated[
        str,
        typer.Option(
            "--key",
            envvar="REFUNDFLOW_API_KEY",
            help="Admin key; read from the dev data folder when omitted.",
        ),
    ] = "",
    data_dir: Annotated[Path, typer.Option(help="The dev stack's data folder.")] = Path("data"),
) -> None:
    """Load sample orders into a running dev stack and start one refund per scenario."""
    from refundflow.cli.demo import run_demo

    run_demo(api_url, key, data_dir)


LogFormatOption = Annotated[
    str | None,
    typer.Option("--log-format", help="text or json (one object per line); REFUNDFLOW_LOG_FORMAT"),
]


def _production_settings(log_format: str | None) -> Settings:
    """The settings of a long-running process, or one line saying what is missing: a payment
    route nobody pays, or a setting of the dev stack, is refused before anything starts (fail
    closed)."""
    from refundflow.gateways.registry import (
        MissingProviders,
        missing_providers,
        provider_config_problems,
    )
    from refundflow.settings import DevOnlySetting

    settings = deploy.settings_or_exit()
    try:
        settings.refuse_dev_only()
    except DevOnlySetting as exc:
        raise _fail(DomainError(str(exc), code=exc.code)) from None
    if log_format is not None:
        if log_format not in ("text", "json"):
            raise _fail(DomainError("--log-format is text or json", code="invalid_option"))
        settings = settings.model_copy(update={"log_format": log_format})
    missing = missing_providers(settings)
    if missing:
        raise _fail(DomainError(str(MissingProviders(missing)), code="missing_providers"))
    invalid = provider_config_problems(settings)
    if invalid:
        problems = "; ".join(invalid)
        raise _fail(DomainError(f"REFUNDFLOW_PROVIDERS: {problems}", code="invalid_providers"))
    return settings


@app.command()
def worker(log_format: LogFormatOption = None) -> None:
    """Run a worker: RefundWorkflow and its activities (stops cleanly on Ctrl-C / SIGTERM).

    With REFUNDFLOW_BUILD_ID it is a versioned worker: it gets work once `refundflow deploy
    promote` has made its build current."""
    import asyncio

    from refundflow.crypto import KeyringError
    from refundflow.worker import run

    settings = _production_settings(log_format)
    try:
        asyncio.run(run(settings))
    except KeyringError as exc:
        raise _fail(DomainError(exc.message, code=exc.code)) from None


@app.command()
def api(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    log_format: LogFormatOption = None,
) -> None:
    """Serve the HTTP API (OpenAPI at /docs)."""
    import uvicorn

    from refundflow.api.app import create_app
    from refundflow.crypto import KeyringError
    from refundflow.logs import configure_logging

    settings = _production_settings(log_format)
    try:
        settings.payload_keyring()  # every payload it sends to Temporal is encrypted
        # Customer data is revealed, and console sessions sealed, with these keys only.
        settings.keyring()
    except KeyringError as exc:
        raise _fail(DomainError(exc.message, code=exc.code)) from None
    configure_logging(settings.log_format, settings.log_level)
    # log_config=None: uvicorn's loggers go through the handler configured above.
    uvicorn.run(create_app(settings), host=host, port=port, log_config=None)


@app.command("codec-server")
def codec_server(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8234,
    ui_origin: Annotated[
        str | None,
        typer.Option(help="The Temporal UI's origin (CORS); REFUNDFLOW_CODEC_UI_ORIGIN."),
    ] = None,
    log_format: LogFormatOption = None,
) -> None:
    """Serve /decode and /encode for the Temporal UI: ops and admin API keys see decrypted
    payloads, everyone else ciphertext. Needs the payload keys and the refunds database."""
    import uvicorn

    from refundflow.codec_server import create_codec_app
    from refundflow.crypto import KeyringError
    from refundflow.db.engine import make_engine
    from refundflow.logs import configure_logging
    from refundflow.payload_codec import EncryptionCodec

    settings = deploy.settings_or_exit()
    try:
        codec = EncryptionCodec(settings.payload_keyring())
    except KeyringError as exc:
        raise _fail(DomainError(exc.message, code=exc.code)) from None
    if log_format is not None:
        if log_format not in ("text", "json"):
            raise _fail(DomainError("--log-format is text or json", code="invalid_option"))
        settings = settings.model_copy(update={"log_format": log_format})
    configure_logging(settings.log_format, settings.log_level)
    engine = make_engine(settings.resolved_database_url)
    app_ = create_codec_app(codec, engine, ui_origin=ui_origin or settings.codec_ui_origin)
    try:
        # No access log: a dev-style endpoint carries a key in its path.
        uvicorn.run(app_, host=host, port=port, log_config=None, access_log=False)
    finally:
        engine.dispose()


@policy_app.command("check")
def policy_check(path: Path) -> None:
    """Validate a policy YAML file and print it with every default filled in."""
    policy = _load_policy(path)
    console.print(f"[green]valid[/green] policy version {policy.version}")
    console.print(policy.to_yaml(), end="")


@policy_app.command("default")
def policy_default() -> None:
    """Print the built-in default policy as YAML (a starting point for your own)."""
    console.print(DEFAULT_POLICY.to_yaml(), end="", markup=False)


@app.command()
def quote(
    order_file: Annotated[Path, typer.Argument(help="Order snapshot JSON.")],
    request_file: Annotated[Path, typer.Argument(help="Refund request JSON.")],
    policy: PolicyOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the quote as JSON.")] = False,
) -> None:
    """Compute a refund quote offline, with its line-by-line breakdown."""
    pol = _load_policy(policy)
    try:
        order = OrderSnapshot.parse(_load_json(order_file))
        request = RefundRequest.parse(_load_json(request_file))
        result = compute_quote(order=order, request=request, policy=pol)
    except DomainError as exc:
        raise _fail(exc) from None
    if as_json:
        console.print_json(result.model_dump_json())
        return
    _print_quote(result)


def _print_quote(q: Quote) -> None:
    def money(amount: int) -> str:
        return str(to_major(amount, q.currency))

    lines = Table(title=f"Refund quote for order {q.order_id} ({q.reason.value}, {q.currency})")
    for col in (
        "line",
        "sku",
        "qty",
        "gross",
        "discounts",
        "net",
        "shipping",
        "fees",
        "restock",
        "refund",
    ):
        lines.add_column(col, justify="left" if col in ("line", "sku") else "right")
    for ln in q.lines:
        lines.add_row(
            ln.line_id,
            ln.sku,
            str(ln.quantity),
            money(ln.gross),
            money(ln.line_discount + ln.order_discount),
            money(ln.net),
            money(ln.shipping),
            money(ln.fees),
            money(ln.restocking_fee),
            money(ln.amount),
        )
    console.print(lines)
    payouts = Table(title="Payouts")
    for col in ("#", "installment", "route", "amount", "paid out", "after days"):
        payouts.add_column(col)
    for p in q.payouts:
        payouts.add_row(
            str(p.seq),
            str(p.installment),
            p.route.value,
            money(p.amount),
            f"{to_major(p.payout_amount, p.payout_currency)} {p.payout_currency}",
            str(p.due_after_days),
        )
    console.print(payouts)
    if q.goodwill:
        console.print(f"goodwill: {money(q.goodwill)}")
    console.print(
        f"[bold]total {format_minor(q.total, q.currency)}[/bold] "
        f"(still refundable before: {format_minor(q.remaining_before, q.currency)})"
    )
    for note in q.notes:
        console.print(f"- {note}", markup=False)


if __name__ == "__main__":
    app()
