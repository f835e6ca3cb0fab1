"""The installed ``refundflow`` console script, run as a user runs it."""

import json
import os
import subprocess
import sys
from pathlib import Path

from alembic.script import ScriptDirectory

from refundflow.db.migrate import alembic_config

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent / "refundflow"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
        env=env,
    )


def test_quote_prints_the_breakdown_of_the_example_order() -> None:
    result = run("quote", "examples/order.json", "examples/request.json", "--json")
    assert result.returncode == 0, result.stderr
    quote = json.loads(result.stdout)
    # The same numbers as the worked example in tests/domain/test_calculation_examples.py.
    assert quote["total"] == 9542
    assert [p["amount"] for p in quote["payouts"]] == [5801, 3741]


def test_quote_reports_bad_input_with_its_code(tmp_path: Path) -> None:
    request = json.loads((ROOT / "examples/request.json").read_text())
    request["items"][0]["quantity"] = -1
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(request))
    result = run("quote", "examples/order.json", str(bad))
    assert result.returncode == 2
    assert "negative_quantity" in result.stderr


def test_policy_check_validates_documents(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("version: 2\nshipping_refund: always\n")
    ok = run("policy", "check", str(good))
    assert ok.returncode == 0 and "policy version 2" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("shipping_refund: sometimes\n")
    refused = run("policy", "check", str(bad))
    assert refused.returncode == 2 and "policy_invalid" in refused.stderr


def test_db_upgrade_creates_the_default_sqlite_database(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(BIN), "db", "upgrade"], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert result.returncode == 0, result.stderr
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert f"revision {head}" in result.stdout
    assert (tmp_path / "data" / "refundflow.db").stat().st_size > 0


def test_worker_refuses_a_deployment_name_without_a_build_id() -> None:
    env = {k: v for k, v in os.environ.items() if k != "REFUNDFLOW_BUILD_ID"}
    env["REFUNDFLOW_DEPLOYMENT_NAME"] = "refunds"
    result = run("worker", env=env)
    assert result.returncode == 2
    assert "invalid_settings" in result.stderr and "REFUNDFLOW_BUILD_ID" in result.stderr


def test_deploy_promote_needs_a_build_id() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFUNDFLOW_")}
    result = run("deploy", "promote", env=env)
    assert result.returncode == 2 and "missing_build_id" in result.stderr


def test_keys_create_needs_a_name_and_a_valid_merchant_id(tmp_path: Path) -> None:
    env = {**os.environ, "REFUNDFLOW_DATA_DIR": str(tmp_path / "data")}
    env.pop("REFUNDFLOW_DATABASE_URL", None)
    assert run("db", "upgrade", env=env).returncode == 0
    # Without a name, two approvers' keys would be one person to the two-approver rule.
    nameless = run(
        "keys", "create", "--merchant", "demo", "--role", "approver", "--create-merchant", env=env
    )
    assert nameless.returncode == 2 and "--name" in nameless.stderr
    colon = run("keys", "create", "--merchant", "a:b", "--name", "x", "--create-merchant", env=env)
    assert colon.returncode == 2 and "invalid_merchant_id" in colon.stderr, colon.stderr
    ok = run(
        "keys", "create", "--merchant", "shop-1", "--name", "alice", "--create-merchant", env=env
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("rf_")


def test_commands_that_need_the_encryption_keys_stop_without_them(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFUNDFLOW_")}
    env["REFUNDFLOW_DATA_DIR"] = str(tmp_path)
    env["REFUNDFLOW_SANDBOX"] = "true"  # every route paid, so only the keys are missing
    for command in (("worker",), ("merchants", "webhook", "--merchant", "m", "--url", "off")):
        result = run(*command, env=env)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("error missing_encryption_key: no encryption keys")
        assert result.stderr.count("\n") == 1 and str(tmp_path) in result.stderr


def test_merchant_webhook_secret_is_printed_once_and_stored_sealed(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFUNDFLOW_")}
    env["REFUNDFLOW_ENCRYPTION_KEYS"] = run("secrets", "new-key", "--key-id", "k1").stdout.strip()
    env["REFUNDFLOW_DATA_DIR"] = str(tmp_path)
    assert run("db", "upgrade", env=env).returncode == 0
    created = run(
        "keys", "create", "--merchant", "m", "--name", "shop", "--create-merchant", env=env
    )
    assert created.returncode == 0, created.stderr
    hooked = run("merchants", "webhook", "--merchant", "m", "--url", "https://m.example", env=env)
    assert hooked.returncode == 0, hooked.stderr
    secret = hooked.stdout.strip()
    assert secret.startswith("rfwh_")
    stored = [f.read_bytes() for f in tmp_path.iterdir() if f.name.startswith("refundflow.db")]
    assert stored and not any(secret.encode() in content for content in stored)
