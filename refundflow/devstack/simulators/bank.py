"""A small local bank that pays refunds as credit transfers (the API in ``bank_transfer.py``).

What it reproduces: HMAC-signed requests (unknown client, bad signature or a timestamp more
than 300 s off: 401), the batch endpoint with one result per transfer, idempotency on the
``end_to_end_id`` (a repeat with the same amount, currency and creditor account answers the
existing transfer; with other details it is REJECTED ``AM05``), intake checks with ISO 20022
reason codes (``AC01`` account number malformed, a failed IBAN checksum or marked invalid,
``RC01`` bank code, ``AM12`` amount, ``AC02`` unknown debtor account, ``AM04`` funds: refunds
draw on the merchant's balance, kept per currency), transfers ``ACCEPTED`` then ``SETTLED``
with a clearing reference by the ledger's rule, closed accounts (``close_account``) accepted and
later ``RETURNED`` ``AC04`` as the receiving bank would, and signed notifications delivered in
the ledger's webhook modes. A scripted ``transient`` answers 503 with ``Retry-After``.

What it does not: cut-off times and value dates, FX, batch files (pain.001 XML), several
debtor accounts per client, recalls.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from refundflow.devstack.simulators import keys
from refundflow.devstack.simulators.core import (
    FAILED,
    SUCCESS,
    SimLedger,
    SimPayment,
    SimRefund,
    WebhookDue,
    digits_ref,
)
from refundflow.domain.errors import DomainError
from refundflow.domain.money import exponent
from refundflow.gateways.bank_transfer import (
    BATCHES_PATH,
    CLIENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    TRANSFERS_PATH,
    BankTransferConfig,
    major,
    request_signature,
    webhook_signature,
)

REQUEST_TOLERANCE_S = 300.0
REASONS = {
    "AC01": "IncorrectAccountNumber",
    "AC02": "InvalidDebtorAccountNumber",
    "AC04": "ClosedAccountNumber",
    "AC06": "BlockedAccount",
    "AM04": "InsufficientFunds",
    "AM05": "Duplication",
    "AM12": "InvalidAmount",
    "RC01": "BankIdentifierIncorrect",
    "MS03": "NotSpecifiedReasonAgentGenerated",
}
_STATUS = {SUCCESS: "SETTLED", FAILED: "RETURNED"}
_EVENT = {SUCCESS: "credit_transfer.settled", FAILED: "credit_transfer.returned"}
_IBAN = re.compile(r"^[A-Z]{2}\d{2}[A-Z0-9]{10,30}$")
_ACCOUNT = re.compile(r"^[A-Z0-9-]{4,34}$")
_BANK_CODE = re.compile(r"^[A-Z0-9]{4,12}$")
_AMOUNT = re.compile(r"^(\d{1,15})(?:\.(\d{1,3}))?$")


class BankSimulator:
    name = "bank_transfer"

    def __init__(
        self,
        ledger: SimLedger,
        *,
        notify_url: str = "",
        data_dir: Path | None = None,
    ) -> None:
        """Credentials and the merchant's debtor account number are generated once under
        ``data_dir`` (default: the ledger's folder)."""
        self.ledger = ledger
        self.notify_url = notify_url
        stored = keys.load_or_create_secrets(
            (data_dir or ledger.path.parent) / "bank_credentials.json",
            {
                "client_id": "merchant-",
                "api_secret": "bsk_",
                "webhook_secret": "bwh_",
                "debtor_account": "SIM",
            },
        )
        self.client_id = stored["client_id"][:24]
        self.api_secret = stored["api_secret"]
        self.webhook_secret = stored["webhook_secret"]
        self.debtor_account = stored["debtor_account"][:20].upper()
        self.base_url = ""
        self._closed: set[str] = set()
        self._invalid: set[str] = set()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ Simulator protocol
    def app(self) -> ASGIApp:
        return Starlette(
            routes=[
                Route(BATCHES_PATH, self._batch, methods=["POST"]),
                Route(TRANSFERS_PATH + "{end_to_end_id}", self._show, methods=["GET"]),
            ]
        )

    def bind(self, base_url: str) -> None:
        self.base_url = base_url

    def webhook_request(self, due: WebhookDue) -> tuple[str, dict[str, str], bytes] | None:
        if not self.notify_url:
            return None
        return self.event_request(due.refund, event_id=due.event_id)

    def adapter_config(self, base_url: str) -> BankTransferConfig:
        return BankTransferConfig(
            api_base=base_url,
            client_id=self.client_id,
            api_secret=SecretStr(self.api_secret),
            webhook_secret=SecretStr(self.webhook_secret),
            debtor_account=self.debtor_account,
        )

    # ------------------------------------------------------------------ test controls
    def fund(self, amount: int, currency: str) -> SimPayment:
        """Sets the merchant's available balance in ``currency`` (refunds draw on it)."""
        return self.ledger.add_payment(
            _balance_id(self.debtor_account, currency), amount=amount, currency=currency
        )

    def close_account(self, account_number: str) -> None:
        """Transfers to it are accepted, then come back RETURNED AC04."""
        with self._lock:
            self._closed.add(_normal(account_number))

    def invalidate_account(self, account_number: str) -> None:
        """Transfers to it are rejected at intake with AC01."""
        with self._lock:
            self._invalid.add(_normal(account_number))

    def event_request(
        self, refund: SimRefund, *, event_id: str, at: float | None = None
    ) -> tuple[str, dict[str, str], bytes]:
        """The bank's notification about ``refund``, signed at ``at`` (default: now)."""
        stamp = int(self.ledger.clock() if at is None else at)
        event = {
            "event_id": event_id,
            "type": _EVENT.get(refund.status, "credit_transfer.accepted"),
            "created_at": _iso(stamp),
            "transfer": self.render(refund),
        }
        body = json.dumps(event, separators=(",", ":")).encode()
        signature = webhook_signature(self.webhook_secret, stamp, body)
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: f"t={stamp},v1={signature}",
        }
        return self.notify_url, headers, body

    def render(self, refund: SimRefund) -> dict[str, Any]:
        status = _STATUS.get(refund.status, "ACCEPTED")
        return {
            "transfer_id": refund.provider_ref,
            "end_to_end_id": refund.refund_no,
            "status": status,
            "reason_code": refund.code or None,
            "reason": REASONS.get(refund.code) if refund.code else None,
            "amount": {"value": major(refund.amount, refund.currency), "currency": refund.currency},
            "debtor_account": refund.extra.get("debtor_account"),
            "creditor": refund.extra.get("creditor"),
            "remittance_information": refund.extra.get("remittance_information"),
            "bank_reference": refund.trace_ref if status == "SETTLED" else None,
            "created_at": _iso(refund.created_at),
            "settled_at": _iso(refund.settled_at) if refund.settled_at else None,
        }

    # ------------------------------------------------------------------ endpoints
    async def _batch(self, request: Request) -> Response:
        body = await request.body()
        denied = self._authenticate(request, body)
        if denied is not None:
            return denied
        try:
            batch = json.loads(body)
            debtor = str(batch["debtor_account"])
            transfers = list(batch["transfers"])
            if not transfers or not all(isinstance(t, dict) for t in transfers):
                raise ValueError("no transfers")
        except (ValueError, KeyError, TypeError) as exc:
            return _error(400, "FF01", f"invalid batch: {exc}")
        results: list[dict[str, Any]] = []
        hold = False
        for transfer in transfers:
            outcome = await asyncio.to_thread(self._book, debtor, transfer)
            if outcome is None:
                # The bank's core system is down; transfers booked before this one stay booked
                # and a resent batch finds them by their end_to_end_id.
                return _error(503, "SERVICE_UNAVAILABLE", "try again later", retry_after="1")
            result, held = outcome
            results.append(result)
            hold = hold or held
        if hold:
            await self.ledger.hold()
        return JSONResponse(
            {
                "batch_id": batch.get("batch_id"),
                "received_at": _iso(self.ledger.clock()),
                "transfers": results,
            }
        )

    async def _show(self, request: Request) -> Response:
        denied = self._authenticate(request, await request.body())
        if denied is not None:
            return denied
        refund = await asyncio.to_thread(self.ledger.query, request.path_params["end_to_end_id"])
        if refund is None:
            return _error(404, "NOT_FOUND", "no credit transfer with this end_to_end_id")
        return JSONResponse(self.render(refund))

    # ------------------------------------------------------------------ internals
    def _authenticate(self, request: Request, body: bytes) -> Response | None:
        client = request.headers.get(CLIENT_HEADER, "")
        stamp = request.headers.get(TIMESTAMP_HEADER, "")
        given = request.headers.get(SIGNATURE_HEADER, "").removeprefix("v1=")
        if not hmac.compare_digest(client, self.client_id) or not stamp.isdigit():
            return _error(401, "UNAUTHORIZED", "unknown client or missing timestamp")
        if abs(self.ledger.clock() - int(stamp)) > REQUEST_TOLERANCE_S:
            return _error(401, "UNAUTHORIZED", "request timestamp too far from the bank's clock")
        # The signature covers the path as sent (percent-encoding included).
        raw = request.scope.get("raw_path")
        path = raw.decode("latin-1") if isinstance(raw, bytes) else request.url.path
        target = path + (f"?{request.url.query}" if request.url.query else "")
        expected = request_signature(self.api_secret, stamp, request.method, target, body)
        if not hmac.compare_digest(expected, given):
            return _error(401, "UNAUTHORIZED", "request signature does not verify")
        return None

    def _book(self, debtor: str, transfer: dict[str, Any]) -> tuple[dict[str, Any], bool] | None:
        """One transfer of a batch: its result, and whether the answer is to be withheld;
        None when the bank is (scripted to be) unavailable."""
        key = str(transfer.get("end_to_end_id") or "")
        amount_field = transfer.get("amount") or {}
        creditor = transfer.get("creditor") or {}
        currency = str(amount_field.get("currency", "")).upper()
        try:
            amount = _minor(str(amount_field.get("value", "")), currency)
        except DomainError:
            return _rejected(transfer, "AM12"), False
        if not key or len(key) > 64:
            return _rejected(transfer, "MS03"), False
        number = _normal(str(creditor.get("account_number", "")))
        with self._lock:
            invalid, closed = number in self._invalid, number in self._closed
        if invalid or not _valid_account(number):
            return _rejected(transfer, "AC01"), False
        if not _BANK_CODE.match(_normal(str(creditor.get("bank_code", "")))):
            return _rejected(transfer, "RC01"), False
        if closed:
            # The receiving bank bounces it only after clearing, as it would for real.
            self.ledger.script(key, [("fail_later", "AC04")])
        payment_id = _balance_id(debtor, currency)
        outcome = self.ledger.create_refund(
            refund_no=key,
            payment_id=payment_id,
            amount=amount,
            currency=currency,
            check=lambda p, rs: _check(p, rs, amount),
            make_refs=_make_refs,
            extra={
                "debtor_account": debtor,
                "creditor": creditor,
                "remittance_information": transfer.get("remittance_information"),
            },
        )
        if outcome.kind == "transient":
            return None
        if outcome.kind == "refused":
            return _rejected(transfer, outcome.code), False
        refund = outcome.refund
        assert refund is not None
        if outcome.kind == "existing":
            same = (refund.amount, refund.currency, refund.payment_id) == (
                amount,
                currency,
                payment_id,
            ) and _normal(str((refund.extra.get("creditor") or {}).get("account_number", ""))) == (
                number
            )
            if not same:
                return _rejected(transfer, "AM05"), False
        return self.render(refund), outcome.hold


def dev_simulator(
    data_dir: Path, *, notify_url: str, settlement: str = "seconds:3"
) -> BankSimulator:
    folder = data_dir / "simulators" / BankSimulator.name
    ledger = SimLedger(folder / "ledger.db", settlement=settlement, auto_payments=True)
    return BankSimulator(ledger, notify_url=notify_url, data_dir=folder)


def _check(payment: SimPayment | None, refunds: list[SimRefund], amount: int) -> str | None:
    if payment is None:
        return "AC02"
    if amount <= 0:
        return "AM12"
    drawn = sum(r.amount for r in refunds if r.status != FAILED)
    if amount > payment.amount - drawn:
        return "AM04"
    return None


def _rejected(transfer: dict[str, Any], code: str) -> dict[str, Any]:
    return {
        "transfer_id": None,
        "end_to_end_id": transfer.get("end_to_end_id"),
        "status": "REJECTED",
        "reason_code": code,
        "reason": REASONS.get(code, code),
        "amount": transfer.get("amount"),
        "creditor": transfer.get("creditor"),
        "bank_reference": None,
    }


def _valid_account(number: str) -> bool:
    if _IBAN.match(number):
        # ISO 13616: move the first four characters to the end, letters to numbers, mod 97.
        rearranged = number[4:] + number[:4]
        return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1
    return bool(_ACCOUNT.match(number))


def _normal(value: str) -> str:
    return value.replace(" ", "").upper()


def _minor(value: str, currency: str) -> int:
    match = _AMOUNT.match(value)
    if match is None:
        raise DomainError(f"{value!r} is not an amount", code="AM12")
    digits = exponent(currency)
    fraction = match.group(2) or ""
    if len(fraction) > digits:
        raise DomainError(f"{currency} has {digits} decimals", code="AM12")
    scale: int = 10**digits
    return int(match.group(1)) * scale + int(fraction.ljust(digits, "0") or "0")


def _balance_id(account: str, currency: str) -> str:
    return f"{account}:{currency.upper()}"


def _make_refs(refund_no: str) -> tuple[str, str]:
    digest = hashlib.sha256(f"bank|{refund_no}".encode()).hexdigest()
    return "CT" + digest[:22].upper(), "BNK" + digits_ref(refund_no, "bank-ref", 16)


def _error(status: int, code: str, message: str, *, retry_after: str = "") -> Response:
    headers = {"Retry-After": retry_after} if retry_after else None
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")
