"""A refund run paying through a real provider adapter against that provider's simulator, with
the simulator's webhooks arriving over HTTP at the API's `/v1/webhooks/{provider}`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlmodel import select
from temporalio.testing import WorkflowEnvironment

from refundflow.api.app import create_app, use_gateways
from refundflow.db.engine import session_scope
from refundflow.db.models import WebhookEventRow
from refundflow.devstack.ports import free_port
from refundflow.devstack.simulators.core import SimLedger, SimRefund
from refundflow.devstack.simulators.host import SimulatorHost
from refundflow.domain.orders import PaymentMethod
from refundflow.domain.states import RefundState
from refundflow.gateways.base import Gateway
from refundflow.gateways.registry import build_provider
from refundflow.settings import Settings
from tests.workflows.conftest import ACCOUNT, Stack, open_stack


@dataclass(frozen=True)
class Provider:
    name: str
    method: PaymentMethod
    make_sim: Callable[[SimLedger, Path, str], Any]
    """(ledger, keys folder, notify url) -> the simulator."""
    register: Callable[[Any, str, int, str, float], None]
    """(simulator, provider txn id, amount, currency, paid at) -> a payment it can refund."""
    permanent: tuple[str, str]
    """A scripted failure of this provider's own kind, for the fallback test."""
    refund_no: Callable[[str], str] = lambda key: key
    """Our payout key as the provider stores it."""
    txn_prefix: str = "txn-"
    """The shape of the provider's payment ids (Stripe: a PaymentIntent)."""
    request: dict[str, Any] = field(default_factory=dict)
    """What the refund request needs for this provider (the bank: the customer's account)."""


def _alipay(ledger: SimLedger, keys: Path, notify_url: str) -> Any:
    from refundflow.devstack.simulators.alipay import AlipaySimulator

    return AlipaySimulator(ledger, keys_dir=keys, notify_url=notify_url)


def _alipay_trade(sim: Any, txn: str, amount: int, currency: str, paid_at: float) -> None:
    sim.add_trade(txn, amount=amount, paid_at=paid_at)


def _wechat(ledger: SimLedger, keys: Path, notify_url: str) -> Any:
    from refundflow.devstack.simulators.wechat import WechatSimulator

    return WechatSimulator(ledger, keys_dir=keys, notify_url=notify_url)


def _payment(sim: Any, txn: str, amount: int, currency: str, paid_at: float) -> None:
    sim.ledger.add_payment(txn, amount=amount, currency=currency, paid_at=paid_at)


def _stripe(ledger: SimLedger, keys: Path, notify_url: str) -> Any:
    from refundflow.devstack.simulators.stripe import StripeSimulator

    return StripeSimulator(ledger, notify_url=notify_url, data_dir=keys)


def _paypal(ledger: SimLedger, keys: Path, notify_url: str) -> Any:
    from refundflow.devstack.simulators.paypal import PayPalSimulator

    return PayPalSimulator(ledger, notify_url=notify_url, data_dir=keys)


def _bank(ledger: SimLedger, keys: Path, notify_url: str) -> Any:
    from refundflow.devstack.simulators.bank import BankSimulator

    return BankSimulator(ledger, notify_url=notify_url, data_dir=keys)


def _bank_funds(sim: Any, txn: str, amount: int, currency: str, paid_at: float) -> None:
    # A bank pays from the merchant's account, not from the customer's payment.
    sim.fund(amount, currency)


def _wechat_no(key: str) -> str:
    from refundflow.gateways.wechat import out_refund_no

    return out_refund_no(key)


PROVIDERS = {
    "alipay": Provider(
        "alipay",
        PaymentMethod.ALIPAY,
        _alipay,
        _alipay_trade,
        ("permanent", "ACQ.TRADE_HAS_CLOSE"),
    ),
    "wechat": Provider(
        "wechat",
        PaymentMethod.WECHAT,
        _wechat,
        _payment,
        ("fail_later", "ABNORMAL"),
        refund_no=_wechat_no,
    ),
    "stripe": Provider(
        "stripe",
        PaymentMethod.CARD,
        _stripe,
        _payment,
        ("fail_later", "expired_or_canceled_card"),
        txn_prefix="pi_",
    ),
    "paypal": Provider(
        "paypal",
        PaymentMethod.PAYPAL,
        _paypal,
        _payment,
        ("permanent", "REFUND_TIME_LIMIT_EXCEEDED"),
    ),
    "bank_transfer": Provider(
        "bank_transfer",
        PaymentMethod.BANK_TRANSFER,
        _bank,
        _bank_funds,
        ("fail_later", "AC04"),
        request={"destination": {"kind": "BANK_TRANSFER", "bank_account": ACCOUNT}},
    ),
}


@dataclass
class ProviderStack:
    stack: Stack
    provider: Provider
    sim: Any
    gateway: Gateway

    @property
    def name(self) -> str:
        return self.provider.name

    @property
    def ledger(self) -> SimLedger:
        ledger: SimLedger = self.sim.ledger
        return ledger

    def pay(self, txn: str, amount: int, currency: str = "CNY") -> None:
        """Tell the simulated provider about a payment it captured two days ago."""
        self.provider.register(self.sim, txn, amount, currency, time.time() - 2 * 86400)

    async def run(self, refund_id: str, order: Any, **request: Any) -> RefundState:
        """Start a refund paid through this provider and run it to its end."""
        handle = await self.stack.start(refund_id, order, **(self.provider.request | request))
        return await self.stack.finish(handle)

    def refunds(self, refund_id: str) -> list[SimRefund]:
        return self.ledger.refunds(self.provider.refund_no(f"{refund_id}:"))

    def webhook_events(self) -> list[WebhookEventRow]:
        with session_scope(self.stack.engine, readonly=True) as s:
            rows = s.exec(
                select(WebhookEventRow).where(WebhookEventRow.provider == self.provider.name)
            )
            return list(rows.all())

    async def wait_for_webhooks(self, count: int, seconds: float = 10) -> list[WebhookEventRow]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            rows = self.webhook_events()
            if len(rows) >= count:
                return rows
            await asyncio.sleep(0.1)
        return self.webhook_events()


@asynccontextmanager
async def serve_api(
    stack: Stack, gateways: Mapping[PaymentMethod, Gateway], port: int
) -> AsyncIterator[None]:
    """The HTTP API on ``port``, verifying webhooks with ``gateways`` (which pay which route)."""
    settings = Settings(task_queue=stack.task_queue)
    app = create_app(settings, engine=stack.engine, temporal=stack.env.client)
    use_gateways(app, gateways)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the API did not start"
        await asyncio.sleep(0.02)
    try:
        yield
    finally:
        server.should_exit = True
        await task


@pytest.fixture(params=sorted(PROVIDERS))
async def provider(
    request: pytest.FixtureRequest, env: WorkflowEnvironment, tmp_path: Path
) -> AsyncIterator[ProviderStack]:
    spec = PROVIDERS[request.param]
    port = free_port()
    # Settles at the first poll; a held answer outlasts the adapter's one-second timeout.
    ledger = SimLedger(tmp_path / "sim" / "ledger.db", settlement="queries:1", hold_seconds=3)
    notify_url = f"http://127.0.0.1:{port}/v1/webhooks/{spec.name}"
    sim = spec.make_sim(ledger, tmp_path / "sim" / "keys", notify_url)
    host = SimulatorHost([sim], tick=0.05)
    host.start()
    try:
        config = sim.adapter_config(host.base_url(spec.name)).model_copy(update={"timeout_s": 1.0})
        gateway = build_provider(spec.name, dict(config))
        async with (
            open_stack(env, tmp_path, {spec.method: gateway}) as stack,
            serve_api(stack, {spec.method: gateway}, port),
        ):
            yield ProviderStack(stack=stack, provider=spec, sim=sim, gateway=gateway)
        close = getattr(gateway, "aclose", None)
        if close is not None:
            await close()
    finally:
        host.stop()
