"""Alipay's open-platform gateway on the wire, as the simulator (``alipay.py``) speaks it: the
common parameters and their gateway errors, RSA2 signatures over the sorted parameter string and
over the exact response-node text, business errors, and Alipay's amounts (yuan text), Beijing
times and identifiers.

The signing code is written from the provider's side on purpose, separately from the adapter's,
so that a mistake in one is caught by the other.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from decimal import Decimal, InvalidOperation
from typing import Any

from refundflow.devstack.simulators.core import SimPayment
from refundflow.devstack.simulators.keys import KeyPair

REFUND = "alipay.trade.refund"
REFUND_QUERY = "alipay.trade.fastpay.refund.query"
_BEIJING = dt.timezone(dt.timedelta(hours=8))
_TIME = "%Y-%m-%d %H:%M:%S"
_REQUIRED = (
    ("app_id", "isv.missing-app-id"),
    ("method", "isv.missing-method"),
    ("sign_type", "isv.missing-signature-type"),
    ("sign", "isv.missing-signature"),
    ("timestamp", "isv.missing-timestamp"),
    ("version", "isv.missing-version"),
)
_MESSAGES = {
    "ACQ.SYSTEM_ERROR": "系统错误",
    "ACQ.INVALID_PARAMETER": "参数无效",
    "ACQ.TRADE_NOT_EXIST": "交易不存在",
    "ACQ.TRADE_HAS_CLOSE": "交易已经关闭",
    "ACQ.TRADE_HAS_FINISHED": "交易已完结",
    "ACQ.TRADE_STATUS_ERROR": "交易状态非法",
    "ACQ.TRADE_NOT_ALLOW_REFUND": "当前交易不允许退款",
    "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL": "退款金额超限",
    "ACQ.REASON_TRADE_REFUND_FEE_ERR": "退款金额无效",
    "ACQ.DISCORDANT_REPEAT_REQUEST": "不一致的请求",
    "ACQ.SELLER_BALANCE_NOT_ENOUGH": "卖家余额不足",
    "ACQ.REASON_TRADE_BEEN_FREEZEN": "请求退款的交易被冻结",
}


# ---------------------------------------------------------------------- signatures
def common_params_refusal(
    params: dict[str, str], *, app_id: str, app_keys: KeyPair
) -> dict[str, Any] | None:
    """The gateway error for a request's common parameters (signature included); None if
    they pass."""
    for field, sub_code in _REQUIRED:
        if not params.get(field):
            return gateway_error("40001", sub_code)
    if params["app_id"] != app_id:
        return gateway_error("40002", "isv.invalid-app-id")
    if params["method"] not in (REFUND, REFUND_QUERY):
        return gateway_error("40002", "isv.invalid-method")
    if params["sign_type"] != "RSA2":
        return gateway_error("40002", "isv.invalid-signature-type")
    if params.get("charset", "utf-8").lower() != "utf-8":
        return gateway_error("40002", "isv.invalid-charset")
    if params.get("format", "JSON").upper() != "JSON":
        return gateway_error("40002", "isv.invalid-format")
    try:
        dt.datetime.strptime(params["timestamp"], _TIME)
    except ValueError:
        return gateway_error("40002", "isv.invalid-timestamp")
    content = sign_content({k: v for k, v in params.items() if k != "sign"})
    if not app_keys.verifies(content.encode("utf-8"), params["sign"]):
        return gateway_error(
            "40002",
            "isv.invalid-signature",
            f"验签出错，建议检查签名字符串或签名私钥与应用公钥是否匹配，网关生成的验签字符串为：{content}",
        )
    return None


def sign_content(params: dict[str, str]) -> str:
    """The string Alipay signs: non-empty parameters sorted by name, ``k=v`` joined by ``&``."""
    return "&".join(f"{k}={params[k]}" for k in sorted(params) if params[k] != "")


def signed_answer(node_name: str, node: dict[str, Any], alipay_keys: KeyPair) -> bytes:
    """The gateway's answer: the response node and Alipay's signature over its exact text."""
    raw = json.dumps(node, ensure_ascii=False, separators=(",", ":"))
    sign = alipay_keys.sign(raw.encode("utf-8"))
    return f'{{"{node_name}":{raw},"sign":"{sign}"}}'.encode()


# ---------------------------------------------------------------------- errors
def gateway_error(code: str, sub_code: str, sub_msg: str = "") -> dict[str, Any]:
    msg = "Missing Required Arguments" if code == "40001" else "Invalid Arguments"
    return {"code": code, "msg": msg, "sub_code": sub_code, "sub_msg": sub_msg or sub_code}


def business_error(sub_code: str, sub_msg: str = "") -> dict[str, Any]:
    return {
        "code": "40004",
        "msg": "Business Failed",
        "sub_code": sub_code,
        "sub_msg": sub_msg or _MESSAGES.get(sub_code, sub_code),
        "refund_fee": "0.00",
        "send_back_fee": "0.00",
    }


# ---------------------------------------------------------------------- values
def fen_from_yuan(value: Any) -> int | None:
    """Alipay's Price (yuan, at most two decimals) in fen; None if it is not one."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        yuan = Decimal(str(value))
    except InvalidOperation:
        return None
    fen = yuan * 100
    if not yuan.is_finite() or fen != fen.to_integral_value() or not 0 < fen <= 10**10:
        return None
    return int(fen)


def yuan_text(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


def beijing_time(at: float, *, millis: bool = False) -> str:
    moment = dt.datetime.fromtimestamp(at, _BEIJING)
    text = moment.strftime(_TIME)
    return f"{text}.{moment.microsecond // 1000:03d}" if millis else text


def add_months(at: float, months: int) -> float:
    moment = dt.datetime.fromtimestamp(at, _BEIJING)
    year, month = divmod(moment.month - 1 + months, 12)
    day = moment.day
    while True:
        try:
            return moment.replace(year=moment.year + year, month=month + 1, day=day).timestamp()
        except ValueError:  # 31 March + 1 month: the end of April
            day -= 1


def out_trade_no(payment: SimPayment) -> str:
    return str(payment.extra.get("out_trade_no") or f"ord_{payment.payment_id[-12:]}")


def buyer_id(payment: SimPayment) -> str:
    digest = hashlib.sha256(payment.payment_id.encode()).hexdigest()
    return "2088" + f"{int(digest[:16], 16) % 10**12:012d}"
