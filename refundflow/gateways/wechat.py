"""WeChat Pay API v3 domestic refunds: ``POST /v3/refund/domestic/refunds``, ``GET
/v3/refund/domestic/refunds/{out_refund_no}`` and the refund result notification.

The wire format is written here with httpx and ``cryptography`` instead of the ``wechatpayv3``
package: that client is synchronous (requests), untyped, and wants to own certificate download
and callback handling, while we need two calls and one callback, all async inside an activity or
an API request. The scheme is small and fully documented:
- Requests carry ``Authorization: WECHATPAY2-SHA256-RSA2048 mchid="..",nonce_str="..",
  signature="..",timestamp="..",serial_no=".."``, the signature being SHA256withRSA by the
  merchant key over ``METHOD\\nURL\\nTIMESTAMP\\nNONCE\\nBODY\\n`` (URL = path and query as sent).
- Answers and notifications carry ``Wechatpay-Timestamp/Nonce/Signature/Serial``: SHA256withRSA
  by the platform key named by the serial, over ``TIMESTAMP\\nNONCE\\nBODY\\n``. Successful
  answers must verify; error answers are read like the official SDKs read them (WeChat does not
  sign an answer to a request whose own signature failed).
- Notifications hold the refund encrypted with AEAD_AES_256_GCM under the APIv3 key.

``out_refund_no`` allows only ``[0-9A-Za-z_-|*@]``, and our payout keys use ``:``; it is sent as
``*`` (a character payout keys never contain), so the mapping is exact both ways.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
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

API_BASE = "https://api.mch.weixin.qq.com"
REFUNDS_PATH = "/v3/refund/domestic/refunds"
SCHEME = "WECHATPAY2-SHA256-RSA2048"
_NUMBER = re.compile(r"[0-9A-Za-z_\-|*@]{1,64}")
# Answered without taking the refund; the same out_refund_no may be sent again later.
_RETRYABLE = frozenset({"SYSTEM_ERROR", "FREQUENCY_LIMITED", "NOT_ENOUGH"})
# Our own set-up is wrong (keys, merchant id): no refund can pass until ops fix it.
_SETUP = frozenset({"SIGN_ERROR", "MCH_NOT_EXISTS"})
_STATUS = {
    "SUCCESS": PayoutStatus.SETTLED,
    "PROCESSING": PayoutStatus.ACCEPTED,
    "ABNORMAL": PayoutStatus.FAILED_PERMANENT,
    "CLOSED": PayoutStatus.FAILED_PERMANENT,
}


class WechatConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    base_url: str = API_BASE
    mchid: str
    merchant_serial_no: str
    """Serial number of the merchant API certificate whose key signs our requests."""
    merchant_private_key: SecretStr
    apiv3_key: SecretStr
    """The 32-byte APIv3 key that encrypts notifications."""
    platform_certificates: list[str] = []
    """WeChat Pay platform certificates (PEM); each one's serial names it in ``Wechatpay-Serial``.
    More than one while WeChat rotates them."""
    platform_public_keys: dict[str, str] = {}
    """WeChat Pay public keys by id (``PUB_KEY_ID_...``), for merchants on that scheme."""
    notify_url: str = ""
    timeout_s: float = 10.0
    webhook_tolerance_s: float = WEBHOOK_TOLERANCE_S
    """Oldest notification or answer accepted, by its signed timestamp (replays)."""


class WechatBusy(GatewayError):
    """WeChat Pay answered and took no refund (busy, rate-limited, short of funds...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"wechat {code}: {message}")
        self.code = code


class WechatSignatureError(GatewayTimeout):
    """A successful-looking answer without the platform's valid signature proves nothing."""


def out_refund_no(payout_key: str) -> str:
    """Our payout key as WeChat's ``out_refund_no``; ValueError if it cannot be one."""
    number = payout_key.replace(":", "*")
    if "*" in payout_key or not _NUMBER.fullmatch(number):
        raise ValueError(f"payout key {payout_key!r} cannot be sent as out_refund_no")
    return number


def payout_key_of(number: str) -> str:
    return number.replace("*", ":")


class WechatGateway:
    name = "wechat"

    def __init__(
        self,
        config: WechatConfig,
        *,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        key = serialization.load_pem_private_key(
            config.merchant_private_key.get_secret_value().encode(), password=None
        )
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("the merchant API key must be an RSA private key")
        self._private_key = key
        self._platform = _platform_keys(config)
        if not self._platform:
            raise ValueError("WeChat Pay needs a platform certificate or public key to verify")
        apiv3 = config.apiv3_key.get_secret_value().encode()
        if len(apiv3) != 32:
            raise ValueError("the APIv3 key is 32 bytes")
        self._aead = AESGCM(apiv3)
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(config.timeout_s), transport=transport
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    # ------------------------------------------------------------------ Gateway protocol
    async def refund(self, instruction: PayoutInstruction) -> PayoutResult:
        try:
            number = out_refund_no(instruction.payout_key)
        except ValueError as exc:
            return _failed("PARAM_ERROR", str(exc))
        if instruction.currency != "CNY" or instruction.amount <= 0:
            return _failed("PARAM_ERROR", "WeChat Pay refunds CNY amounts above zero")
        if not instruction.original_txn_id or instruction.original_amount <= 0:
            return _failed("PARAM_ERROR", "a refund needs the transaction_id and its total")
        body: dict[str, Any] = {
            "transaction_id": instruction.original_txn_id,
            "out_refund_no": number,
            "reason": instruction.reason[:80],
            "amount": {
                "refund": instruction.amount,
                "total": instruction.original_amount,
                "currency": "CNY",
            },
        }
        if self.config.notify_url:
            body["notify_url"] = self.config.notify_url
        status, payload = await self._request("POST", REFUNDS_PATH, body)
        if status == 200:
            return self._result(payload, number)
        code, message = _error(payload)
        if code in _RETRYABLE or code in _SETUP or status >= 500:
            raise WechatBusy(code or f"HTTP_{status}", message)
        return _failed(code or f"HTTP_{status}", message)

    async def query(self, instruction: PayoutInstruction) -> PayoutResult:
        try:
            number = out_refund_no(instruction.payout_key)
        except ValueError:
            return PayoutResult(status=PayoutStatus.NOT_FOUND, message="never sendable")
        status, payload = await self._request("GET", f"{REFUNDS_PATH}/{quote(number, safe='*@')}")
        if status == 200:
            return self._result(payload, number)
        code, message = _error(payload)
        if status == 404 and code == "RESOURCE_NOT_EXISTS":
            return PayoutResult(status=PayoutStatus.NOT_FOUND, code=code, message=message)
        if code in _RETRYABLE or code in _SETUP or status >= 500:
            raise WechatBusy(code or f"HTTP_{status}", message)
        return PayoutResult(status=PayoutStatus.UNKNOWN, code=code, message=message)

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> PayoutEvent:
        """A refund result notification (REFUND.SUCCESS / REFUND.ABNORMAL / REFUND.CLOSED)."""
        stamp, nonce, signature, serial = _signature_headers(headers)
        if not (stamp and nonce and signature and serial):
            raise ValueError("wechat notification without its Wechatpay-* signature headers")
        if not self._verified(stamp, nonce, body, signature, serial):
            raise ValueError("wechat notification signature does not verify")
        if not stamp.isdigit():
            raise ValueError("wechat notification timestamp is not unix seconds")
        check_sent_time("wechat", int(stamp), self.clock(), self.config.webhook_tolerance_s)
        try:
            envelope = json.loads(body)
            resource = envelope["resource"]
            if resource.get("algorithm") != "AEAD_AES_256_GCM":
                raise ValueError(f"unknown algorithm {resource.get('algorithm')!r}")
            plain = self._aead.decrypt(
                str(resource["nonce"]).encode(),
                base64.b64decode(resource["ciphertext"], validate=True),
                str(resource.get("associated_data") or "").encode() or None,
            )
            refund = json.loads(plain)
            event_id, number = str(envelope["id"]), str(refund["out_refund_no"])
            refund_status = str(refund["refund_status"])
        except (InvalidTag, binascii.Error, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"wechat notification unreadable: {exc!r}") from exc
        if refund.get("mchid") != self.config.mchid:
            raise ValueError("wechat notification for another merchant")
        if refund_status not in _STATUS or refund_status == "PROCESSING":
            raise ValueError(f"wechat notification with refund_status {refund_status!r}")
        return PayoutEvent(
            payout_key=payout_key_of(number),
            status=_STATUS[refund_status],
            provider_ref=str(refund.get("refund_id", "")),
            trace_ref=str(refund.get("refund_id", "")),
            code=refund_status,
            event_id=event_id,
            amount=_refund_fen(refund),
            currency="CNY",  # domestic refunds are in fen of CNY
        )

    # ------------------------------------------------------------------ wire
    async def _request(
        self, method: str, path: str, body: Mapping[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        url = httpx.URL(self.config.base_url.rstrip("/") + path)
        text = "" if body is None else json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        stamp, nonce = str(int(self.clock())), secrets.token_hex(16).upper()
        canonical = url.raw_path.decode("ascii")  # path and query exactly as they go out
        message = f"{method}\n{canonical}\n{stamp}\n{nonce}\n{text}\n".encode()
        signature = base64.b64encode(
            self._private_key.sign(message, padding.PKCS1v15(), hashes.SHA256())
        ).decode()
        headers = {
            "Authorization": f'{SCHEME} mchid="{self.config.mchid}",nonce_str="{nonce}",'
            f'signature="{signature}",timestamp="{stamp}",'
            f'serial_no="{self.config.merchant_serial_no}"',
            "Accept": "application/json",
            "User-Agent": "refundflow",
        }
        if body is not None:
            headers["Content-Type"] = "application/json"
        sending = method != "GET"
        try:
            response = await self._client.request(
                method, url, content=text.encode() if body is not None else None, headers=headers
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise GatewayError(f"wechat unreachable: {exc!r}") from exc
        except httpx.TransportError as exc:
            if not sending:
                raise GatewayError(f"wechat query failed: {exc!r}") from exc
            raise GatewayTimeout(f"wechat {method} {path}: no answer ({exc!r})") from exc
        return response.status_code, self._open(response)

    def _open(self, response: httpx.Response) -> dict[str, Any]:
        stamp, nonce, signature, serial = _signature_headers(response.headers)
        signed = bool(stamp and nonce and signature and serial)
        if response.is_success or signed:
            if not signed:
                raise WechatSignatureError("wechat answer is not signed")
            if not self._verified(stamp, nonce, response.content, signature, serial):
                raise WechatSignatureError("wechat answer signature does not verify")
            if (
                not stamp.isdigit()
                or abs(self.clock() - int(stamp)) > self.config.webhook_tolerance_s
            ):
                raise WechatSignatureError("wechat answer timestamp is stale")
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            if response.is_success:
                raise WechatSignatureError("wechat answer is not a JSON object")
            return {}
        return payload

    def _verified(self, stamp: str, nonce: str, body: bytes, signature: str, serial: str) -> bool:
        key = self._platform.get(serial)
        if key is None:
            return False
        message = stamp.encode() + b"\n" + nonce.encode() + b"\n" + body + b"\n"
        try:
            raw = base64.b64decode(signature, validate=True)
            key.verify(raw, message, padding.PKCS1v15(), hashes.SHA256())
        except (InvalidSignature, binascii.Error, ValueError):
            return False
        return True

    def _result(self, payload: Mapping[str, Any], number: str) -> PayoutResult:
        if payload.get("out_refund_no") != number:
            raise WechatSignatureError("wechat answered about another out_refund_no")
        state = str(payload.get("status", ""))
        status = _STATUS.get(state, PayoutStatus.UNKNOWN)
        return PayoutResult(
            status=status,
            provider_ref=str(payload.get("refund_id", "")),
            # WeChat Pay's refund number is what its support traces; user_received_account
            # only names where the money went ("支付用户零钱", a card), so it is no reference.
            trace_ref=str(payload.get("refund_id", "")),
            code=state,
            settled_at=_rfc3339(payload.get("success_time"))
            if status is PayoutStatus.SETTLED
            else None,
        )


def _platform_keys(config: WechatConfig) -> dict[str, rsa.RSAPublicKey]:
    keys: dict[str, rsa.RSAPublicKey] = {}
    for pem in config.platform_certificates:
        cert = x509.load_pem_x509_certificate(pem.encode())
        cert_key = cert.public_key()
        if isinstance(cert_key, rsa.RSAPublicKey):
            keys[f"{cert.serial_number:X}"] = cert_key
    for key_id, pem in config.platform_public_keys.items():
        key = serialization.load_pem_public_key(pem.encode())
        if isinstance(key, rsa.RSAPublicKey):
            keys[key_id] = key
    return keys


def _signature_headers(headers: Mapping[str, str]) -> tuple[str, str, str, str]:
    lower = {k.lower(): v for k, v in headers.items()}
    return (
        lower.get("wechatpay-timestamp", ""),
        lower.get("wechatpay-nonce", ""),
        lower.get("wechatpay-signature", ""),
        lower.get("wechatpay-serial", ""),
    )


def _error(payload: Mapping[str, Any]) -> tuple[str, str]:
    return str(payload.get("code", "")), str(payload.get("message", ""))


def _failed(code: str, message: str) -> PayoutResult:
    return PayoutResult(status=PayoutStatus.FAILED_PERMANENT, code=code, message=message)


def _rfc3339(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        return None


def _refund_fen(refund: Mapping[str, Any]) -> int | None:
    """The refunded amount a notification names (``amount.refund``, fen), if it names one."""
    amount = refund.get("amount")
    value = amount.get("refund") if isinstance(amount, Mapping) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None
