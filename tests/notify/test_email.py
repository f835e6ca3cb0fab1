"""Email over a real SMTP server (aiosmtpd): headers and bodies as the recipient decodes them."""

from __future__ import annotations

import pytest

from refundflow.domain.notices import render_notice
from refundflow.notify.errors import DeliveryError
from tests.notify.conftest import UNKNOWN_MAILBOX, SmtpServer

PAYOUT = {
    "refund_id": "rf_7c1d",
    "order_id": "SO-88",
    "amount": 123456,
    "currency": "CNY",
    "route": "wechat",
    "expected_from": "2027-10-06",
    "expected_by": "2027-10-08",
    "trace_ref": "4200001234202710060000",
}


async def test_zh_cn_payout_notice_arrives_with_encoded_subject_and_both_bodies(
    smtp: SmtpServer,
) -> None:
    notice = render_notice("payout_sent", "zh-CN", PAYOUT)
    message_id = await smtp.sender().send(
        "李雷 <lilei@example.cn>", notice, key="evt_1", locale="zh-CN"
    )
    assert message_id == "<evt_1@shop.example>"
    [(rcpt, msg)] = smtp.mailbox.received
    assert rcpt == ["lilei@example.cn"]
    assert msg["Subject"] == "您的 ¥1,234.56 退款已发出"
    assert msg["Message-ID"] == "<evt_1@shop.example>"
    assert msg["Content-Language"] == "zh-CN"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg.get_content_type() == "multipart/alternative"
    text = msg.get_body(preferencelist=("plain",))
    html = msg.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    body = text.get_content()
    assert "退回至您的微信支付" in body
    assert "预计于2027年10月6日至2027年10月8日到账" in body
    assert "交易参考号：4200001234202710060000" in body
    assert "4200001234202710060000" in html.get_content()
    # On the wire the headers are RFC 2047 words and the bodies base64: plain ASCII.
    assert msg.as_bytes().isascii()


async def test_en_payout_notice_arrives_readable(smtp: SmtpServer) -> None:
    notice = render_notice("payout_sent", "en", PAYOUT)
    await smtp.sender().send("customer@example.com", notice, key="evt_2")
    [(_rcpt, msg)] = smtp.mailbox.received
    assert msg["Subject"] == "Your refund of CN¥1,234.56 is on its way"
    assert msg["From"] == "Refunds <refunds@shop.example>"
    text = msg.get_body(preferencelist=("plain",))
    assert text is not None
    body = text.get_content()
    assert "to your WeChat Pay" in body
    assert "between October 6, 2027 and October 8, 2027" in body
    assert "Reference: 4200001234202710060000" in body


async def test_unknown_mailbox_is_refused_for_good(smtp: SmtpServer) -> None:
    notice = render_notice("refund_completed", "en", PAYOUT)
    with pytest.raises(DeliveryError, match="550") as err:
        await smtp.sender().send(UNKNOWN_MAILBOX, notice)
    assert not err.value.retryable
    assert smtp.mailbox.received == []


async def test_a_stopped_server_is_a_retryable_failure(smtp: SmtpServer) -> None:
    smtp.stop()
    notice = render_notice("refund_completed", "en", PAYOUT)
    with pytest.raises(DeliveryError) as err:
        await smtp.sender().send("customer@example.com", notice)
    assert err.value.retryable and err.value.code == "smtp"


def test_starttls_and_ssl_exclude_each_other(smtp: SmtpServer) -> None:
    with pytest.raises(ValueError, match="not both"):
        smtp.sender(starttls=True, ssl=True)
