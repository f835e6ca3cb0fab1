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
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from refundflow.devstack.simulators.alipay_wire import (
    REFUND,
    REFUND_QUERY,
    add_months,
    beijing_time,
    business_error,
    buyer_id,
    common_params_refusal,
    fen_from_yuan,
    gateway_error,
    out_trade_no,
    sign_content,
    signed_answer,
    yuan_text,
)
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
            "notify_time": beijing_time(self.ledger.clock() if at is None else at),
            "notify_type": "trade_status_sync",
            "notify_id": event_id,
            "app_id": self.app_id,
            "charset": "utf-8",
            "version": "1.0",
            "sign_type": "RSA2",
            "trade_no": payment.payment_id,
            "out_trade_no": out_trade_no(payment),
            "out_biz_no": refund.refund_no,
            "buyer_id": buyer_id(payment),
            "seller_id": SELLER_ID,
            "trade_status": "TRADE_CLOSED" if closed else "TRADE_SUCCESS",
            "total_amount": yuan_text(payment.amount),
            "receipt_amount": yuan_text(payment.amount),
            "buyer_pay_amount": yuan_text(payment.amount),
            "refund_fee": yuan_text(refunded),
            "gmt_create": beijing_time(payment.paid_at),
            "gmt_payment": beijing_time(payment.paid_at),
            "gmt_refund": beijing_time(settled, millis=True),
            "gmt_close": beijing_time(settled) if closed else "",
        }
        params = {k: v for k, v in params.items() if v}
        # Notifications leave sign_type out of the signed string, unlike requests.
        signed = {k: v for k, v in params.items() if k != "sign_type"}
        params["sign"] = self.alipay_keys.sign(sign_content(signed).encode("utf-8"))
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
                        "error_response", gateway_error("40002", "isv.invalid-charset")
                    )
        method = params.get("method", "")
        node = f"{method.replace('.', '_')}_response" if method in (REFUND, REFUND_QUERY) else ""
        refused = common_params_refusal(params, app_id=self.app_id, app_keys=self.app_keys)
        if refused is not None:
            return self._answer(node or "error_response", refused)
        try:
            biz = json.loads(params.get("biz_content", ""))
            if not isinstance(biz, dict):
                raise ValueError("biz_content is not an object")
        except ValueError:
            return self._answer(
                node, business_error("ACQ.INVALID_PARAMETER", "biz_content 格式错误")
            )
        if method == REFUND:
            answer, hold = await asyncio.to_thread(self._refund, biz)
            if hold:
                await self.ledger.hold()
            return self._answer(node, answer)
        return self._answer(node, await asyncio.to_thread(self._refund_query, biz))

    def _refund(self, biz: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        trade_no = str(biz.get("trade_no") or "")
        amount = fen_from_yuan(biz.get("refund_amount"))
        if not trade_no:
            return business_error("ACQ.TRADE_NOT_EXIST"), False
        if amount is None:
            return business_error("ACQ.INVALID_PARAMETER", "refund_amount 参数无效"), False
        request_no = str(biz.get("out_request_no") or "")
        full_only = not request_no
        if full_only:
            # Without a request number Alipay takes the whole trade as the refund.
            payment = self.ledger.payment(trade_no)
            request_no = out_trade_no(payment) if payment else trade_no
        now = self.ledger.clock()

        def check(payment: SimPayment | None, refunds: list[SimRefund]) -> str | None:
            if payment is None:
                return "ACQ.TRADE_NOT_EXIST"
            if payment.extra.get("trade_status") == "TRADE_CLOSED":
                return "ACQ.TRADE_HAS_CLOSE"
            if now > add_months(payment.paid_at, self.refund_window_months):
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
            return business_error("ACQ.SYSTEM_ERROR"), False
        if outcome.kind == "refused":
            return business_error(outcome.code), False
        refund = outcome.refund
        assert refund is not None
        if outcome.kind == "existing":
            if refund.payment_id != trade_no or refund.amount != amount:
                return business_error("ACQ.DISCORDANT_REPEAT_REQUEST"), False
            if refund.status == FAILED:
                return business_error(refund.code or "ACQ.TRADE_NOT_ALLOW_REFUND"), False
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
            "out_trade_no": out_trade_no(payment),
            "buyer_logon_id": "159****5620",
            "fund_change": "Y" if fund_change else "N",
            "refund_fee": yuan_text(refunded),
            "gmt_refund_pay": beijing_time(paid_at),
            "buyer_user_id": buyer_id(payment),
            "send_back_fee": yuan_text(refund.amount),
        }

    def _refund_query(self, biz: dict[str, Any]) -> dict[str, Any]:
        trade_no = str(biz.get("trade_no") or "")
        request_no = str(biz.get("out_request_no") or "")
        if not trade_no or not request_no:
            return business_error("ACQ.INVALID_PARAMETER", "trade_no 与 out_request_no 必填")
        payment = self.ledger.payment(trade_no)
        if payment is None:
            return business_error("ACQ.TRADE_NOT_EXIST")
        node: dict[str, Any] = {
            "code": "10000",
            "msg": "Success",
            "trade_no": trade_no,
            "out_trade_no": out_trade_no(payment),
        }
        refund = self.ledger.query(request_no)
        if refund is None or refund.payment_id != trade_no or refund.status == FAILED:
            return node  # Alipay's "nothing refunded under this number".
        options = biz.get("query_options") or []
        node |= {
            "out_request_no": request_no,
            "total_amount": yuan_text(payment.amount),
            "refund_amount": yuan_text(refund.amount),
        }
        if refund.extra.get("refund_reason"):
            node["refund_reason"] = refund.extra["refund_reason"]
        if refund.status == SUCCESS:
            node["refund_status"] = "REFUND_SUCCESS"
            if "gmt_refund_pay" in options and refund.settled_at is not None:
                node["gmt_refund_pay"] = beijing_time(refund.settled_at)
            if "refund_detail_item_list" in options:
                node["refund_detail_item_list"] = [
                    {"fund_channel": "ALIPAYACCOUNT", "amount": yuan_text(refund.amount)}
                ]
                node["send_back_fee"] = yuan_text(refund.amount)
        return node

    # ------------------------------------------------------------------ answers
    def _answer(self, node_name: str, node: dict[str, Any]) -> Response:
        body = signed_answer(node_name, node, self.alipay_keys)
        return Response(body, media_type="application/json;charset=utf-8")


def dev_simulator(
    data_dir: Path, *, notify_url: str, settlement: str = "seconds:3"
) -> AlipaySimulator:
    """The dev stack's Alipay: any trade_no is taken as a paid trade, keys are kept on disk."""
    root = data_dir / "simulators" / "alipay"
    ledger = SimLedger(root / "ledger.db", settlement=settlement, auto_payments=True)
    return AlipaySimulator(ledger, keys_dir=root / "keys", notify_url=notify_url)
