"""WeChat Pay API v3 on the wire, as the simulator (``wechat.py``) speaks it: the
``WECHATPAY2-SHA256-RSA2048`` signatures both ways, the refund resource and the refund result
notification (its resource encrypted by AEAD_AES_256_GCM under the APIv3 key), the PARAM_ERROR
checks, and the error codes with WeChat's messages and HTTP statuses."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import secrets
import string
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from refundflow.devstack.simulators.core import PROCESSING, SUCCESS, SimPayment, SimRefund
from refundflow.devstack.simulators.keys import KeyPair

SCHEME = "WECHATPAY2-SHA256-RSA2048"
_CHINA = dt.timezone(dt.timedelta(hours=8))
_NUMBER = re.compile(r"[0-9A-Za-z_\-|*@]{1,64}")
_AUTH_PARAM = re.compile(r'(\w+)="([^"]*)"')
HTTP_STATUS = {
    "PARAM_ERROR": 400,
    "INVALID_REQUEST": 400,
    "MCH_NOT_EXISTS": 400,
    "SIGN_ERROR": 401,
    "NO_AUTH": 403,
    "NOT_ENOUGH": 403,
    "USER_ACCOUNT_ABNORMAL": 403,
    "RESOURCE_NOT_EXISTS": 404,
    "FREQUENCY_LIMITED": 429,
    "SYSTEM_ERROR": 500,
}
MESSAGES = {
    "NOT_ENOUGH": "基本账户余额不足，请充值后重新发起",
    "USER_ACCOUNT_ABNORMAL": "退款请求失败，用户帐号注销",
    "NO_AUTH": "没有退款权限",
    "FREQUENCY_LIMITED": "频率限制，请降低频率后重试",
    "SYSTEM_ERROR": "系统错误",
    "PARAM_ERROR": "参数错误",
    "INVALID_REQUEST": "请求参数符合参数格式，但不符合业务规则",
}
# Refusals of the ledger check, as (code, message) WeChat gives them.
RULES = {
    "NO_ORDER": ("RESOURCE_NOT_EXISTS", "订单不存在"),
    "TOTAL": ("INVALID_REQUEST", "订单金额与原订单金额不一致，请核实后再试"),
    "CURRENCY": ("INVALID_REQUEST", "退款币种与原订单币种不一致"),
    "WINDOW": ("INVALID_REQUEST", "订单已超过退款期限，无法提交退款"),
    "COUNT": ("INVALID_REQUEST", "该订单部分退款次数已达上限（50次）"),
    "FULL": ("INVALID_REQUEST", "订单已全额退款"),
    "OVER": ("INVALID_REQUEST", "申请退款金额超过订单可退金额"),
}


# ---------------------------------------------------------------------- signatures
def signature_headers(platform_keys: KeyPair, body: bytes, stamp: str) -> dict[str, str]:
    """The platform's signature over ``body`` at ``stamp``, as WeChat Pay sends it."""
    nonce = secrets.token_hex(16).upper()
    message = stamp.encode() + b"\n" + nonce.encode() + b"\n" + body + b"\n"
    return {
        "Wechatpay-Timestamp": stamp,
        "Wechatpay-Nonce": nonce,
        "Wechatpay-Signature": platform_keys.sign(message),
        "Wechatpay-Serial": platform_keys.serial_no,
        "Wechatpay-Signature-Type": SCHEME,
    }


def authorization_refusal(
    header: str,
    *,
    method: str,
    url: str,
    body: bytes,
    mchid: str,
    merchant_keys: KeyPair,
    clock: Callable[[], float],
    clock_skew_s: float,
) -> tuple[str, str] | None:
    """Why WeChat Pay refuses a request's ``Authorization`` header, as (code, message); None
    if it verifies. ``url`` is the path and query as sent, which is what the merchant signed."""
    scheme, _, rest = header.partition(" ")
    params = dict(_AUTH_PARAM.findall(rest))
    needed = ("mchid", "nonce_str", "signature", "timestamp", "serial_no")
    if scheme != SCHEME or any(not params.get(name) for name in needed):
        return "SIGN_ERROR", "Authorization 头格式错误"
    if params["mchid"] != mchid:
        return "MCH_NOT_EXISTS", "商户号不存在"
    if params["serial_no"] != merchant_keys.serial_no:
        return "SIGN_ERROR", "商户证书序列号有误"
    stamp = params["timestamp"]
    if not stamp.isdigit() or abs(clock() - int(stamp)) > clock_skew_s:
        return "SIGN_ERROR", "请求时间戳与系统时间相差过大"
    message = f"{method}\n{url}\n{stamp}\n{params['nonce_str']}\n".encode() + body + b"\n"
    if not merchant_keys.verifies(message, params["signature"]):
        return "SIGN_ERROR", "错误的签名，验签失败"
    return None


# ---------------------------------------------------------------------- resources
def refund_resource(refund: SimRefund, payment: SimPayment | None) -> dict[str, Any]:
    """The refund as the create and query APIs answer it."""
    total = _total(refund, payment)
    status = refund_status(refund)
    resource: dict[str, Any] = {
        "refund_id": refund.provider_ref,
        "out_refund_no": refund.refund_no,
        "transaction_id": refund.payment_id,
        "out_trade_no": _out_trade_no(payment, refund.payment_id),
        "channel": "ORIGINAL",
        "user_received_account": refund.trace_ref,
        "create_time": _rfc3339(refund.created_at),
        "status": status,
        "funds_account": "AVAILABLE",
        "amount": {
            "total": total,
            "refund": refund.amount,
            "from": [],
            "payer_total": total,
            "payer_refund": refund.amount,
            "settlement_refund": refund.amount,
            "settlement_total": total,
            "discount_refund": 0,
            "currency": refund.currency,
            "refund_fee": 0,
        },
        "promotion_detail": [],
    }
    if status == "SUCCESS" and refund.settled_at is not None:
        resource["success_time"] = _rfc3339(refund.settled_at)
    return resource


def notification_body(
    refund: SimRefund,
    payment: SimPayment | None,
    *,
    mchid: str,
    event_id: str,
    apiv3_key: str,
) -> bytes:
    """The refund result notification about ``refund``'s outcome, its resource encrypted
    under the APIv3 key (the caller signs the body)."""
    status = refund_status(refund)
    total = _total(refund, payment)
    resource: dict[str, Any] = {
        "mchid": mchid,
        "out_trade_no": _out_trade_no(payment, refund.payment_id),
        "transaction_id": refund.payment_id,
        "out_refund_no": refund.refund_no,
        "refund_id": refund.provider_ref,
        "refund_status": status,
        "user_received_account": refund.trace_ref,
        "amount": {
            "total": total,
            "refund": refund.amount,
            "payer_total": total,
            "payer_refund": refund.amount,
        },
    }
    if status == "SUCCESS" and refund.settled_at is not None:
        resource["success_time"] = _rfc3339(refund.settled_at)
    nonce = secrets.token_hex(6)
    ciphertext = AESGCM(apiv3_key.encode()).encrypt(
        nonce.encode(), compact_json(resource), b"refund"
    )
    envelope = {
        "id": event_id,
        "create_time": _rfc3339(refund.settled_at or refund.created_at),
        "resource_type": "encrypt-resource",
        "event_type": f"REFUND.{status}",
        "summary": {"SUCCESS": "退款成功", "ABNORMAL": "退款异常", "CLOSED": "退款关闭"}[status],
        "resource": {
            "original_type": "refund",
            "algorithm": "AEAD_AES_256_GCM",
            "ciphertext": base64.b64encode(ciphertext).decode(),
            "associated_data": "refund",
            "nonce": nonce,
        },
    }
    return compact_json(envelope)


def malformed(data: dict[str, Any]) -> str:
    """WeChat's PARAM_ERROR checks on the request body; empty if it is well formed."""
    number = data.get("out_refund_no")
    if not isinstance(number, str) or not _NUMBER.fullmatch(number):
        return "out_refund_no 只能是数字、大小写字母_-|*@，且不超过64个字符"
    if not data.get("transaction_id") and not data.get("out_trade_no"):
        return "transaction_id 和 out_trade_no 不能同时为空"
    amount = data.get("amount")
    if not isinstance(amount, dict):
        return "amount 必填"
    for field in ("refund", "total"):
        value = amount.get(field)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            return f"amount.{field} 必须为正整数（单位：分）"
    if amount.get("currency", "CNY") != "CNY":
        return "amount.currency 目前只支持人民币：CNY"
    if len(str(data.get("reason") or "")) > 80:
        return "reason 不能超过80个字符"
    return ""


def refund_status(refund: SimRefund) -> str:
    if refund.status == SUCCESS:
        return "SUCCESS"
    if refund.status == PROCESSING:
        return "PROCESSING"
    return "CLOSED" if refund.code == "CLOSED" else "ABNORMAL"


def compact_json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def new_apiv3_key() -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(32))


def _total(refund: SimRefund, payment: SimPayment | None) -> int:
    return payment.amount if payment else int(refund.extra.get("total", refund.amount))


def _out_trade_no(payment: SimPayment | None, transaction_id: str) -> str:
    if payment is not None and payment.extra.get("out_trade_no"):
        return str(payment.extra["out_trade_no"])
    return f"ord_{transaction_id[-12:]}"


def _rfc3339(at: float) -> str:
    return dt.datetime.fromtimestamp(int(at), _CHINA).isoformat()
