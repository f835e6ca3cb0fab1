"""Which gateway pays which route. Every route not yet backed by a real provider adapter goes
to the sandbox simulator, so the whole flow runs on one machine."""

from __future__ import annotations

from sqlalchemy import Engine

from refundflow.domain.orders import PaymentMethod
from refundflow.gateways.balance import BalanceGateway
from refundflow.gateways.base import Gateway
from refundflow.gateways.sandbox import SandboxGateway
from refundflow.settings import Settings


def build_gateways(settings: Settings, engine: Engine) -> dict[PaymentMethod, Gateway]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    sandbox = SandboxGateway(path=settings.data_dir / "sandbox.db")
    gateways: dict[PaymentMethod, Gateway] = {method: sandbox for method in PaymentMethod}
    gateways[PaymentMethod.BALANCE] = BalanceGateway(engine)
    return gateways
