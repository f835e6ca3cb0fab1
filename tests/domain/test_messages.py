"""The customer message catalog: complete, in both locales, formatted for each locale."""

from __future__ import annotations

import re
from datetime import date

import pytest

from refundflow.domain.messages import CATALOG, LOCALES, join, render, resolve_locale
from refundflow.domain.money import Money
from refundflow.domain.orders import OrderStatus
from refundflow.domain.review import ReasonCode

SAMPLE = {
    "days": 7,
    "deadline": date(2026, 3, 10),
    "status": OrderStatus.CANCELLED,
    "requested": Money(amount=5000, currency="CNY"),
    "remaining": Money(amount=4000, currency="CNY"),
    "limit": 10,
    "sku": "MUG-01",
    "amount": Money(amount=12345, currency="CNY"),
}


def test_every_reason_code_and_outcome_has_both_locales() -> None:
    keys = [*(code.value for code in ReasonCode), "REJECTED", "AUTO_APPROVED", "NEEDS_APPROVAL"]
    for key in keys:
        assert set(CATALOG[key]) == set(LOCALES), key


@pytest.mark.parametrize("key", sorted(CATALOG))
@pytest.mark.parametrize("locale", LOCALES)
def test_every_template_renders_without_leftover_placeholders(key: str, locale: str) -> None:
    params = dict(SAMPLE)
    if key.endswith(".units"):
        params.update(requested=2, remaining=1)
    text = render(key, locale, **params)
    assert text and not re.search(r"[{}]", text)


def test_window_message_names_days_and_date_in_both_locales() -> None:
    params = {"days": 7, "deadline": date(2026, 3, 10)}
    assert render("OUTSIDE_WINDOW", "en", **params) == (
        "The refund window for this reason is 7 days and ended on 2026-03-10."
    )
    assert render("OUTSIDE_WINDOW", "zh-CN", **params) == (
        "该原因的退款申请期限为 7 天，已于 2026-03-10 截止。"
    )


def test_counts_are_singular_or_plural_in_english() -> None:
    one = render("OUTSIDE_WINDOW", "en", days=1, deadline=date(2026, 3, 4))
    assert "is 1 day and" in one
    units = render("AMOUNT_ABOVE_REMAINING.units", "en", sku="A", requested=2, remaining=1)
    assert "2 units of item A" in units and "only 1 unit can" in units


def test_money_is_formatted_for_the_locale() -> None:
    params = {
        "requested": Money(amount=5000, currency="CNY"),
        "remaining": Money(amount=4000, currency="CNY"),
    }
    assert render("AMOUNT_ABOVE_REMAINING", "en", **params) == (
        "You asked for CN¥50.00, but only CN¥40.00 can still be refunded on this order."
    )
    assert render("AMOUNT_ABOVE_REMAINING", "zh-CN", **params) == (
        "您申请退款 ¥50.00，但该订单目前仅剩 ¥40.00 可退。"
    )
    jpy = Money(amount=5000, currency="JPY")
    assert "¥5,000" in render("AUTO_APPROVED", "en", amount=jpy)
    assert "JP¥5,000" in render("AUTO_APPROVED", "zh-CN", amount=jpy)


def test_order_status_is_named_in_words() -> None:
    assert "Orders that are cancelled" in render(
        "STATUS_NOT_REFUNDABLE", "en", status=OrderStatus.CANCELLED
    )
    assert "“已取消”" in render("STATUS_NOT_REFUNDABLE", "zh-CN", status=OrderStatus.CANCELLED)


def test_unknown_locale_falls_back_to_english() -> None:
    assert render("DUPLICATE_REQUEST", "fr-FR") == render("DUPLICATE_REQUEST", "en")
    assert resolve_locale("de") == "en"


def test_locale_spelling_variants_resolve_to_chinese() -> None:
    expected = render("DUPLICATE_REQUEST", "zh-CN")
    assert render("DUPLICATE_REQUEST", "zh_CN") == expected
    assert render("DUPLICATE_REQUEST", "zh-cn") == expected


def test_unknown_code_is_a_key_error() -> None:
    with pytest.raises(KeyError, match="NO_SUCH_CODE"):
        render("NO_SUCH_CODE", "en")


def test_join_follows_the_writing_of_the_locale() -> None:
    assert join("en", ["One.", "Two."]) == "One. Two."
    assert join("zh-CN", ["一。", "二。"]) == "一。二。"
