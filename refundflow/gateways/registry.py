"""Which gateway pays which route: the provider adapter ``Settings.providers`` configures for it.

Fail closed: a route with no provider stops the process at start, naming the route and the
setting, unless the route is disabled on purpose (``REFUNDFLOW_DISABLED_ROUTES``: its payouts
fail for good at once, so the policy's fallback applies) or the sandbox is explicitly enabled
(``REFUNDFLOW_SANDBOX=true``: tests and ``refundflow dev``), in which case the sandbox simulator
pays. Nothing is ever paid through a simulator by omission."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Engine

from refundflow.domain.orders import PaymentMethod
from refundflow.domain.states import PayoutEvent, PayoutStatus
from refundflow.gateways.balance import BalanceGateway
from refundflow.gateways.base import Gateway, PayoutInstruction, PayoutResult
from refundflow.settings import Settings

ADAPTERS: dict[str, tuple[str, str, str]] = {
    "alipay": ("refundflow.gateways.alipay", "AlipayGateway", "AlipayConfig"),
    "wechat": ("refundflow.gateways.wechat", "WechatGateway", "WechatConfig"),
    "stripe": ("refundflow.gateways.stripe_card", "StripeGateway", "StripeConfig"),
    "paypal": ("refundflow.gateways.paypal", "PayPalGateway", "PayPalConfig"),
    "bank_transfer": (
        "refundflow.gateways.bank_transfer",
        "BankTransferGateway",
        "BankTransferConfig",
    ),
}
"""Provider name -> (module, gateway class, config class). Imported only when configured."""

ROUTES: dict[PaymentMethod, str] = {
    PaymentMethod.ALIPAY: "alipay",
    PaymentMethod.WECHAT: "wechat",
    PaymentMethod.CARD: "stripe",
    PaymentMethod.STRIPE: "stripe",
    PaymentMethod.PAYPAL: "paypal",
    PaymentMethod.BANK_TRANSFER: "bank_transfer",
}
"""Which provider pays each original payment method (cards are refunded through Stripe)."""


def build_provider(name: str, config: dict[str, Any]) -> Gateway:
    if name not in ADAPTERS:
        raise ValueError(f"unknown provider {name!r}; one of {', '.join(ADAPTERS)}")
    module_name, gateway_name, config_name = ADAPTERS[name]
    module = importlib.import_module(module_name)
    gateway: Gateway = getattr(module, gateway_name)(getattr(module, config_name)(**config))
    return gateway


class MissingProviders(ValueError):
    """Routes a policy can send money through, with nothing to pay them."""

    def __init__(self, routes: list[PaymentMethod]) -> None:
        self.routes = routes
        names = ", ".join(f"{r.value} (provider {ROUTES[r]})" for r in routes)
        providers = sorted({ROUTES[r] for r in routes})
        super().__init__(
            f"no payment provider for {names}: configure "
            + ", ".join(providers)
            + " in REFUNDFLOW_PROVIDERS, or list the routes in REFUNDFLOW_DISABLED_ROUTES to refuse"
            " them on purpose (the policy's fallback applies); REFUNDFLOW_SANDBOX=true pays them"
            " through the sandbox simulator (development and tests only)"
        )


class DisabledRoute:
    """A route switched off on purpose: every payout through it fails for good at once, so the
    run falls back by policy (the store balance, a bank transfer) or escalates."""

    name = "disabled"

    def __init__(self, route: PaymentMethod) -> None:
        self.route = route

    async def refund(self, instruction: PayoutInstruction) -> PayoutResult:
        return PayoutResult(
            status=PayoutStatus.FAILED_PERMANENT,
            code="ROUTE_DISABLED",
            message=f"payouts through {self.route.value} are disabled",
        )

    async def query(self, instruction: PayoutInstruction) -> PayoutResult:
        return PayoutResult(status=PayoutStatus.NOT_FOUND)

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> PayoutEvent:
        raise ValueError(f"{self.route.value} is disabled")


def provider_config_problems(settings: Settings) -> list[str]:
    """Each configured provider whose settings its adapter would refuse, with the reason (the
    adapter's config model is built, nothing is contacted)."""
    problems = []
    for name, config in sorted(settings.providers.items()):
        if name not in ADAPTERS:
            problems.append(f"{name}: unknown provider; one of {', '.join(ADAPTERS)}")
            continue
        module_name, _, config_name = ADAPTERS[name]
        try:
            getattr(importlib.import_module(module_name), config_name)(**config)
        except (ValidationError, TypeError) as exc:
            fields = (
                ", ".join(".".join(map(str, e["loc"])) or "(all)" for e in exc.errors())
                if isinstance(exc, ValidationError)
                else str(exc)
            )
            problems.append(f"{name}: invalid settings ({fields})")
    return problems


def missing_providers(settings: Settings) -> list[PaymentMethod]:
    """Routes that would have nothing to pay them (empty when the sandbox is on)."""
    if settings.sandbox:
        return []
    return [
        route
        for route, provider in ROUTES.items()
        if provider not in settings.providers and route not in settings.disabled_routes
    ]


def build_gateways(settings: Settings, engine: Engine) -> dict[PaymentMethod, Gateway]:
    """Every route's gateway; raises :class:`MissingProviders` before building anything when a
    route has none."""
    missing = missing_providers(settings)
    if missing:
        raise MissingProviders(missing)
    built = {name: build_provider(name, cfg) for name, cfg in settings.providers.items()}
    gateways: dict[PaymentMethod, Gateway] = {}
    for route, provider in ROUTES.items():
        if route in settings.disabled_routes:
            gateways[route] = DisabledRoute(route)
        elif provider in built:
            gateways[route] = built[provider]
    if len(gateways) < len(ROUTES):
        # Only with the sandbox explicitly on; imported here so production never loads it.
        from refundflow.devstack.sandbox import SandboxGateway

        settings.data_dir.mkdir(parents=True, exist_ok=True)
        # Not "sandbox.db": that name held the sandbox's own tables before it kept the
        # simulators' ledger, and a resumed dev stack must not open the old layout.
        sandbox = SandboxGateway(path=settings.data_dir / "sandbox-ledger.db")
        gateways = {route: gateways.get(route, sandbox) for route in ROUTES}
    gateways[PaymentMethod.BALANCE] = BalanceGateway(engine)
    return gateways


def webhook_gateways(gateways: Mapping[PaymentMethod, Gateway]) -> dict[str, Gateway]:
    """Provider name -> the gateway that verifies its webhooks (``/v1/webhooks/{name}``)."""
    return {g.name: g for g in gateways.values() if g.name not in ("balance", "disabled")}
