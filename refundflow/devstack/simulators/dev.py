"""Every provider simulator on one port for the dev stack, and the adapter configs that point
the real adapters at them. Keys and ledgers live under the data folder, so a restart resumes.

``python -m refundflow.devstack.simulators.dev`` serves them alone, for a stack whose worker and
API run as processes of their own (see ``main``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import logging
import signal
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from refundflow.devstack.simulators.core import SimLedger
from refundflow.devstack.simulators.host import Simulator, SimulatorHost

SIMULATORS: dict[str, str] = {
    "alipay": "refundflow.devstack.simulators.alipay",
    "wechat": "refundflow.devstack.simulators.wechat",
    "stripe": "refundflow.devstack.simulators.stripe",
    "paypal": "refundflow.devstack.simulators.paypal",
    "bank_transfer": "refundflow.devstack.simulators.bank",
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


async def serve(
    data_dir: Path, *, host: str, port: int, api_url: str, settlement: str, configs: Path | None
) -> None:
    """Serve the simulators until SIGTERM or Ctrl-C. ``configs`` receives the adapters'
    ``REFUNDFLOW_PROVIDERS`` JSON (keys included, so readable by this user only) once the
    simulators listen: a stack run as separate processes points its workers and API there."""
    providers = DevProviders(data_dir, port=port, api_url=api_url, host=host, settlement=settlement)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await providers.start()
    try:
        if configs is not None:
            _write_private(configs, json.dumps(providers.configs, default=_reveal))
        await stop.wait()
    finally:
        await providers.stop()


def _reveal(value: object) -> object:
    """Secrets as the environment variable must carry them (pydantic hides them otherwise)."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    partial.chmod(0o600)
    partial.replace(path)  # whoever waits for the file never reads half of it


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m refundflow.devstack.simulators.dev",
        description="Every provider simulator on one port, without the rest of the dev stack.",
    )
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--api-url", default="http://127.0.0.1:8000", help="webhooks go here")
    parser.add_argument("--settlement", default="seconds:3", help="never, queries:N, seconds:S")
    parser.add_argument("--configs", type=Path, help="write REFUNDFLOW_PROVIDERS JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(
        serve(
            args.data_dir,
            host=args.host,
            port=args.port,
            api_url=args.api_url,
            settlement=args.settlement,
            configs=args.configs,
        )
    )


if __name__ == "__main__":
    main()
