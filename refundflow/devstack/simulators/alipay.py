"""Alipay's open-platform gateway, simulated: ``POST {base}/gateway.do`` answering
``alipay.trade.refund`` and ``alipay.trade.fastpay.refund.query``, and the ``trade_status_sync``
notification Alipay posts once a refund's money has moved.

What it reproduces: the common parameters and their gateway errors (40001 missing, 40002
invalid app_id / method / sign_type / timestamp / signature, with the string Alipay would have
signed in ``sub_msg``), RSA2 request verification with the application's public key, answers
signed with Alipay's key over the exact response-node text, and the refund rules: unknown trade
``ACQ.TRADE_NOT_EXIST``, closed trade ``ACQ.TRADE_HAS_CLOSE``, refund window over (12 months by
default) ``ACQ.TRADE_HAS_FINISHED``, no ``out_request_no`` and not the full amount
``ACQ.REFUND_AMT_NOT_EQUAL_TOTAL``, more than what is left ``ACQ.REASON_TRADE_REFUND_FEE_ERR``, a
repeated ``out_request_no`` answering the first refund with ``fund_change=N`` (or
``ACQ.DISCORDANT_REPEAT_REQUEST`` if the amount differs), ``ACQ.SYSTEM_ERROR`` for scripted
transient errors. Settlement, holds and notification timing come from the ledger.

What it does not: certificate-mode signing (app_cert_sn), GBK charsets, RSA (SHA1) signatures,
look-ups by ``out_trade_no`` alone (trades are keyed by ``trade_no``), royalty and
deposit-back details. A failed refund (the ledger's ``fail``/``fail_later``) is not shown by the
query, as Alipay shows only refunds that went through; resending its number returns the failure.

The signing code is written from the provider's side on purpose, separately from the adapter's,
so that a mistake in one is caught by the other.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import hashlib
import json
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from refundflow.devstack.simulators.core import (
    FAILED,
    SUCCESS,
    SimLedger,
    SimPayment,
    SimRefund,
    WebhookDue,
    digits_ref,
)
from refundflow.devstack.simulators.keys import KeyPair, load_or_create
from refundflow.gateways.alipay import AlipayConfig

DEFAULT_APP_ID = "2021000000000001"
SELLER_ID = "2088101000000001"
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


class AlipaySimulator:
    name = "alipay"

    def __init__(
        self,
        ledger: SimLedger,
        *,
        keys_dir: Path,
        notify_url: str = "",
        app_id: str = DEFAULT_APP_ID,
        refund_window_months: int = 12,
    ) -> None:
        self.ledger = ledger
        self.app_id = app_id
        self.notify_url = notify_url
        self.refund_window_months = refund_window_months
        self.app_keys: KeyPair = load_or_create(keys_dir, "alipay_app", common_name=app_id)
        """The merchant application's key pair (Alipay holds only the public half)."""
        self.alipay_keys: KeyPair = load_or_create(
            keys_dir, "alipay_platform", common_name="alipay"
        )
        self.base_url = ""

    # ------------------------------------------------------------------ Simulator protocol
    def app(self) -> ASGIApp:
        return Starlette(routes=[Route("/gateway.do", self._gateway, methods=["GET", "POST"])])

    def bind(self, base_url: str) -> None:
        self.base_url = base_url

    def webhook_request(self, due: WebhookDue) -> tuple[str, dict[str, str], bytes] | None:
        refund = due.refund
        if refund.status != SUCCESS:
            return None  # Alipay notifies a refund only when its money has moved.
        payment = self.ledger.payment(refund.payment_id)
        if payment is None or not str(payment.extra.get("notify_url") or self.notify_url):
            return None
        return self.event_request(refund, event_id=due.event_id)

    def event_request(
        self, refund: SimRefund, *, event_id: str, at: float | None = None
    ) -> tuple[str, dict[str, str], bytes]:
        """The ``trade_status_sync`` notification of ``refund``'s trade once the refund's money
        moved, sent at ``at`` (default: now)."""
        payment = self.ledger.payment(refund.payment_id)
        if payment is None:
            raise KeyError(f"no trade {refund.payment_id!r}")
        url = str(payment.extra.get("notify_url") or self.notify_url)
        refunded = sum(
            r.amount for r in self.ledger.refunds_of(payment.payment_id) if r.status == SUCCESS
        )
        closed = refunded >= payment.amount
        settled = refund.settled_at if refund.settled_at is not None else self.ledger.clock()
        params = {
            "notify_time": _beijing(self.ledger.clock() if at is None else at),
            "notify_type": "trade_status_sync",
            "notify_id": event_id,
            "app_id": self.app_id,
            "charset": "utf-8",
            "version": "1.0",
            "sign_type": "RSA2",
            "trade_no": payment.payment_id,
            "out_trade_no": _out_trade_no(payment),
            "out_biz_no": refund.refund_no,
            "buyer_id": _buyer_id(payment),
            "seller_id": SELLER_ID,
            "trade_status": "TRADE_CLOSED" if closed else "TRADE_SUCCESS",
            "total_amount": _yuan(payment.amount),
            "receipt_amount": _yuan(payment.amount),
            "buyer_pay_amount": _yuan(payment.amount),
            "refund_fee": _yuan(refunded),
            "gmt_create": _beijing(payment.paid_at),
            "gmt_payment": _beijing(payment.paid_at),
            "gmt_refund": _beijing(settled, millis=True),
            "gmt_close": _beijing(settled) if closed else "",
        }
        params = {k: v for k, v in params.items() if v}
        # Notifications leave sign_type out of the signed string, unlike requests.
        signed = {k: v for k, v in params.items() if k != "sign_type"}
        params["sign"] = self._sign(_content(signed))
        headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
        return url, headers, urlencode(params).encode()

    # ------------------------------------------------------------------ merchant set-up
    def adapter_config(self, base_url: str) -> AlipayConfig:
        return AlipayConfig(
            gateway_url=f"{base_url}/gateway.do",
            app_id=self.app_id,
            app_private_key=SecretStr(self.app_keys.private_pem),
            alipay_public_key=self.alipay_keys.bare_public_key(),
        )

    def add_trade(
        self,
        trade_no: str,
        *,
        amount: int,
        paid_at: float | None = None,
        notify_url: str = "",
        closed: bool = False,
    ) -> SimPayment:
        """A paid trade the merchant can refund (amount in fen)."""
        extra: dict[str, Any] = {"out_trade_no": f"ord_{trade_no[-12:]}"}
        if notify_url:
            extra["notify_url"] = notify_url
        if closed:
            extra["trade_status"] = "TRADE_CLOSED"
        return self.ledger.add_payment(
            trade_no, amount=amount, currency="CNY", paid_at=paid_at, extra=extra
        )

    # ------------------------------------------------------------------ gateway
    async def _gateway(self, request: Request) -> Response:
        params = dict(request.query_params)
        if request.method == "POST":
            body = await request.body()
            if "multipart/" not in request.headers.get("content-type", ""):
                try:
                    params.update(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
                except UnicodeDecodeError:
                    return self._answer(
                        "error_response", _gateway_error("40002", "isv.invalid-charset")
                    )
        method = params.get("method", "")
        node = f"{method.replace('.', '_')}_response" if method in (REFUND, REFUND_QUERY) else ""
        refused = self._check_common(params)
        if refused is not None:
            return self._answer(node or "error_response", refused)
        try:
            biz = json.loads(params.get("biz_content", ""))
            if not isinstance(biz, dict):
                raise ValueError("biz_content is not an object")
        except ValueError:
            return self._answer(node, _business("ACQ.INVALID_PARAMETER", "biz_content 格式错误"))
        if method == REFUND:
            answer, hold = await asyncio.to_thread(self._refund, biz)
            if hold:
                await self.ledger.hold()
            return self._answer(node, answer)
        return self._answer(node, await asyncio.to_thread(self._refund_query, biz))

    def _check_common(self, params: dict[str, str]) -> dict[str, Any] | None:
        for field, sub_code in _REQUIRED:
            if not params.get(field):
                return _gateway_error("40001", sub_code)
        if params["app_id"] != self.app_id:
            return _gateway_error("40002", "isv.invalid-app-id")
        if params["method"] not in (REFUND, REFUND_QUERY):
            return _gateway_error("40002", "isv.invalid-method")
        if params["sign_type"] != "RSA2":
            return _gateway_error("40002", "isv.invalid-signature-type")
        if params.get("charset", "utf-8").lower() != "utf-8":
            return _gateway_error("40002", "isv.invalid-charset")
        if params.get("format", "JSON").upper() != "JSON":
            return _gateway_error("40002", "isv.invalid-format")
        try:
            dt.datetime.strptime(params["timestamp"], _TIME)
        except ValueError:
            return _gateway_error("40002", "isv.invalid-timestamp")
        content = _content({k: v for k, v in params.items() if k != "sign"})
        if not self._verify(content, params["sign"]):
            return _gateway_error(
                "40002",
                "isv.invalid-signature",
                f"验签出错，建议检查签名字符串或签名私钥与应用公钥是否匹配，网关生成的验签字符串为：{content}",
            )
        return None

    def _refund(self, biz: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        trade_no = str(biz.get("trade_no") or "")
        amount = _fen(biz.get("refund_amount"))
        if not trade_no:
            return _business("ACQ.TRADE_NOT_EXIST"), False
        if amount is None:
            return _business("ACQ.INVALID_PARAMETER", "refund_amount 参数无效"), False
        request_no = str(biz.get("out_request_no") or "")
        full_only = not request_no
        if full_only:
            # Without a request number Alipay takes the whole trade as the refund.
            payment = self.ledger.payment(trade_no)
            request_no = _out_trade_no(payment) if payment else trade_no
        now = self.ledger.clock()

        def check(payment: SimPayment | None, refunds: list[SimRefund]) -> str | None:
            if payment is None:
                return "ACQ.TRADE_NOT_EXIST"
            if payment.extra.get("trade_status") == "TRADE_CLOSED":
                return "ACQ.TRADE_HAS_CLOSE"
            if now > _add_months(payment.paid_at, self.refund_window_months):
                return "ACQ.TRADE_HAS_FINISHED"
            if full_only and amount != payment.amount:
                return "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL"
            refunded = sum(r.amount for r in refunds if r.status != FAILED)
            if refunded + amount > payment.amount:
                return "ACQ.REASON_TRADE_REFUND_FEE_ERR"
            return None

        outcome = self.ledger.create_refund(
            refund_no=request_no,
            payment_id=trade_no,
            amount=amount,
            currency="CNY",
            check=check,
            make_refs=lambda no: (f"{trade_no}-{digits_ref(no, 'alipay', 10)}", ""),
            extra={"refund_reason": str(biz.get("refund_reason") or "")},
        )
        if outcome.kind == "transient":
            return _business("ACQ.SYSTEM_ERROR"), False
        if outcome.kind == "refused":
            return _business(outcome.code), False
        refund = outcome.refund
        assert refund is not None
        if outcome.kind == "existing":
            if refund.payment_id != trade_no or refund.amount != amount:
                return _business("ACQ.DISCORDANT_REPEAT_REQUEST"), False
            if refund.status == FAILED:
                return _business(refund.code or "ACQ.TRADE_NOT_ALLOW_REFUND"), False
            # A repeat changes no funds, and Alipay says so even when the first one did.
            return self._refund_node(refund, fund_change=False), False
        # A "seconds:0" rule means Alipay moved the money while answering.
        swept = {r.refund_no: r for r in self.ledger.sweep()}
        refund = swept.get(refund.refund_no, refund)
        return self._refund_node(refund, fund_change=refund.status == SUCCESS), outcome.hold

    def _refund_node(self, refund: SimRefund, *, fund_change: bool) -> dict[str, Any]:
        payment = self.ledger.payment(refund.payment_id)
        assert payment is not None
        refunded = sum(
            r.amount for r in self.ledger.refunds_of(payment.payment_id) if r.status != FAILED
        )
        paid_at = refund.settled_at if refund.settled_at is not None else refund.created_at
        return {
            "code": "10000",
            "msg": "Success",
            "trade_no": payment.payment_id,
            "out_trade_no": _out_trade_no(payment),
            "buyer_logon_id": "159****5620",
            "fund_change": "Y" if fund_change else "N",
            "refund_fee": _yuan(refunded),
            "gmt_refund_pay": _beijing(paid_at),
            "buyer_user_id": _buyer_id(payment),
            "send_back_fee": _yuan(refund.amount),
        }

    def _refund_query(self, biz: dict[str, Any]) -> dict[str, Any]:
        trade_no = str(biz.get("trade_no") or "")
        request_no = str(biz.get("out_request_no") or "")
        if not trade_no or not request_no:
            return _business("ACQ.INVALID_PARAMETER", "trade_no 与 out_request_no 必填")
        payment = self.ledger.payment(trade_no)
        if payment is None:
            return _business("ACQ.TRADE_NOT_EXIST")
        node: dict[str, Any] = {
            "code": "10000",
            "msg": "Success",
            "trade_no": trade_no,
            "out_trade_no": _out_trade_no(payment),
        }
        refund = self.ledger.query(request_no)
        if refund is None or refund.payment_id != trade_no or refund.status == FAILED:
            return node  # Alipay's "nothing refunded under this number".
        options = biz.get("query_options") or []
        node |= {
            "out_request_no": request_no,
            "total_amount": _yuan(payment.amount),
            "refund_amount": _yuan(refund.amount),
        }
        if refund.extra.get("refund_reason"):
            node["refund_reason"] = refund.extra["refund_reason"]
        if refund.status == SUCCESS:
            node["refund_status"] = "REFUND_SUCCESS"
            if "gmt_refund_pay" in options and refund.settled_at is not None:
                node["gmt_refund_pay"] = _beijing(refund.settled_at)
            if "refund_detail_item_list" in options:
                node["refund_detail_item_list"] = [
                    {"fund_channel": "ALIPAYACCOUNT", "amount": _yuan(refund.amount)}
                ]
                node["send_back_fee"] = _yuan(refund.amount)
        return node

    # ------------------------------------------------------------------ signatures
    def _answer(self, node_name: str, node: dict[str, Any]) -> Response:
        raw = json.dumps(node, ensure_ascii=False, separators=(",", ":"))
        text = f'{{"{node_name}":{raw},"sign":"{self._sign(raw)}"}}'
        return Response(text.encode("utf-8"), media_type="application/json;charset=utf-8")

    def _sign(self, content: str) -> str:
        key = self.alipay_keys.private_key
        return base64.b64encode(
            key.sign(content.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
        ).decode()

    def _verify(self, content: str, signature: str) -> bool:
        try:
            self.app_keys.public_key.verify(
                base64.b64decode(signature, validate=True),
                content.encode("utf-8"),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except (InvalidSignature, binascii.Error, ValueError):
            return False
        return True


def dev_simulator(
    data_dir: Path, *, notify_url: str, settlement: str = "seconds:3"
) -> AlipaySimulator:
    """The dev stack's Alipay: any trade_no is taken as a paid trade, keys are kept on disk."""
    root = data_dir / "simulators" / "alipay"
    ledger = SimLedger(root / "ledger.db", settlement=settlement, auto_payments=True)
    return AlipaySimulator(ledger, keys_dir=root / "keys", notify_url=notify_url)


def _content(params: dict[str, str]) -> str:
    return "&".join(f"{k}={params[k]}" for k in sorted(params) if params[k] != "")


def _gateway_error(code: str, sub_code: str, sub_msg: str = "") -> dict[str, Any]:
    msg = "Missing Required Arguments" if code == "40001" else "Invalid Arguments"
    return {"code": code, "msg": msg, "sub_code": sub_code, "sub_msg": sub_msg or sub_code}


def _business(sub_code: str, sub_msg: str = "") -> dict[str, Any]:
    return {
        "code": "40004",
        "msg": "Business Failed",
        "sub_code": sub_code,
        "sub_msg": sub_msg or _MESSAGES.get(sub_code, sub_code),
        "refund_fee": "0.00",
        "send_back_fee": "0.00",
    }


def _fen(value: Any) -> int | None:
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


def _yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


def _beijing(at: float, *, millis: bool = False) -> str:
    moment = dt.datetime.fromtimestamp(at, _BEIJING)
    text = moment.strftime(_TIME)
    return f"{text}.{moment.microsecond // 1000:03d}" if millis else text


def _add_months(at: float, months: int) -> float:
    moment = dt.datetime.fromtimestamp(at, _BEIJING)
    year, month = divmod(moment.month - 1 + months, 12)
    day = moment.day
    while True:
        try:
            return moment.replace(year=moment.year + year, month=month + 1, day=day).timestamp()
        except ValueError:  # 31 March + 1 month: the end of April
            day -= 1


def _out_trade_no(payment: SimPayment) -> str:
    return str(payment.extra.get("out_trade_no") or f"ord_{payment.payment_id[-12:]}")


def _buyer_id(payment: SimPayment) -> str:
    digest = hashlib.sha256(payment.payment_id.encode()).hexdigest()
    return "2088" + f"{int(digest[:16], 16) % 10**12:012d}"
