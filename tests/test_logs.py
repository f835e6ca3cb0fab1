"""Logs: one JSON object per line when asked, each line of an API request with its request id
(the one the response's X-Request-ID header gives the client)."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
from fastapi import FastAPI

from refundflow.api.guard import RequestGuard
from refundflow.logs import configure_logging


async def test_a_request_logs_json_lines_with_its_request_id(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    configure_logging("json", "INFO")
    app = FastAPI()
    app.add_middleware(RequestGuard, max_body_bytes=1024)

    @app.get("/work")
    def work() -> dict[str, str]:
        logging.getLogger("refundflow.test").info("did the work", extra={"refund_id": "rf_1"})
        return {"ok": "yes"}

    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            response = await http.get("/work")
    finally:
        root.handlers[:], root.level = handlers, level
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    entry = next(line for line in lines if line["message"] == "did the work")
    assert entry["request_id"] == response.headers["x-request-id"]
    assert entry["level"] == "INFO" and entry["refund_id"] == "rf_1"
    assert entry["logger"] == "refundflow.test" and entry["time"].endswith("+00:00")
