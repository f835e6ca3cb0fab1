"""Which gateway pays which route: the real provider adapter where ``Settings.providers``
configures one, the sandbox simulator otherwise, so the whole flow always runs on one machine."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Engine

from refundflow.domain.orders import PaymentMethod
from refundflow.gateways.balance import BalanceGateway
from refundflow.gateways.base import Gateway
from refundflow.gateways.sandbox import SandboxGateway
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


def build_gateways(settings: Settings, engine: Engine) -> dict[PaymentMethod, Gateway]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    sandbox = SandboxGateway(path=settings.data_dir / "sandbox.db")
    built = {name: build_provider(name, cfg) for name, cfg in settings.providers.items()}
    gateways: dict[PaymentMethod, Gateway] = {
        method: built.get(ROUTES.get(method, ""), sandbox) for method in PaymentMethod
    }
    gateways[PaymentMethod.BALANCE] = BalanceGateway(engine)
    return gateways


def webhook_gateways(gateways: Mapping[PaymentMethod, Gateway]) -> dict[str, Gateway]:
    """Provider name -> the gateway that verifies its webhooks (``/v1/webhooks/{name}``)."""
    return {g.name: g for g in gateways.values() if g.name != "balance"}
