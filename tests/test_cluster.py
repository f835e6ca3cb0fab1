"""`refundflow setup` and `refundflow check` against real Temporal dev servers, as an operator
runs them: a misconfigured setup reported problem by problem, then set up and ready; a clash of
search attribute types refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from temporalio.common import SearchAttributeKey
from temporalio.testing import WorkflowEnvironment

from refundflow.cluster import Outcome, provider_finding
from refundflow.crypto import new_key_entry
from refundflow.settings import Settings
from tests.payload_keys import CONVERTER, PAYLOAD_KEYS

BIN = Path(sys.executable).parent
PROVIDERS: dict[str, dict[str, str]] = {
    "alipay": {"app_id": "2021000000000001", "app_private_key": "k", "alipay_public_key": "k"},
    "wechat": {
        "mchid": "1900000001",
        "merchant_serial_no": "5157F09EFDC096DE15EBE81A47057A72",
        "merchant_private_key": "k",
        "apiv3_key": "0" * 32,
    },
    "stripe": {"secret_key": "sk_test_x", "webhook_secret": "whsec_x"},
    "paypal": {"client_id": "c", "client_secret": "s", "webhook_id": "WH-1"},
    "bank_transfer": {
        "api_base": "https://bank.example.com",
        "client_id": "c",
        "api_secret": "s",
        "webhook_secret": "w",
        "debtor_account": "DE89370400440532013000",
    },
}


def refundflow(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("REFUNDFLOW_", "TEMPORAL_"))}
    return subprocess.run(
        [str(BIN / "refundflow"), *args],
        env={**clean, "COLUMNS": "200", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


async def _server(*attributes: SearchAttributeKey[Any]) -> WorkflowEnvironment:
    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(BIN / "temporal"),
        data_converter=CONVERTER,
        search_attributes=attributes,
        ui=False,
    )


async def test_check_names_each_problem_and_setup_makes_it_ready(tmp_path: Path) -> None:
    env = await _server()
    try:
        base = {
            "REFUNDFLOW_TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
            "REFUNDFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'refundflow.db'}",
        }
        # Nothing talks to Temporal without the payload keys (never the secrets' keys instead).
        keyless = refundflow("check", env=base | {"REFUNDFLOW_ENCRYPTION_KEYS": PAYLOAD_KEYS})
        assert keyless.returncode == 1
        assert "no payload keys: set REFUNDFLOW_PAYLOAD_KEYS" in keyless.stdout
        assert "RefundStatus" not in keyless.stdout  # it never connected
        base["REFUNDFLOW_PAYLOAD_KEYS"] = PAYLOAD_KEYS
        bad = refundflow("check", env=base)
        assert bad.returncode == 1, bad.stdout + bad.stderr
        out = bad.stdout
        assert "no provider for alipay" in out and "REFUNDFLOW_DISABLED_ROUTES" in out
        assert "no customer channel" in out
        assert "no encryption keys: set REFUNDFLOW_ENCRYPTION_KEYS" in out
        assert "at nothing, head is" in out  # the database was never migrated
        assert "RefundStatus" in out and "missing: run `refundflow setup`" in out

        done = refundflow("setup", env=base)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.count("added (INDEXED_VALUE_TYPE_") == 7
        again = refundflow("setup", env=base)  # idempotent: nothing left to add
        assert again.returncode == 0 and "added" not in again.stdout

        configured = base | {
            "REFUNDFLOW_PROVIDERS": json.dumps(PROVIDERS),
            "REFUNDFLOW_NOTIFY": json.dumps({"smtp_host": "mail.example.com"}),
            "REFUNDFLOW_ENCRYPTION_KEYS": new_key_entry("2026-12"),
        }
        good = refundflow("check", env=configured)
        assert good.returncode == 0, good.stdout + good.stderr
        assert "ready" in good.stdout and "problem" not in good.stdout
        assert "refundflow-outbox-sweep" in good.stdout
        assert "refundflow-pii-retention" in good.stdout
        assert "encrypting with test-payload-1" in good.stdout
    finally:
        await env.shutdown()


async def test_setup_refuses_a_search_attribute_of_another_type(tmp_path: Path) -> None:
    env = await _server(SearchAttributeKey.for_keyword("RefundAmount"))
    try:
        done = refundflow(
            "setup",
            env={
                "REFUNDFLOW_TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
                "REFUNDFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'refundflow.db'}",
                "REFUNDFLOW_PAYLOAD_KEYS": PAYLOAD_KEYS,
            },
        )
        assert done.returncode == 1
        assert "RefundAmount" in done.stdout
        assert "exists as INDEXED_VALUE_TYPE_KEYWORD, refundflow needs INDEXED_VALUE_TYPE_INT" in (
            done.stdout
        )
    finally:
        await env.shutdown()


def test_a_temporal_profile_file_is_used(tmp_path: Path) -> None:
    """Temporal's own client configuration (a TOML profile) decides where to connect when no
    REFUNDFLOW_TEMPORAL_* is set."""
    config = tmp_path / "temporal.toml"
    config.write_text('[profile.prod]\naddress = "127.0.0.1:1"\nnamespace = "refunds-prod"\n')
    out = refundflow(
        "check",
        env={
            "TEMPORAL_CONFIG_FILE": str(config),
            "TEMPORAL_PROFILE": "prod",
            "REFUNDFLOW_PAYLOAD_KEYS": PAYLOAD_KEYS,
            "REFUNDFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'refundflow.db'}",
        },
    )
    assert out.returncode == 1
    assert "Temporal at 127.0.0.1:1, namespace refunds-prod unreachable" in out.stdout


def test_check_names_the_settings_a_provider_lacks() -> None:
    broken = PROVIDERS | {"alipay": {"app_id": "2021000000000001"}, "stripe": {"secret_key": 1}}
    finding = provider_finding(Settings(providers=broken))
    assert finding.outcome is Outcome.PROBLEM
    assert "alipay: invalid settings (app_private_key, alipay_public_key)" in finding.detail
    assert "stripe: invalid settings (secret_key, webhook_secret)" in finding.detail
    assert provider_finding(Settings(providers=PROVIDERS)).outcome is Outcome.OK


async def test_check_warns_when_closed_runs_outlive_the_customer_data_rule(tmp_path: Path) -> None:
    """Histories keep their (encrypted) customer data for the namespace's retention: longer
    than REFUNDFLOW_PII_RETENTION_DAYS, and they outlive what the database erased."""
    env = await _server()
    try:
        base = {
            "REFUNDFLOW_TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
            "REFUNDFLOW_TEMPORAL_NAMESPACE": "refunds-long",
            "REFUNDFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'refundflow.db'}",
            "REFUNDFLOW_PAYLOAD_KEYS": PAYLOAD_KEYS,
            "REFUNDFLOW_PII_RETENTION_DAYS": "60",
        }
        made = refundflow("setup", "--create-namespace", "--retention-days", "120", env=base)
        assert made.returncode == 0, made.stdout + made.stderr
        assert "longer than REFUNDFLOW_PII_RETENTION_DAYS (60 days)" in made.stdout
        assert "erased 60 days after a refund finishes" in made.stdout
        fine = refundflow("setup", env=base | {"REFUNDFLOW_PII_RETENTION_DAYS": "120"})
        assert "REFUNDFLOW_PII_RETENTION_DAYS" not in fine.stdout
    finally:
        await env.shutdown()
