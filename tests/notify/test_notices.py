"""Customer notice templates: complete in both locales, amounts and dates written per locale."""

from __future__ import annotations

import re
from typing import Any

import pytest

from refundflow.domain.messages import LOCALES
from refundflow.domain.notices import CUSTOMER_TEMPLATES, TEMPLATES, render_notice

# Every customer notice the workflow writes, with the params it passes (base + own).
BASE = {"refund_id": "rf_0a1b", "order_id": "SO-2027-88", "currency": "CNY"}
WORKFLOW_NOTICES: dict[str, dict[str, Any]] = {
    "refund_accepted": {"amount": 123456},
    "refund_rejected": {"reasons": ["OUTSIDE_WINDOW"], "text": "Window ended."},
    "refund_approved": {"amount": 123456},
    "return_instructions": {"deadline": "2027-10-08"},
    "refund_cancelled_no_return": {"deadline": "2027-10-08"},
    "confirm_amount": {"amount": 123456},
    "payout_sent": {
        "amount": 123456,
        "currency": "CNY",
        "route": "alipay",
        "expected_from": "2027-10-06",
        "expected_by": "2027-10-08",
        "trace_ref": "2027100622001400001",
    },
    "refund_delayed": {"expected_by": "2027-10-08"},
    "trace_reference": {"trace_refs": ["2027100622001400001"], "expected_by": "2027-10-08"},
    "refund_completed": {"amount": 123456},
    "feedback_request": {},
    "refund_cancelled": {},
}
AMOUNT = {"en": "CN¥1,234.56", "zh-CN": "¥1,234.56"}
DATE = {"en": "October 8, 2027", "zh-CN": "2027年10月8日"}


def test_the_catalog_is_exactly_the_workflows_customer_notices() -> None:
    assert set(WORKFLOW_NOTICES) == CUSTOMER_TEMPLATES
    for texts in TEMPLATES.values():
        assert set(texts) == set(LOCALES)


@pytest.mark.parametrize("template", sorted(WORKFLOW_NOTICES))
@pytest.mark.parametrize("locale", LOCALES)
def test_every_notice_renders_with_amount_and_date_for_the_locale(
    template: str, locale: str
) -> None:
    params = WORKFLOW_NOTICES[template]
    notice = render_notice(template, locale, {**BASE, **params})
    everything = "\n".join([notice.subject, notice.text, notice.html or "", notice.sms])
    assert not re.search(r"[{}]", everything)
    assert "SO-2027-88" in notice.text and "rf_0a1b" in notice.text
    assert notice.sms and len(notice.sms) < 200
    if "amount" in params:
        assert AMOUNT[locale] in notice.text and AMOUNT[locale] in notice.sms
    if {"deadline", "expected_by"} & set(params):
        assert DATE[locale] in notice.text and DATE[locale] in notice.sms
    if locale == "zh-CN":
        assert re.search(r"[\u4e00-\u9fff]", notice.subject)
    else:
        assert notice.subject.isascii() or AMOUNT["en"] in notice.subject


def test_amounts_in_other_currencies_follow_babel_per_locale() -> None:
    params = {**BASE, "currency": "USD", "amount": 123456}
    assert "$1,234.56" in render_notice("refund_approved", "en", params).subject
    assert "US$1,234.56" in render_notice("refund_approved", "zh-CN", params).subject
    jpy = {**BASE, "currency": "JPY", "amount": 5000}
    assert "¥5,000" in render_notice("refund_completed", "en", jpy).text
    assert "JP¥5,000" in render_notice("refund_completed", "zh-CN", jpy).text


def test_payout_sent_names_route_window_and_trace_reference() -> None:
    params = {**BASE, **WORKFLOW_NOTICES["payout_sent"]}
    zh = render_notice("payout_sent", "zh-CN", params)
    assert "退回至您的支付宝" in zh.text
    assert "预计于2027年10月6日至2027年10月8日到账" in zh.text
    assert "交易参考号：2027100622001400001" in zh.text
    assert "参考号：2027100622001400001" in zh.sms
    en = render_notice("payout_sent", "en", params)
    assert "to your Alipay" in en.text
    assert "between October 6, 2027 and October 8, 2027" in en.text
    assert "Reference: 2027100622001400001" in en.text
    assert "expected by October 8, 2027" in en.sms


@pytest.mark.parametrize(
    ("route", "zh", "en"),
    [
        ("wechat", "微信支付", "WeChat Pay"),
        ("card", "银行卡", "card"),
        ("stripe", "银行卡", "card"),
        ("paypal", "PayPal", "PayPal"),
        ("bank_transfer", "银行账户", "bank account"),
        ("balance", "账户余额", "store balance"),
    ],
)
def test_route_names_are_localized(route: str, zh: str, en: str) -> None:
    params = {**BASE, **WORKFLOW_NOTICES["payout_sent"], "route": route}
    assert f"退回至您的{zh}。" in render_notice("payout_sent", "zh-CN", params).text
    assert f"to your {en}." in render_notice("payout_sent", "en", params).text


def test_a_same_day_window_without_trace_reads_naturally() -> None:
    params = {
        **BASE,
        **WORKFLOW_NOTICES["payout_sent"],
        "route": "balance",
        "expected_from": "2027-10-08",
        "trace_ref": "",
    }
    en = render_notice("payout_sent", "en", params)
    assert "It should arrive by October 8, 2027." in en.text
    assert "between" not in en.text and "Reference" not in en.text
    zh = render_notice("payout_sent", "zh-CN", params)
    assert "预计于2027年10月8日前到账。" in zh.text and "参考号" not in zh.text


def test_rejection_reasons_and_trace_references_are_listed_per_locale() -> None:
    params = {
        **BASE,
        "reasons": ["OUTSIDE_WINDOW", "TOO_MANY_REFUNDS", "SOMETHING_NEW", "APPROVER_REJECTED"],
        "text": "<b>Window</b> ended.",  # an approver's note: quoted, and escaped in HTML
    }
    zh = render_notice("refund_rejected", "zh-CN", params)
    assert (
        "原因：已超过退款申请期限；账户退款次数已达上限；其他原因；经人工审核未予通过。" in zh.text
    )
    en = render_notice("refund_rejected", "en", params)
    assert "Reason: the refund window has ended; the account has reached its refund limit" in (
        en.text
    )
    assert en.html is not None and "&lt;b&gt;Window&lt;/b&gt;" in en.html
    refs = {**BASE, "trace_refs": ["ARN-1", "", "ARN-2"], "expected_by": "2027-10-08"}
    assert "查询：ARN-1；ARN-2。" in render_notice("trace_reference", "zh-CN", refs).text


def test_a_detail_text_per_locale_is_picked_for_the_locale() -> None:
    text = {"en": "The window ended on 2027-10-01.", "zh-CN": "退款期限已于2027-10-01截止。"}
    params = {**BASE, "reasons": ["OUTSIDE_WINDOW"], "text": text}
    assert "退款期限已于2027-10-01截止。" in render_notice("refund_rejected", "zh-CN", params).text
    en = render_notice("refund_rejected", "en", params).text
    assert "The window ended on 2027-10-01." in en and "截止" not in en


def test_locale_spellings_and_unknown_locales() -> None:
    params = {**BASE, "amount": 100}
    assert render_notice("refund_completed", "zh_CN", params).subject == "您的 ¥1.00 退款已完成"
    assert render_notice("refund_completed", "fr-FR", params).subject.startswith("Your refund")


def test_unknown_template_is_a_key_error_naming_it() -> None:
    with pytest.raises(KeyError, match="no customer notice template 'refund_teleported'"):
        render_notice("refund_teleported", "en", BASE)


def test_a_note_typed_by_staff_is_labelled_and_says_when_it_is_in_another_language() -> None:
    by_approver = {**BASE, "reasons": ["APPROVER_REJECTED"]}

    def text(locale: str, note: str) -> str:
        return render_notice("refund_rejected", locale, {**by_approver, "text": note}).text

    assert "\n\n商家备注（英文）：photos show no damage\n\n" in text(
        "zh-CN", "photos show no damage"
    )
    assert "\n\nNote from the shop (in Chinese): 照片显示无损坏\n\n" in text("en", "照片显示无损坏")
    assert "\n\nNote from the shop: photos show no damage\n\n" in text(
        "en", "photos show no damage"
    )
    assert "\n\n商家备注：照片显示无损坏\n\n" in text("zh-CN", "照片显示无损坏")
    russian = text("en", "Фото без повреждений")
    assert "Note from the shop (in its original language): Фото без повреждений" in russian
    assert "商家备注（原文）：Фото без повреждений" in text("zh-CN", "Фото без повреждений")


def test_text_the_system_wrote_for_ops_stays_out_of_customer_notices() -> None:
    internal = "refund rf_0a1b would exceed what was captured: it asks 89900 from payment p1"
    params = {**BASE, "reasons": ["AMOUNT_ABOVE_REMAINING"], "text": internal}
    for locale in LOCALES:
        notice = render_notice("refund_rejected", locale, params)
        assert "89900" not in notice.text and "payment p1" not in (notice.html or "")
    assert (
        "the amount is more than can still be refunded"
        in render_notice("refund_rejected", "en", params).text
    )
