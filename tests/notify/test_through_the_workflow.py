"""A refund's notices, written by the run and delivered by its activity, as the customer's
mail server receives them."""

from __future__ import annotations

from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from refundflow.domain.states import RefundStatus
from refundflow.notify.config import NotifyConfig
from tests.notify.conftest import SmtpServer
from tests.workflows.conftest import open_stack


def _text(message: object) -> str:
    body = message.get_body(preferencelist=("plain",))  # type: ignore[attr-defined]
    return str(body.get_content())


async def test_a_completed_refund_mails_the_customer_in_their_language(
    env: WorkflowEnvironment, tmp_path: Path, smtp: SmtpServer
) -> None:
    config = NotifyConfig(smtp_host="127.0.0.1", smtp_port=smtp.port, mail_from="shop@example.com")
    async with open_stack(env, tmp_path, notify=config) as stack:
        order = await stack.order("o-mail")
        zh = {"email": "li@example.com", "locale": "zh-CN"}
        en = {"email": "amy@example.com", "locale": "en"}
        first = await stack.finish(await stack.start("r-mail-zh", order, contact=zh))
        second = await stack.finish(
            await stack.start(
                "r-mail-en", order, contact=en, items=[{"line_id": "l2", "quantity": 1}]
            )
        )
        assert (first.status, second.status) == (RefundStatus.COMPLETED, RefundStatus.COMPLETED)
        rows = stack.outbox("r-mail-zh", "customer") + stack.outbox("r-mail-en", "customer")
        assert rows and {r.status for r in rows} == {"sent"}
        expected_by = first.expected_by

    mails = {(to[0], str(m["Subject"])): m for to, m in smtp.mailbox.received}
    assert {to for to, _ in mails} == {"li@example.com", "amy@example.com"}
    # One mail per customer notice, none twice.
    assert len(smtp.mailbox.received) == len(rows)
    sent_zh = next(
        m
        for (to, s), m in mails.items()
        if to == "li@example.com" and "¥40.00" in _text(m) and "预计" in _text(m)
    )
    assert expected_by is not None
    year, month, day = (int(x) for x in expected_by.split("-"))
    assert f"{year}年{month}月{day}日" in _text(sent_zh)
    english = [_text(m) for (to, _), m in mails.items() if to == "amy@example.com"]
    assert any("CN¥20.00" in t for t in english)
