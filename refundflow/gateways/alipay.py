"""Alipay open-platform refunds: ``alipay.trade.refund`` and ``alipay.trade.fastpay.refund.query``.

The wire format is written here with httpx and ``cryptography`` instead of alipay-sdk-python:
the official SDK is synchronous (urllib under a blocking client), ships without type hints and
brings its own RSA stack, while the protocol we need is two methods, one signing rule and one
verification rule. Owning them keeps the adapter async, typed and testable against the local
simulator with real signatures.

Protocol, as Alipay documents it:
- Requests carry the common parameters (app_id, method, format, charset, sign_type, timestamp in
  Beijing time, version, biz_content as JSON) and ``sign``: RSA2 (SHA256withRSA, base64) over
  the parameters sorted by name as ``k=v&...``, leaving out ``sign`` and empty values.
- Answers are ``{"<method>_response": {...}, "sign": "..."}``; the signature covers the exact
  text of the response node, so it is checked against the raw bytes, never a re-serialisation.
- Asynchronous notifications are form posts signed the same way, except that ``sign_type`` is
  left out of the signed string as well.

Refunds are idempotent on ``out_request_no`` (our payout key). ``code`` 10000 only means the
request was accepted: ``fund_change=Y`` says money moved, ``N`` says ask the query API.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pydantic import BaseModel, ConfigDict, SecretStr

from refundflow.domain.states import PayoutEvent, PayoutStatus
from refundflow.gateways.base import (
    WEBHOOK_TOLERANCE_S,
    GatewayError,
    GatewayTimeout,
    PayoutInstruction,
    PayoutResult,
    check_sent_time,
)

GATEWAY_URL = "https://openapi.alipay.com/gateway.do"
REFUND = "alipay.trade.refund"
REFUND_QUERY = "alipay.trade.fastpay.refund.query"
BEIJING = dt.timezone(dt.timedelta(hours=8), "Asia/Shanghai")
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

_SUCCESS = "10000"
_UNAVAILABLE = "20000"
_BUSINESS_FAILED = "40004"
# Business codes after which the same request may succeed later: nothing was refunded.
_RETRYABLE = frozenset({"ACQ.SYSTEM_ERROR", "ACQ.SELLER_BALANCE_NOT_ENOUGH"})
_DECODER = json.JSONDecoder()


class AlipayConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    gateway_url: str = GATEWAY_URL
    app_id: str
    app_private_key: SecretStr
    """The application's RSA private key: PEM, or the bare base64 that Alipay's tool prints."""
    alipay_public_key: str
    """Alipay's RSA public key for this application (PEM or bare base64)."""
    timeout_s: float = 10.0
    webhook_tolerance_s: float = WEBHOOK_TOLERANCE_S
    """Oldest (or newest) notification accepted, by its signed ``notify_time`` (replays)."""


class AlipayBusy(GatewayError):
    """Alipay answered, and nothing was refunded: the same request may be sent again."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"alipay {code}: {message}")
        self.code = code


class AlipaySignatureError(GatewayTimeout):
    """An answer without Alipay's valid signature: it proves nothing about the refund."""


class AlipayGateway:
    name = "alipay"

    def __init__(
        self,
        config: AlipayConfig,
        *,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self._private_key = load_private_key(config.app_private_key.get_secret_value())
        self._alipay_key = load_public_key(config.alipay_public_key)
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(config.timeout_s), transport=transport
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    # ------------------------------------------------------------------ Gateway protocol
    async def refund(self, instruction: PayoutInstruction) -> PayoutResult:
        refused = _unfit(instruction)
        if refused is not None:
            return refused
        biz = {
            "trade_no": instruction.original_txn_id,
            "refund_amount": yuan(instruction.amount),
            "out_request_no": instruction.payout_key,
            "refund_reason": instruction.reason[:256],
        }
        node = await self._call(REFUND, biz, query=False)
        code = str(node.get("code", ""))
        if code == _SUCCESS:
            changed = node.get("fund_change") == "Y"
            return PayoutResult(
                status=PayoutStatus.SETTLED if changed else PayoutStatus.ACCEPTED,
                provider_ref=str(node.get("trade_no", instruction.original_txn_id)),
                settled_at=_beijing_time(node.get("gmt_refund_pay")) if changed else None,
            )
        sub_code, sub_msg = _sub(node)
        if code == _BUSINESS_FAILED and sub_code not in _RETRYABLE:
            return PayoutResult(
                status=PayoutStatus.FAILED_PERMANENT, code=sub_code, message=sub_msg
            )
        raise AlipayBusy(sub_code or code, sub_msg or str(node.get("msg", "")))

    async def query(self, instruction: PayoutInstruction) -> PayoutResult:
        if not instruction.original_txn_id:
            raise GatewayError("alipay: a refund is looked up by trade_no, and none was given")
        biz = {
            "trade_no": instruction.original_txn_id,
            "out_request_no": instruction.payout_key,
            "query_options": ["gmt_refund_pay", "refund_detail_item_list"],
        }
        node = await self._call(REFUND_QUERY, biz, query=True)
        code = str(node.get("code", ""))
        sub_code, sub_msg = _sub(node)
        if code == _BUSINESS_FAILED and sub_code == "ACQ.TRADE_NOT_EXIST":
            return PayoutResult(status=PayoutStatus.NOT_FOUND, code=sub_code, message=sub_msg)
        if code != _SUCCESS:
            if code == _BUSINESS_FAILED and sub_code not in _RETRYABLE:
                return PayoutResult(status=PayoutStatus.UNKNOWN, code=sub_code, message=sub_msg)
            raise AlipayBusy(sub_code or code, sub_msg or str(node.get("msg", "")))
        trade_no = str(node.get("trade_no", instruction.original_txn_id))
        if not node.get("out_request_no") and not node.get("refund_amount"):
            # Alipay's word for "no refund went through under this number": resending the
            # same out_request_no is the documented, idempotent next step.
            return PayoutResult(status=PayoutStatus.NOT_FOUND, provider_ref=trade_no)
        if node.get("out_request_no", instruction.payout_key) != instruction.payout_key:
            raise AlipaySignatureError("alipay: the query answered for another refund number")
        if node.get("refund_status") == "REFUND_SUCCESS":
            return PayoutResult(
                status=PayoutStatus.SETTLED,
                provider_ref=trade_no,
                code="REFUND_SUCCESS",
                settled_at=_beijing_time(node.get("gmt_refund_pay")),
            )
        return PayoutResult(
            status=PayoutStatus.ACCEPTED,
            provider_ref=trade_no,
            message="refund received, not successful yet",
        )

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> PayoutEvent:
        """A ``trade_status_sync`` notification that carries a refund (``out_biz_no``)."""
        try:
            params = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError as exc:
            raise ValueError("alipay notification is not utf-8 form data") from exc
        signature = params.pop("sign", "")
        sign_type = params.pop("sign_type", "")
        if not signature or sign_type != "RSA2":
            raise ValueError("alipay notification without an RSA2 signature")
        if not verify(self._alipay_key, sign_content(params), signature):
            raise ValueError("alipay notification signature does not verify")
        if params.get("app_id") != self.config.app_id:
            raise ValueError("alipay notification for another application")
        sent = _beijing_time(params.get("notify_time"))
        if sent is None:
            raise ValueError("alipay notification without a readable notify_time")
        check_sent_time("alipay", sent.timestamp(), self.clock(), self.config.webhook_tolerance_s)
        key, notify_id = params.get("out_biz_no", ""), params.get("notify_id", "")
        if not key or not params.get("refund_fee"):
            raise ValueError("alipay notification is not about a refund")
        if not notify_id:
            raise ValueError("alipay notification without notify_id")
        # Alipay notifies a refund only once its money has moved.
        return PayoutEvent(
            payout_key=key,
            status=PayoutStatus.SETTLED,
            provider_ref=params.get("trade_no", ""),
            event_id=notify_id,
        )

    # ------------------------------------------------------------------ wire
    async def _call(self, method: str, biz: Mapping[str, Any], *, query: bool) -> dict[str, Any]:
        params = {
            "app_id": self.config.app_id,
            "method": method,
            "format": "JSON",
            "charset": "utf-8",
            "sign_type": "RSA2",
            "timestamp": dt.datetime.fromtimestamp(self.clock(), BEIJING).strftime(TIME_FORMAT),
            "version": "1.0",
            "biz_content": json.dumps(biz, ensure_ascii=False, separators=(",", ":")),
        }
        params["sign"] = sign(self._private_key, sign_content(params))
        # As the SDKs do: common parameters in the query string, biz_content in the form body.
        common = {k: v for k, v in params.items() if k != "biz_content"}
        try:
            response = await self._client.post(
                self.config.gateway_url,
                params=common,
                data={"biz_content": params["biz_content"]},
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise GatewayError(f"alipay unreachable: {exc!r}") from exc
        except httpx.TransportError as exc:
            if query:
                raise GatewayError(f"alipay query failed: {exc!r}") from exc
            raise GatewayTimeout(f"alipay {method}: no answer ({exc!r})") from exc
        if response.status_code != 200:
            message = f"alipay {method}: HTTP {response.status_code}"
            raise GatewayError(message) if query else GatewayTimeout(message)
        return self._open(method, response.content)

    def _open(self, method: str, content: bytes) -> dict[str, Any]:
        """The response node of an answer, verified against Alipay's signature.

        Like the official SDKs, an unsigned gateway error (Alipay cannot always sign an answer
        to a request it could not attribute) is read, but only as "try again later": an
        unsigned 10000 or 40004, which would claim a refund's outcome, is refused."""
        try:
            text = content.decode("utf-8")
            spans = top_level_spans(text)
            envelope = json.loads(text)
        except (UnicodeDecodeError, ValueError) as exc:
            raise AlipaySignatureError(f"alipay {method}: unreadable answer") from exc
        node_name = method.replace(".", "_") + "_response"
        if node_name not in spans:
            node_name = "error_response"
        if node_name not in spans:
            raise AlipaySignatureError(f"alipay {method}: no response node in the answer")
        start, end = spans[node_name]
        raw = text[start:end]
        node = json.loads(raw)
        if not isinstance(node, dict):
            raise AlipaySignatureError(f"alipay {method}: response node is not an object")
        signature = envelope.get("sign")
        if isinstance(signature, str) and signature:
            if not verify(self._alipay_key, raw, signature):
                raise AlipaySignatureError(f"alipay {method}: answer signature does not verify")
        elif str(node.get("code", "")) in (_SUCCESS, _BUSINESS_FAILED):
            raise AlipaySignatureError(f"alipay {method}: answer is not signed")
        return node


# ---------------------------------------------------------------------- helpers


def yuan(amount: int) -> str:
    """Minor units (fen) to Alipay's ``Price`` text, exactly: 1234 -> "12.34"."""
    if amount < 0:
        raise ValueError("a refund amount is positive")
    return f"{amount // 100}.{amount % 100:02d}"


def sign_content(params: Mapping[str, str]) -> str:
    """Alipay's string to sign for a request: sorted ``k=v`` pairs without sign and empties.
    (Callers verifying a notification drop ``sign_type`` before calling.)"""
    return "&".join(f"{k}={params[k]}" for k in sorted(params) if k != "sign" and params[k] != "")


def sign(key: rsa.RSAPrivateKey, content: str) -> str:
    raw = key.sign(content.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(raw).decode()


def verify(key: rsa.RSAPublicKey, content: str, signature: str) -> bool:
    try:
        raw = base64.b64decode(signature, validate=True)
        key.verify(raw, content.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def load_private_key(text: str) -> rsa.RSAPrivateKey:
    data = text.strip().encode()
    if b"-----BEGIN" in data:
        key = serialization.load_pem_private_key(data, password=None)
    else:
        key = serialization.load_der_private_key(base64.b64decode(data), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the Alipay application key must be an RSA private key")
    return key


def load_public_key(text: str) -> rsa.RSAPublicKey:
    data = text.strip().encode()
    if b"-----BEGIN" in data:
        key = serialization.load_pem_public_key(data)
    else:
        key = serialization.load_der_public_key(base64.b64decode(data))
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("the Alipay public key must be an RSA public key")
    return key


def top_level_spans(text: str) -> dict[str, tuple[int, int]]:
    """Where each top-level member's value sits in a JSON object's text, byte-for-byte as sent."""
    pos = _skip(text, 0)
    if text[pos : pos + 1] != "{":
        raise ValueError("not a JSON object")
    spans: dict[str, tuple[int, int]] = {}
    pos += 1
    while True:
        pos = _skip(text, pos)
        if text[pos : pos + 1] == "}":
            return spans
        key, pos = _DECODER.raw_decode(text, pos)
        pos = _skip(text, pos)
        if text[pos : pos + 1] != ":" or not isinstance(key, str):
            raise ValueError("malformed JSON object")
        start = _skip(text, pos + 1)
        _, end = _DECODER.raw_decode(text, start)
        spans[key] = (start, end)
        pos = _skip(text, end)
        if text[pos : pos + 1] == ",":
            pos += 1
        elif text[pos : pos + 1] != "}":
            raise ValueError("malformed JSON object")


def _skip(text: str, pos: int) -> int:
    """The first position at or after ``pos`` that is not JSON whitespace."""
    while pos < len(text) and text[pos] in " \t\n\r":
        pos += 1
    return pos


def _sub(node: Mapping[str, Any]) -> tuple[str, str]:
    return str(node.get("sub_code", "")), str(node.get("sub_msg", ""))


def _unfit(instruction: PayoutInstruction) -> PayoutResult | None:
    """Refusals Alipay would give anyway, answered without a round trip."""
    if not instruction.original_txn_id:
        return PayoutResult(
            status=PayoutStatus.FAILED_PERMANENT,
            code="ACQ.TRADE_NOT_EXIST",
            message="an Alipay refund needs the original trade_no",
        )
    if instruction.currency != "CNY" or instruction.amount <= 0:
        return PayoutResult(
            status=PayoutStatus.FAILED_PERMANENT,
            code="ACQ.INVALID_PARAMETER",
            message=f"Alipay refunds CNY amounts above zero, not {instruction.currency}"
            f" {instruction.amount}",
        )
    return None


def _beijing_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        # Notifications add milliseconds ("2015-04-28 15:45:57.320"); answers do not.
        return dt.datetime.strptime(value[:19], TIME_FORMAT).replace(tzinfo=BEIJING)
    except ValueError:
        return None
