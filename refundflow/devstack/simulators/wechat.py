"""WeChat Pay API v3 domestic refunds, simulated: ``POST {base}/v3/refund/domestic/refunds``,
``GET {base}/v3/refund/domestic/refunds/{out_refund_no}`` and refund result notifications.

What it reproduces: the ``WECHATPAY2-SHA256-RSA2048`` Authorization header checked against the
merchant certificate (mchid, serial, 5-minute timestamp window, signature over method, URL as
sent, timestamp, nonce and body; failures answer 401 SIGN_ERROR unsigned, as WeChat signs only
answers to authenticated requests), answers signed with the platform key
(``Wechatpay-Timestamp/Nonce/Signature/Serial``), the refund resource with its statuses
(PROCESSING, SUCCESS with ``success_time`` and ``user_received_account``, ABNORMAL, CLOSED), and
the rules: unknown transaction 404 RESOURCE_NOT_EXISTS, ``amount.total`` not the payment's
amount, refund above what is left, more than 50 refunds on one payment and payments older than
365 days all 400 INVALID_REQUEST with WeChat's messages, malformed fields 400 PARAM_ERROR, a
repeated ``out_refund_no`` answering the existing refund (or INVALID_REQUEST if the amounts
differ), scripted transient errors 500 SYSTEM_ERROR and scripted codes with their HTTP status.
Notifications go to the request's ``notify_url`` (else the configured one), as ``REFUND.SUCCESS``
/ ``REFUND.ABNORMAL`` / ``REFUND.CLOSED`` with the refund encrypted by AEAD_AES_256_GCM under the
APIv3 key and the whole body signed; each delivery is signed at its own time, and a redelivery
keeps the notification id.

What it does not: the certificate download API, service-provider (sub_mchid) mode, ``from``
multi-account funding, goods details, promotions, and WeChat's refund rate limits (scripted
``("permanent", "FREQUENCY_LIMITED")`` stands in). WeChat announces no PROCESSING state, so
the ledger's stale PROCESSING snapshots (``out_of_order``) are not sent.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from refundflow.devstack.simulators.core import (
    FAILED,
    SimLedger,
    SimPayment,
    SimRefund,
    WebhookDue,
    digits_ref,
)
from refundflow.devstack.simulators.keys import KeyPair, load_or_create, load_or_create_secret
from refundflow.devstack.simulators.wechat_wire import (
    HTTP_STATUS,
    MESSAGES,
    RULES,
    authorization_refusal,
    compact_json,
    malformed,
    new_apiv3_key,
    notification_body,
    refund_resource,
    refund_status,
    signature_headers,
)
from refundflow.gateways.wechat import WechatConfig

DEFAULT_MCHID = "1900000109"
REFUNDS = "/v3/refund/domestic/refunds"


class WechatSimulator:
    name = "wechat"

    def __init__(
        self,
        ledger: SimLedger,
        *,
        keys_dir: Path,
        notify_url: str = "",
        mchid: str = DEFAULT_MCHID,
        refund_window_days: int = 365,
        max_refunds: int = 50,
        clock_skew_s: float = 300.0,
    ) -> None:
        self.ledger = ledger
        self.mchid = mchid
        self.notify_url = notify_url
        self.refund_window_days = refund_window_days
        self.max_refunds = max_refunds
        self.clock_skew_s = clock_skew_s
        self.merchant_keys: KeyPair = load_or_create(keys_dir, "wechat_merchant", common_name=mchid)
        """The merchant API certificate's key pair (WeChat Pay holds the certificate)."""
        self.platform_keys: KeyPair = load_or_create(
            keys_dir, "wechat_platform", common_name="Tenpay.com Root CA"
        )
        self.apiv3_key = load_or_create_secret(keys_dir / "wechat_apiv3.key", new_apiv3_key)
        self.base_url = ""

    # ------------------------------------------------------------------ Simulator protocol
    def app(self) -> ASGIApp:
        return Starlette(
            routes=[
                Route(REFUNDS, self._create, methods=["POST"]),
                Route(REFUNDS + "/{out_refund_no}", self._get, methods=["GET"]),
            ]
        )

    def bind(self, base_url: str) -> None:
        self.base_url = base_url

    def webhook_request(self, due: WebhookDue) -> tuple[str, dict[str, str], bytes] | None:
        refund = due.refund
        if refund_status(refund) == "PROCESSING":
            return None  # WeChat announces outcomes only.
        if not str(refund.extra.get("notify_url") or self.notify_url):
            return None
        return self.event_request(refund, event_id=due.event_id)

    def event_request(
        self, refund: SimRefund, *, event_id: str, at: float | None = None
    ) -> tuple[str, dict[str, str], bytes]:
        """The notification WeChat Pay sends about ``refund``'s outcome, signed at ``at``
        (default: now)."""
        url = str(refund.extra.get("notify_url") or self.notify_url)
        payment = self.ledger.payment(refund.payment_id)
        body = notification_body(
            refund, payment, mchid=self.mchid, event_id=event_id, apiv3_key=self.apiv3_key
        )
        stamp = None if at is None else int(at)
        headers = self.signature_headers(body, timestamp=stamp) | {
            "Content-Type": "application/json"
        }
        return url, headers, body

    # ------------------------------------------------------------------ merchant set-up
    def adapter_config(self, base_url: str) -> WechatConfig:
        return WechatConfig(
            base_url=base_url,
            mchid=self.mchid,
            merchant_serial_no=self.merchant_keys.serial_no,
            merchant_private_key=SecretStr(self.merchant_keys.private_pem),
            apiv3_key=SecretStr(self.apiv3_key),
            platform_certificates=[self.platform_keys.certificate_pem],
            notify_url=self.notify_url,
        )

    def add_transaction(
        self,
        transaction_id: str,
        *,
        amount: int,
        paid_at: float | None = None,
        user_received_account: str = "支付用户零钱",
    ) -> SimPayment:
        """A paid order the merchant can refund (amount in fen)."""
        return self.ledger.add_payment(
            transaction_id,
            amount=amount,
            currency="CNY",
            paid_at=paid_at,
            extra={
                "out_trade_no": f"ord_{transaction_id[-12:]}",
                "user_received_account": user_received_account,
            },
        )

    def signature_headers(self, body: bytes, *, timestamp: int | None = None) -> dict[str, str]:
        """The platform's signature over ``body``, as WeChat Pay sends it."""
        stamp = str(int(self.ledger.clock()) if timestamp is None else timestamp)
        return signature_headers(self.platform_keys, body, stamp)

    # ------------------------------------------------------------------ API
    async def _create(self, request: Request) -> Response:
        body = await request.body()
        refused = self._authenticate(request, body)
        if refused is not None:
            return refused
        try:
            data = json.loads(body)
            if not isinstance(data, dict):
                raise ValueError("not an object")
        except ValueError:
            return self._error("PARAM_ERROR", "请求体不是合法的JSON对象")
        problem = malformed(data)
        if problem:
            return self._error("PARAM_ERROR", problem)
        answer, hold = await asyncio.to_thread(self._refund, data)
        if hold:
            await self.ledger.hold()
        return answer

    async def _get(self, request: Request) -> Response:
        refused = self._authenticate(request, b"")
        if refused is not None:
            return refused
        number = request.path_params["out_refund_no"]
        refund = await asyncio.to_thread(self.ledger.query, number)
        if refund is None:
            return self._error("RESOURCE_NOT_EXISTS", "退款单不存在")
        return self._respond(200, await asyncio.to_thread(self._resource, refund))

    def _refund(self, data: dict[str, Any]) -> tuple[Response, bool]:
        number = str(data["out_refund_no"])
        amount = data["amount"]
        refund_amount, total = int(amount["refund"]), int(amount["total"])
        currency = str(amount.get("currency", "CNY"))
        transaction_id = str(data.get("transaction_id") or "")
        payment = self.ledger.payment(transaction_id) if transaction_id else None
        if payment is None and transaction_id and self.ledger.auto_payments:
            # The dev stack pays nothing in: an unknown order is taken as paid for its total.
            payment = self.ledger.add_payment(transaction_id, amount=total, currency=currency)
        now = self.ledger.clock()

        def check(found: SimPayment | None, refunds: list[SimRefund]) -> str | None:
            if found is None:
                return "NO_ORDER"
            if found.currency != currency:
                return "CURRENCY"
            if total != found.amount:
                return "TOTAL"
            if now - found.paid_at > self.refund_window_days * 86_400:
                return "WINDOW"
            if len(refunds) >= self.max_refunds:
                return "COUNT"
            left = found.amount - sum(r.amount for r in refunds if r.status != FAILED)
            if left <= 0:
                return "FULL"
            if refund_amount > left:
                return "OVER"
            return None

        account = str((payment.extra if payment else {}).get("user_received_account", ""))
        outcome = self.ledger.create_refund(
            refund_no=number,
            payment_id=transaction_id or f"out_trade_no:{data.get('out_trade_no')}",
            amount=refund_amount,
            currency=currency,
            check=check,
            make_refs=lambda no: (
                "50" + digits_ref(no, "wechat-refund", 27),
                account or "支付用户零钱",
            ),
            extra={
                "notify_url": str(data.get("notify_url") or ""),
                "reason": str(data.get("reason") or ""),
                "total": total,
            },
        )
        if outcome.kind == "transient":
            return self._error("SYSTEM_ERROR", MESSAGES["SYSTEM_ERROR"]), False
        if outcome.kind == "refused":
            code, message = RULES.get(outcome.code, (outcome.code, ""))
            return self._error(code, message or MESSAGES.get(code, code)), False
        refund = outcome.refund
        assert refund is not None
        if outcome.kind == "existing" and (
            refund.payment_id != transaction_id or refund.amount != refund_amount
        ):
            message = "订单金额或退款金额与之前请求不一致，请核实后再试"
            return self._error("INVALID_REQUEST", message), False
        return self._respond(200, self._resource(refund)), outcome.hold

    def _resource(self, refund: SimRefund) -> dict[str, Any]:
        return refund_resource(refund, self.ledger.payment(refund.payment_id))

    # ------------------------------------------------------------------ signatures
    def _authenticate(self, request: Request, body: bytes) -> Response | None:
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        query = request.scope.get("query_string", b"")
        url = raw_path.decode("latin-1") + (f"?{query.decode('latin-1')}" if query else "")
        refusal = authorization_refusal(
            request.headers.get("authorization", ""),
            method=request.method,
            url=url,
            body=body,
            mchid=self.mchid,
            merchant_keys=self.merchant_keys,
            clock=self.ledger.clock,
            clock_skew_s=self.clock_skew_s,
        )
        if refusal is None:
            return None
        # WeChat signs only answers to authenticated requests.
        code, message = refusal
        return self._error(code, message, signed=False)

    def _error(self, code: str, message: str, *, signed: bool = True) -> Response:
        status = HTTP_STATUS.get(code, 400)
        payload = {"code": code, "message": message or MESSAGES.get(code, code)}
        if not signed:
            return Response(compact_json(payload), status, media_type="application/json")
        return self._respond(status, payload)

    def _respond(self, status: int, payload: dict[str, Any]) -> Response:
        body = compact_json(payload)
        headers = self.signature_headers(body) | {"Request-ID": uuid.uuid4().hex}
        return Response(body, status, headers=headers, media_type="application/json")


def dev_simulator(
    data_dir: Path, *, notify_url: str, settlement: str = "seconds:3"
) -> WechatSimulator:
    """The dev stack's WeChat Pay: any transaction_id is a paid order, keys kept on disk."""
    root = data_dir / "simulators" / "wechat"
    ledger = SimLedger(root / "ledger.db", settlement=settlement, auto_payments=True)
    return WechatSimulator(ledger, keys_dir=root / "keys", notify_url=notify_url)
