"""A codec server on a real port, over a real SQLite refunds database with keys of each role."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from sqlalchemy import Engine

from refundflow.codec_server import create_codec_app
from refundflow.db.engine import make_engine, session_scope
from refundflow.db.migrate import upgrade
from refundflow.db.repository import create_api_key, upsert_merchant
from refundflow.devstack.ports import free_ports
from tests.payload_keys import CODEC

UI_ORIGIN = "http://127.0.0.1:8233"


@dataclass
class CodecServer:
    url: str
    engine: Engine
    keys: dict[str, str]
    """Role -> API key token."""


@pytest.fixture
async def codec_server(tmp_path: Path) -> AsyncIterator[CodecServer]:
    url = f"sqlite:///{tmp_path / 'refundflow.db'}"
    upgrade(url)
    engine = make_engine(url)
    keys: dict[str, str] = {}
    with session_scope(engine) as session:
        upsert_merchant(session, merchant_id="shop", name="Shop")
        for role in ("client", "approver", "ops", "admin"):
            _, keys[role] = create_api_key(session, merchant_id="shop", name=role, role=role)
    (port,) = free_ports(1)
    app = create_codec_app(CODEC, engine, ui_origin=UI_ORIGIN)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:
        assert not serving.done(), "the codec server did not start"
        await asyncio.sleep(0.02)
    try:
        yield CodecServer(url=f"http://127.0.0.1:{port}", engine=engine, keys=keys)
    finally:
        server.should_exit = True
        await serving
        engine.dispose()
