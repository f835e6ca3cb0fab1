"""What the customer reads about a review decision, in zh-CN and en.

Callers pass raw values (``Money``, ``date``, ``OrderStatus``, counts); they are formatted here
for the locale, so one decision renders correctly in every language. A count is written with a
noun as its format spec (``{days:day}``): "1 day" / "7 days" in English, "7 天" in Chinese.
"""

from __future__ import annotations

import string
from datetime import date
from typing import Any

from refundflow.domain.money import Money
from refundflow.domain.orders import OrderStatus

EN = "en"
ZH_CN = "zh-CN"
LOCALES: tuple[str, ...] = (ZH_CN, EN)

CATALOG: dict[str, dict[str, str]] = {
    # Review reasons (one key per ReasonCode, plus the variants of AMOUNT_ABOVE_REMAINING).
    "OUTSIDE_WINDOW": {
        EN: "The refund window for this reason is {days:day} and ended on {deadline}.",
        ZH_CN: "该原因的退款申请期限为 {days:day}，已于 {deadline} 截止。",
    },
    "IN_TRANSIT": {
        EN: "Your order is still on its way. Once it has been delivered, you are welcome to "
        "request a refund.",
        ZH_CN: "您的订单仍在运输途中，签收后即可申请退款。",
    },
    "RETURN_NOT_RECEIVED": {
        EN: "A return is already in progress for this order. We will refund it as soon as we "
        "have received the goods.",
        ZH_CN: "该订单的退货正在进行中，我们收到退回的商品后会尽快为您退款。",
    },
    "STATUS_NOT_REFUNDABLE": {
        EN: "Orders that are {status} cannot be refunded for this reason.",
        ZH_CN: "订单当前状态为“{status}”，不支持以该原因申请退款。",
    },
    "PAYMENT_INCONSISTENT": {
        EN: "The payment records of this order do not match the order. Our team will look "
        "into it and contact you.",
        ZH_CN: "该订单的支付记录与订单信息不一致，我们的工作人员将进行核实并与您联系。",
    },
    "AMOUNT_ABOVE_REMAINING": {
        EN: "You asked for {requested}, but only {remaining} can still be refunded on this order.",
        ZH_CN: "您申请退款 {requested}，但该订单目前仅剩 {remaining} 可退。",
    },
    "AMOUNT_ABOVE_REMAINING.units": {
        EN: "You asked to refund {requested:unit} of item {sku}, but only {remaining:unit} "
        "can still be refunded.",
        ZH_CN: "您申请退款的商品 {sku} 为 {requested:unit}，但目前仅剩 {remaining:unit}可退。",
    },
    "AMOUNT_ABOVE_REMAINING.units_none": {
        EN: "Item {sku} has already been refunded in full or is being refunded.",
        ZH_CN: "商品 {sku} 已全部退款或正在退款中。",
    },
    "AMOUNT_ABOVE_REMAINING.nothing": {
        EN: "Everything paid for this order has already been refunded or is being refunded.",
        ZH_CN: "该订单的已付款项已全部退款或正在退款中，暂无可退金额。",
    },
    "DUPLICATE_REQUEST": {
        EN: "An identical refund request for this order is already being processed, so there "
        "is no need to submit it again.",
        ZH_CN: "该订单已有相同的退款申请正在处理中，无需重复提交。",
    },
    "TOO_MANY_REFUNDS": {
        EN: "This account has reached the limit of {limit:refund} in 30 days. Our customer "
        "service team will be glad to help.",
        ZH_CN: "该账户近 30 天的退款次数已达上限（{limit:refund}），如需帮助请联系客服。",
    },
    "PRESALE_NOT_ELIGIBLE": {
        EN: "This is not a presale order, so it cannot be cancelled as a presale.",
        ZH_CN: "该订单不是预售订单，不适用预售取消退款。",
    },
    # Outcomes.
    "REJECTED": {
        EN: "We're sorry, but we cannot accept this refund request.",
        ZH_CN: "很抱歉，我们无法受理您的退款申请。",
    },
    "AUTO_APPROVED": {
        EN: "Good news: your refund of {amount} has been approved and will be on its way shortly.",
        ZH_CN: "您的 {amount} 退款申请已审核通过，我们将尽快为您退款。",
    },
    "NEEDS_APPROVAL": {
        EN: "Your refund request for {amount} has been passed to our team for approval. "
        "We will let you know as soon as it has been decided.",
        ZH_CN: "您的 {amount} 退款申请已提交人工审核，审核结果将第一时间通知您。",
    },
}

# How the sentences of one message are joined: Chinese sentences carry their own full stop.
SEPARATOR: dict[str, str] = {EN: " ", ZH_CN: ""}

_STATUS: dict[str, dict[OrderStatus, str]] = {
    EN: {
        OrderStatus.PAID: "paid",
        OrderStatus.SHIPPED: "shipped",
        OrderStatus.DELIVERED: "delivered",
        OrderStatus.RETURN_IN_PROGRESS: "being returned",
        OrderStatus.COMPLETED: "completed",
        OrderStatus.CANCELLED: "cancelled",
    },
    ZH_CN: {
        OrderStatus.PAID: "已付款",
        OrderStatus.SHIPPED: "已发货",
        OrderStatus.DELIVERED: "已签收",
        OrderStatus.RETURN_IN_PROGRESS: "退货中",
        OrderStatus.COMPLETED: "已完成",
        OrderStatus.CANCELLED: "已取消",
    },
}

_NOUNS: dict[str, dict[str, tuple[str, str]]] = {
    # noun: (singular, plural) per locale
    EN: {"day": ("day", "days"), "unit": ("unit", "units"), "refund": ("refund", "refunds")},
    ZH_CN: {"day": ("天", "天"), "unit": ("件", "件"), "refund": ("次", "次")},
}


def resolve_locale(locale: str) -> str:
    """The catalog locale for ``locale`` ("zh_CN" and "zh-cn" are zh-CN); English otherwise."""
    wanted = locale.replace("_", "-").lower()
    return next((loc for loc in LOCALES if loc.lower() == wanted), EN)


class _Formatter(string.Formatter):
    def __init__(self, locale: str) -> None:
        self.locale = locale

    def format_field(self, value: Any, format_spec: str) -> str:
        if isinstance(value, Money):
            return value.format(self.locale)
        if isinstance(value, OrderStatus):
            return _STATUS[self.locale][value]
        if isinstance(value, date):
            return value.isoformat()
        if format_spec in _NOUNS[self.locale]:
            one, many = _NOUNS[self.locale][format_spec]
            return f"{value} {one if value == 1 else many}"
        return str(super().format_field(value, format_spec))


def render(code: str, locale: str, **params: Any) -> str:
    """The message for ``code`` in ``locale`` (English when the locale is unknown)."""
    try:
        texts = CATALOG[code]
    except KeyError:
        raise KeyError(f"no customer message for {code!r}") from None
    loc = resolve_locale(locale)
    return _Formatter(loc).format(texts[loc], **params)


def join(locale: str, parts: list[str]) -> str:
    """Sentences of one message, joined the way ``locale`` writes them."""
    return SEPARATOR[resolve_locale(locale)].join(parts)
