"""How long the approver inbox takes to load: the bench's scale section calls ``measure_inbox``
with its refunds waiting for approval; or run alone:

    .venv/bin/python -m bench.console_inbox --seed 2000
        seeds a fresh SQLite database with 2,000 refunds waiting for approval, serves the app
        over HTTP on this machine, signs in as an approver and times GET /console/inbox;
    .venv/bin/python -m bench.console_inbox --base-url http://127.0.0.1:8000 --key K
        times a running console (signed in with the approver key K).

The seeded refunds are rows only (the inbox reads only the database: no run is asked), written
straight into the table as a benchmark's fixture; the product never writes them this way."""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass(frozen=True)
class InboxTiming:
    waiting: int
    """The refunds the inbox says wait."""
    loads: int
    median_ms: float
    p90_ms: float
    page_bytes: int


async def measure_inbox(base_url: str, api_key: str, *, loads: int = 30) -> InboxTiming:
    """Sign in as the approver ``api_key`` and load the inbox ``loads`` times (after one warm
    load), timing each whole response."""
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        form = await http.get("/console/sign-in")
        token = CSRF.search(form.text)
        assert token, "no sign-in form"
        signed = await http.post(
            "/console/sign-in", data={"csrf": token.group(1), "api_key": api_key}
        )
        assert signed.status_code == 303, f"sign-in refused: {signed.status_code}"
        page = await http.get("/console/inbox")
        assert page.status_code == 200, page.status_code
        took: list[float] = []
        for _ in range(loads):
            started = time.perf_counter()
            page = await http.get("/console/inbox")
            took.append((time.perf_counter() - started) * 1000)
            assert page.status_code == 200
    count = re.search(r'id="inbox-count">(\d[\d,]*)', page.text)
    ordered = sorted(took)
    return InboxTiming(
        waiting=int(count.group(1).replace(",", "")) if count else 0,
        loads=loads,
        median_ms=round(statistics.median(ordered), 1),
        p90_ms=round(ordered[max(0, -(-9 * len(ordered) // 10) - 1)], 1),
        page_bytes=len(page.content),
    )


def seed_waiting(database_url: str, merchant: str, count: int) -> str:
    """``count`` refunds waiting for approval; an approver's key (the token)."""
    from refundflow.db.engine import make_engine, session_scope
    from refundflow.db.models import OrderRow, RefundRow
    from refundflow.db.repository import create_api_key, upsert_merchant

    engine = make_engine(database_url)
    now = datetime.now(UTC)
    with session_scope(engine) as s:
        upsert_merchant(s, merchant_id=merchant)
        _, token = create_api_key(s, merchant_id=merchant, name="bench-approver", role="approver")
        for n in range(count):
            at = now - timedelta(minutes=count - n)
            s.add(
                OrderRow(
                    merchant_id=merchant,
                    order_id=f"o-{n}",
                    customer_id=f"cust-{n % 97}",
                    channel="own_store",
                    country="CN",
                    currency="CNY",
                    status="DELIVERED",
                    placed_at=at,
                    snapshot={},
                )
            )
            s.flush()
            s.add(
                RefundRow(
                    refund_id=f"rf_bench_{n:05d}_{uuid.uuid4().hex[:6]}",
                    merchant_id=merchant,
                    order_id=f"o-{n}",
                    customer_id=f"cust-{n % 97}",
                    status="AWAITING_APPROVAL",
                    reason="DAMAGED",
                    currency="CNY",
                    total=50000 + n,
                    requested_by="bench-client",
                    policy_version=1,
                    quote={},
                    quote_fingerprint="0" * 32,
                    request={},
                    request_fingerprint="",
                    created_at=at,
                    updated_at=at,
                )
            )
    engine.dispose()
    return token


async def seeded_run(count: int, loads: int) -> InboxTiming:
    import base64
    import os

    import uvicorn
    from pydantic import SecretStr

    from refundflow.api.app import create_app
    from refundflow.db.engine import make_engine
    from refundflow.db.migrate import upgrade
    from refundflow.devstack.ports import free_port
    from refundflow.settings import Settings

    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'bench.db'}"
        upgrade(url)
        key = seed_waiting(url, "bench-shop", count)
        keys = f"bench:{base64.b64encode(os.urandom(32)).decode()}"
        settings = Settings(
            database_url=url, data_dir=Path(folder), encryption_keys=SecretStr(keys)
        )
        engine = make_engine(url)
        app = create_app(settings, engine=engine, temporal=None)
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
        )
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.02)
        try:
            return await measure_inbox(f"http://127.0.0.1:{port}", key, loads=loads)
        finally:
            server.should_exit = True
            await task
            engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, help="refunds waiting, in a fresh local database")
    parser.add_argument("--base-url", help="a running console")
    parser.add_argument("--key", help="an approver's API key for --base-url")
    parser.add_argument("--loads", type=int, default=30)
    args = parser.parse_args()
    if args.seed:
        timing = asyncio.run(seeded_run(args.seed, args.loads))
    else:
        if not (args.base_url and args.key):
            parser.error("--seed N, or --base-url and --key")
        timing = asyncio.run(measure_inbox(args.base_url, args.key, loads=args.loads))
    print(timing)


if __name__ == "__main__":
    main()
