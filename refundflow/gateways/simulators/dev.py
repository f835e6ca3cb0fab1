"""Every provider simulator on one port for the dev stack, and the adapter configs that point
the real adapters at them. Keys and ledgers live under the data folder, so a restart resumes."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from pathlib import Path
from typing import Any

from refundflow.gateways.simulators.core import SimLedger
from refundflow.gateways.simulators.host import Simulator, SimulatorHost

SIMULATORS: dict[str, str] = {
    "alipay": "refundflow.gateways.simulators.alipay",
    "wechat": "refundflow.gateways.simulators.wechat",
    "stripe": "refundflow.gateways.simulators.stripe",
    "paypal": "refundflow.gateways.simulators.paypal",
    "bank_transfer": "refundflow.gateways.simulators.bank",
}
"""Provider name -> simulator module (each has ``dev_simulator(data_dir, notify_url=...)``)."""


def never_settle(data_dir: Path, provider: str, prefix: str) -> bool:
    """Script the dev simulator of ``provider`` to accept, and never settle, the next refund
    whose number starts with ``prefix`` (a delayed arrival). False if that simulator has no
    ledger under ``data_dir`` (the stack runs elsewhere)."""
    path = data_dir / "simulators" / provider / "ledger.db"
    if not path.exists():
        return False
    SimLedger(path).script(prefix, [("ok", "never")])
    return True


class DevProviders:
    def __init__(
        self,
        data_dir: Path,
        *,
        port: int,
        api_url: str,
        host: str = "127.0.0.1",
        settlement: str = "seconds:3",
    ) -> None:
        self.sims: dict[str, Simulator] = {}
        for name, module_name in SIMULATORS.items():
            module = importlib.import_module(module_name)
            self.sims[name] = module.dev_simulator(
                data_dir, notify_url=f"{api_url}/v1/webhooks/{name}", settlement=settlement
            )
        self.host = SimulatorHost(list(self.sims.values()), host=host, port=port)
        self._task: asyncio.Task[None] | None = None

    @property
    def configs(self) -> dict[str, dict[str, Any]]:
        """``Settings.providers`` for adapters that talk to these simulators."""
        return {
            name: sim.adapter_config(self.host.base_url(name)).model_dump()  # type: ignore[attr-defined]
            for name, sim in self.sims.items()
        }

    async def start(self) -> None:
        self._task = asyncio.create_task(self.host.serve())
        while not self.host.ready:
            if self._task.done():
                await self._task
                raise RuntimeError("the simulators stopped at start")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
