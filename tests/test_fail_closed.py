"""Nothing pays through a simulator by omission: a route without a provider stops the worker and
the API at start; a route disabled on purpose fails its payouts at once and the policy's
fallback applies; the sandbox pays only when REFUNDFLOW_SANDBOX says so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from refundflow.db.engine import make_engine
from refundflow.domain.orders import PaymentMethod
from refundflow.domain.states import RefundStatus
from refundflow.gateways.base import Gateway
from refundflow.gateways.registry import (
    ROUTES,
    DisabledRoute,
    MissingProviders,
    build_gateways,
    missing_providers,
)
from refundflow.settings import Settings
from tests.workflows.conftest import open_stack

BIN = Path(sys.executable).parent
ALL: dict[str, dict[str, str]] = {
    name: {} for name in ("alipay", "wechat", "stripe", "paypal", "bank_transfer")
}


@pytest.mark.parametrize("command", [["worker"], ["api", "--port", "1"]])
def test_a_process_with_an_unpaid_route_does_not_start(command: list[str], tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFUNDFLOW_")}
    env |= {
        "REFUNDFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}",
        "REFUNDFLOW_PROVIDERS": '{"alipay": {}}',
        "REFUNDFLOW_DISABLED_ROUTES": '["paypal"]',
    }
    done = subprocess.run(
        [str(BIN / "refundflow"), *command], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stdout + done.stderr
    message = " ".join(done.stderr.split())
    assert "error missing_providers: no payment provider for wechat (provider wechat)" in message
    assert "card (provider stripe)" in message and "alipay (provider" not in message
    assert "paypal (provider" not in message  # disabled on purpose
    assert "Traceback" not in done.stderr


def test_which_routes_lack_a_provider(tmp_path: Path) -> None:
    assert missing_providers(Settings(providers=ALL)) == []
    assert missing_providers(Settings(sandbox=True)) == []
    partial = Settings(providers={"stripe": {}}, disabled_routes=["alipay", "wechat", "paypal"])
    assert missing_providers(partial) == [PaymentMethod.BANK_TRANSFER]
    engine = make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    with pytest.raises(MissingProviders):
        build_gateways(Settings(data_dir=tmp_path), engine)
    sandboxed = build_gateways(Settings(data_dir=tmp_path, sandbox=True), engine)
    assert sandboxed[PaymentMethod.ALIPAY].name == "sandbox"
    engine.dispose()


async def test_a_disabled_route_falls_back_by_policy(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    routes: dict[PaymentMethod, Gateway] = {
        PaymentMethod.ALIPAY: DisabledRoute(PaymentMethod.ALIPAY)
    }
    async with open_stack(env, tmp_path, routes=routes) as stack:
        result = await stack.finish(await stack.start("r-off", await stack.order()))
        assert result.status is RefundStatus.COMPLETED
        assert [(p.route.value, p.status.value, p.code) for p in result.payouts] == [
            ("alipay", "failed_permanent", "ROUTE_DISABLED"),
            ("balance", "settled", "CREDITED"),
        ]
        stack.assert_books_balance(result)


def test_the_product_path_never_loads_the_dev_stand_ins(tmp_path: Path) -> None:
    """The API, the worker and their gateways, built with the sandbox off, import nothing
    from ``refundflow.devstack`` (simulators, sandbox, SMS simulator)."""
    probe = (
        "import sys\n"
        "from refundflow.settings import Settings\n"
        "from refundflow.gateways.registry import build_gateways\n"
        "import refundflow.api.app, refundflow.worker, refundflow.cli.main\n"
        "from refundflow.gateways.registry import ROUTES\n"
        f"settings = Settings(database_url='sqlite:///{tmp_path / 'r.db'}',"
        " disabled_routes=list(ROUTES))\n"
        "from refundflow.db.engine import make_engine\n"
        "build_gateways(settings, make_engine(settings.database_url))\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('refundflow.devstack'))\n"
        "print(loaded)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFUNDFLOW_")}
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("command", [["worker"], ["api", "--port", "1"]])
def test_a_provider_with_incomplete_settings_stops_the_process(
    command: list[str], tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFUNDFLOW_")}
    others = [route.value for route in ROUTES if ROUTES[route] != "alipay"]
    env |= {
        "REFUNDFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}",
        "REFUNDFLOW_PROVIDERS": '{"alipay": {"app_id": "2021000000000001"}}',
        "REFUNDFLOW_DISABLED_ROUTES": json.dumps(others),
    }
    done = subprocess.run(
        [str(BIN / "refundflow"), *command], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
    assert "invalid_providers" in done.stderr + done.stdout
    assert "alipay: invalid settings (app_private_key, alipay_public_key)" in (
        done.stderr + done.stdout
    )
    assert "Traceback" not in done.stderr + done.stdout
