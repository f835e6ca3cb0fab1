"""`refundflow demo` against a running `refundflow dev`, as a newcomer runs them: every scenario
starts; the international one converts USD to CNY at a recorded rate with the policy's
cross-border fee; the delayed one tells its customer within seconds on the dev stack's fast
follow-up clock."""

from __future__ import annotations

import subprocess
import time
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.conftest import BIN, Stack


def _refund_of(http: httpx.Client, scenario: str) -> dict[str, Any]:
    [row] = [r for r in http.get("/v1/refunds").json()["items"] if r["order_id"].endswith(scenario)]
    refund: dict[str, Any] = http.get(f"/v1/refunds/{row['refund_id']}").json()
    return refund


def _subjects(mail: Path) -> list[str]:
    parser = BytesParser(policy=policy.default)
    return [str(parser.parsebytes(m.read_bytes())["Subject"]) for m in mail.glob("*.eml")]


def test_the_demo_shows_conversion_and_a_delay_notice_within_seconds(
    stack: Stack,
) -> None:
    stack.extra_args = ["--business-day-seconds", "2"]
    stack.start()
    shown = subprocess.run(
        [str(BIN / "refundflow"), "demo", "--api-url", stack.api_url],
        cwd=stack.data_dir.parent,  # the data folder is ./data, as after `make dev`
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "7.1" in shown.stdout and "USD" in shown.stdout and "CN¥" in shown.stdout

    admin = (stack.data_dir / "admin.key").read_text().strip()
    with httpx.Client(
        base_url=stack.api_url, headers={"Authorization": f"Bearer {admin}"}, timeout=30
    ) as http:
        international = _refund_of(http, "international")
        fx = international["quote"]["fx"]
        assert (fx["from_currency"], fx["to_currency"]) == ("USD", "CNY")
        assert fx["rate"]["source"] == "manual" and fx["cross_border_fee"] > 0
        assert international["quote"]["payout_currency"] == "CNY"

        deadline, kinds = time.monotonic() + 90, []
        while time.monotonic() < deadline and "delay_notice" not in kinds:
            time.sleep(1)
            live = _refund_of(http, "delayed").get("live") or {}
            kinds = [t["kind"] for t in live.get("timeline", [])]
        assert "delay_notice" in kinds
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if any("到账有所延迟" in s for s in _subjects(stack.data_dir / "mail")):
            break
        time.sleep(0.5)
    assert any("到账有所延迟" in s for s in _subjects(stack.data_dir / "mail"))
    assert stack.stop() == 0
