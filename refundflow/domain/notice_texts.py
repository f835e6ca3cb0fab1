"""The words of every customer notice, in zh-CN and en (rendered by
:mod:`refundflow.domain.notices`).

A body is a tuple of paragraphs. A paragraph is left out when a value it names is missing or
empty; a tuple of alternatives uses the first one whose values are all present.
"""

from __future__ import annotations

from dataclasses import dataclass

from refundflow.domain.messages import EN, ZH_CN

Paragraph = str | tuple[str, ...]


@dataclass(frozen=True)
class Template:
    subject: str
    body: tuple[Paragraph, ...]
    sms: tuple[Paragraph, ...]


GREETING = {EN: "Hello,", ZH_CN: "您好，"}
FOOTER = {EN: "Refund reference: {refund_id}", ZH_CN: "退款编号：{refund_id}"}
SMS_JOIN = {EN: " ", ZH_CN: ""}
# Reasons and references are separate items, not a sentence: no "and" between them.
ITEMS_JOIN = {EN: "; ", ZH_CN: "；"}

ROUTES: dict[str, dict[str, str]] = {
    EN: {
        "alipay": "Alipay",
        "wechat": "WeChat Pay",
        "card": "card",
        "stripe": "card",
        "paypal": "PayPal",
        "bank_transfer": "bank account",
        "balance": "store balance",
    },
    ZH_CN: {
        "alipay": "支付宝",
        "wechat": "微信支付",
        "card": "银行卡",
        "stripe": "银行卡",
        "paypal": "PayPal",
        "bank_transfer": "银行账户",
        "balance": "账户余额",
    },
}

REASONS: dict[str, dict[str, str]] = {
    EN: {
        "OUTSIDE_WINDOW": "the refund window has ended",
        "IN_TRANSIT": "the order is still on its way",
        "RETURN_NOT_RECEIVED": "the returned goods have not reached us yet",
        "STATUS_NOT_REFUNDABLE": "the order's status does not allow a refund",
        "PAYMENT_INCONSISTENT": "the payment records do not match the order",
        "AMOUNT_ABOVE_REMAINING": "the amount is more than can still be refunded",
        "DUPLICATE_REQUEST": "an identical request is already being processed",
        "TOO_MANY_REFUNDS": "the account has reached its refund limit",
        "PRESALE_NOT_ELIGIBLE": "the order is not a presale order",
        "APPROVER_REJECTED": "our team reviewed the request and declined it",
    },
    ZH_CN: {
        "OUTSIDE_WINDOW": "已超过退款申请期限",
        "IN_TRANSIT": "订单仍在运输途中",
        "RETURN_NOT_RECEIVED": "尚未收到退回的商品",
        "STATUS_NOT_REFUNDABLE": "订单当前状态不支持退款",
        "PAYMENT_INCONSISTENT": "支付记录与订单不一致",
        "AMOUNT_ABOVE_REMAINING": "申请金额超过可退金额",
        "DUPLICATE_REQUEST": "已有相同的退款申请正在处理",
        "TOO_MANY_REFUNDS": "账户退款次数已达上限",
        "PRESALE_NOT_ELIGIBLE": "该订单不是预售订单",
        "APPROVER_REJECTED": "经人工审核未予通过",
    },
}
OTHER_REASON = {EN: "other reasons", ZH_CN: "其他原因"}

TEMPLATES: dict[str, dict[str, Template]] = {
    "refund_accepted": {
        EN: Template(
            "We have received your refund request for order {order_id}",
            (
                "Your refund request of {amount} for order {order_id} has been accepted and is "
                "being processed. We will keep you posted at every step.",
            ),
            ("Your refund request of {amount} for order {order_id} has been accepted.",),
        ),
        ZH_CN: Template(
            "您的退款申请已受理（订单 {order_id}）",
            (
                "您为订单 {order_id} 申请的 {amount} 退款已受理，正在处理中。"
                "每一步进展我们都会通知您。",
            ),
            ("您订单{order_id}的{amount}退款申请已受理。",),
        ),
    },
    "refund_rejected": {
        EN: Template(
            "About your refund request for order {order_id}",
            (
                "We're sorry, but we cannot accept your refund request for order {order_id}.",
                "Reason: {reasons}.",
                "{text}",
                "If you have any questions, please reply to this email or contact our customer "
                "service.",
            ),
            (
                "We could not accept your refund request for order {order_id}.",
                "Reason: {reasons}.",
            ),
        ),
        ZH_CN: Template(
            "关于您订单 {order_id} 的退款申请",
            (
                "很抱歉，我们无法受理您订单 {order_id} 的退款申请。",
                "原因：{reasons}。",
                "{text}",
                "如有疑问，请回复此邮件或联系客服。",
            ),
            ("很抱歉，您订单{order_id}的退款申请未通过。", "原因：{reasons}。"),
        ),
    },
    "refund_approved": {
        EN: Template(
            "Your refund of {amount} has been approved",
            (
                "Good news: your refund of {amount} for order {order_id} has been approved. We "
                "will send the money shortly and let you know when it is on its way.",
            ),
            ("Your refund of {amount} for order {order_id} has been approved.",),
        ),
        ZH_CN: Template(
            "您的 {amount} 退款已审核通过",
            (
                "您订单 {order_id} 的 {amount} 退款已审核通过，我们将尽快为您退款，"
                "款项发出后会再通知您。",
            ),
            ("您订单{order_id}的{amount}退款已审核通过。",),
        ),
    },
    "return_instructions": {
        EN: Template(
            "Please return your items for order {order_id}",
            (
                "To complete your refund for order {order_id}, please send the items back by "
                "{deadline}.",
                "We will refund you once we have received and checked them. If they have not "
                "reached us by then, the refund request will be cancelled.",
            ),
            ("Please return the items of order {order_id} by {deadline} to get your refund.",),
        ),
        ZH_CN: Template(
            "请退回订单 {order_id} 的商品",
            (
                "为完成订单 {order_id} 的退款，请于{deadline}前将商品寄回。",
                "我们收到并检查商品后将为您退款。如届时仍未收到商品，本次退款申请将自动取消。",
            ),
            ("请于{deadline}前寄回订单{order_id}的商品，收到后为您退款。",),
        ),
    },
    "refund_cancelled_no_return": {
        EN: Template(
            "Your refund request for order {order_id} was cancelled",
            (
                "We did not receive the returned items of order {order_id} by {deadline}, so "
                "the refund request has been cancelled.",
                "If you have already sent them, please contact our customer service with the "
                "tracking number.",
            ),
            ("Refund for order {order_id} cancelled: the items were not returned by {deadline}.",),
        ),
        ZH_CN: Template(
            "订单 {order_id} 的退款申请已取消",
            (
                "我们在{deadline}前未收到订单 {order_id} 的退回商品，本次退款申请已取消。",
                "如您已寄出商品，请提供物流单号联系客服。",
            ),
            ("订单{order_id}的商品未在{deadline}前退回，退款申请已取消。",),
        ),
    },
    "confirm_amount": {
        EN: Template(
            "Please confirm your refund of {amount}",
            (
                "Your refund for order {order_id} comes to {amount}. Please confirm this amount "
                "so that we can send it to you.",
                "If anything looks wrong, tell us instead and we will check it again.",
            ),
            ("Please confirm the refund of {amount} for order {order_id}.",),
        ),
        ZH_CN: Template(
            "请确认退款金额 {amount}",
            (
                "您订单 {order_id} 的退款金额为 {amount}，请确认后我们将为您退款。",
                "如金额有误，请告诉我们，我们会重新核对。",
            ),
            ("您订单{order_id}的退款金额为{amount}，请确认。",),
        ),
    },
    "payout_sent": {
        EN: Template(
            "Your refund of {amount} is on its way",
            (
                "We have sent your refund of {amount} for order {order_id} to your {route}.",
                (
                    "It should arrive between {expected_from} and {expected_by}.",
                    "It should arrive by {expected_by}.",
                ),
                "Reference: {trace_ref}. If the money has not arrived by {expected_by}, your "
                "bank or payment provider can trace it with this reference.",
            ),
            (
                (
                    "Refund of {amount} for order {order_id} sent to your {route}, expected by "
                    "{expected_by}.",
                    "Refund of {amount} for order {order_id} sent to your {route}.",
                ),
                "Ref: {trace_ref}.",
            ),
        ),
        ZH_CN: Template(
            "您的 {amount} 退款已发出",
            (
                "您订单 {order_id} 的 {amount} 退款已退回至您的{route}。",
                ("预计于{expected_from}至{expected_by}到账。", "预计于{expected_by}前到账。"),
                "交易参考号：{trace_ref}。如{expected_by}仍未到账，"
                "可凭此参考号向银行或支付机构查询。",
            ),
            (
                (
                    "您订单{order_id}的{amount}退款已退回至{route}，预计{expected_by}前到账。",
                    "您订单{order_id}的{amount}退款已退回至{route}。",
                ),
                "参考号：{trace_ref}。",
            ),
        ),
    },
    "refund_delayed": {
        EN: Template(
            "Your refund for order {order_id} is taking longer than expected",
            (
                "We expected your refund for order {order_id} to arrive by {expected_by}, but "
                "it has not been confirmed yet.",
                "We are checking with the payment provider and will let you know as soon as we "
                "know more. You don't need to do anything.",
                "Reference: {trace_refs}.",
            ),
            (
                "Your refund for order {order_id} is taking longer than expected (due by "
                "{expected_by}). We are checking it.",
            ),
        ),
        ZH_CN: Template(
            "您订单 {order_id} 的退款到账有所延迟",
            (
                "您订单 {order_id} 的退款原预计于{expected_by}前到账，目前尚未确认到账。",
                "我们正在与支付机构核实，有进展会第一时间通知您，您无需进行任何操作。",
                "交易参考号：{trace_refs}。",
            ),
            ("您订单{order_id}的退款尚未确认到账（原预计{expected_by}前），我们正在核实。",),
        ),
    },
    "trace_reference": {
        EN: Template(
            "Tracing your refund for order {order_id}",
            (
                "We're sorry that your refund for order {order_id} has not reached you yet.",
                "Your bank or payment provider can trace it with this reference: {trace_refs}.",
                "It should arrive by {expected_by}; we keep checking until it does.",
            ),
            (
                "Refund for order {order_id}: trace reference {trace_refs}.",
                "Expected by {expected_by}.",
            ),
        ),
        ZH_CN: Template(
            "订单 {order_id} 退款的查询参考号",
            (
                "很抱歉，您订单 {order_id} 的退款尚未到账。",
                "您可凭以下参考号向银行或支付机构查询：{trace_refs}。",
                "预计于{expected_by}前到账，我们会持续跟进直至到账。",
            ),
            ("您订单{order_id}的退款查询参考号：{trace_refs}。", "预计{expected_by}前到账。"),
        ),
    },
    "refund_completed": {
        EN: Template(
            "Your refund of {amount} is complete",
            (
                "Your refund of {amount} for order {order_id} is complete. Thank you for your "
                "patience.",
            ),
            ("Your refund of {amount} for order {order_id} is complete.",),
        ),
        ZH_CN: Template(
            "您的 {amount} 退款已完成",
            ("您订单 {order_id} 的 {amount} 退款已完成，感谢您的耐心等待。",),
            ("您订单{order_id}的{amount}退款已完成。",),
        ),
    },
    "feedback_request": {
        EN: Template(
            "How did we do with your refund?",
            (
                "Your refund for order {order_id} is complete. We'd love to hear how it went: "
                "just reply to this email with a few words.",
            ),
            ("How was your refund for order {order_id}? Reply to tell us.",),
        ),
        ZH_CN: Template(
            "请评价本次退款服务",
            ("您订单 {order_id} 的退款已完成。欢迎回复此邮件，告诉我们您对本次退款服务的感受。",),
            ("您订单{order_id}的退款已完成，欢迎回复评价本次服务。",),
        ),
    },
    "refund_cancelled": {
        EN: Template(
            "Your refund request for order {order_id} was cancelled",
            (
                "Your refund request for order {order_id} has been cancelled. No money has "
                "been sent.",
                "If you did not expect this, please contact our customer service.",
            ),
            ("Your refund request for order {order_id} has been cancelled.",),
        ),
        ZH_CN: Template(
            "订单 {order_id} 的退款申请已取消",
            ("您订单 {order_id} 的退款申请已取消，未发生任何退款。", "如有疑问，请联系客服。"),
            ("您订单{order_id}的退款申请已取消。",),
        ),
    },
}

# A note a person of the shop wrote to the customer, quoted as written: the label says who
# wrote it and, when it is not in the customer's language, which language it is in.
STAFF_NOTE = {EN: "Note from the shop{language}: {note}", ZH_CN: "商家备注{language}：{note}"}
NOTE_LANGUAGE = {EN: " (in {name})", ZH_CN: "（{name}）"}
LANGUAGE_NAMES = {EN: {EN: "English", ZH_CN: "Chinese"}, ZH_CN: {EN: "英文", ZH_CN: "中文"}}
UNKNOWN_LANGUAGE = {EN: " (in its original language)", ZH_CN: "（原文）"}
