"""Delivers outbox rows: customer notices by email and/or SMS, every notice to the merchant.

One round: lease the pending rows (short transaction), deliver each over its channels with
no transaction open, record each channel as soon as it is done, then mark the row (a row's mark
is written with the round's next write, or at its end: a round cut short leaves the row leased,
and the next round after the lease finds its channels recorded and sends nothing twice):

- every channel done (delivered, or refused for good) -> ``sent``, or ``failed`` when the
  customer got it on no channel (for other notices: when every channel refused it); a row
  with no channel to go to is ``sent`` with nothing recorded;
- a channel failed retryably -> stays ``pending`` with the error and one more attempt, or
  ``failed`` for good on the last attempt.

A channel recorded in ``deliveries`` is never tried again, so the retry after "email sent,
SMS provider down" sends the SMS only. A row already ``sent`` is never leased again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, TypeVar

from sqlalchemy import Engine
from sqlmodel import Session

from refundflow.crypto import Keyring, KeyringError, MissingKey
from refundflow.db.engine import session_scope
from refundflow.db.models import MerchantRow, OutboxRow, RefundRow
from refundflow.db.personal import open_personal
from refundflow.db.repository import (
    OutboxMark,
    lease_outbox,
    list_outbox,
    mark_outbox_rows,
    merchant_webhook,
    record_delivery,
    refund_for_notices,
)
from refundflow.domain.notices import Notice, render_notice
from refundflow.notify.email import EmailSender
from refundflow.notify.errors import DeliveryError
from refundflow.notify.merchant_webhook import MerchantWebhookSender
from refundflow.notify.sms import SmsProvider

T = TypeVar("T")
Channel = Literal["email", "sms", "webhook"]
Write = Callable[[Session], object]

_CUSTOMER_CHANNELS = ("email", "sms")
_EVENT_NS = uuid.UUID("6f1d7b7e-3c55-4d0e-9a57-2b8f3f1c8a10")


@dataclass(frozen=True)
class RowOutcome:
    outbox_id: int
    status: Literal["sent", "pending", "failed"]
    delivered: list[str]
    """Channels delivered in this round."""
    error: str = ""


@dataclass
class DeliveryReport:
    rows: list[RowOutcome] = field(default_factory=list)
    held: int = 0
    """Pending rows another sender holds right now (not attempted here)."""

    @property
    def sent(self) -> int:
        return sum(r.status == "sent" for r in self.rows)

    @property
    def failed(self) -> int:
        return sum(r.status == "failed" for r in self.rows)

    @property
    def pending(self) -> int:
        return sum(r.status == "pending" for r in self.rows) + self.held

    @property
    def errors(self) -> list[str]:
        return [f"outbox {r.outbox_id}: {r.error}" for r in self.rows if r.error]


@dataclass(frozen=True)
class _Recipient:
    """What a refund's notices need: who the customer is and where the merchant listens."""

    merchant_id: str = ""
    order_id: str = ""
    email: str | None = None
    phone: str | None = None
    webhook_url: str | None = None
    webhook_secret: str | None = field(default=None, repr=False)
    webhook_refusal: DeliveryError | None = None
    """Why the merchant's webhook cannot be signed (its secret does not open)."""
    customer_refusal: DeliveryError | None = None
    """Why the customer's sealed contact cannot be read (no keys, or they do not open it)."""
    customer_channels: tuple[str, ...] = ()
    """The customer's channels known only by their masks when ``customer_refusal`` is set."""


@dataclass(frozen=True)
class LeasedRound:
    """Rows leased for one round of a refund's notices, with their recipient
    (``NotificationDispatcher.with_recipient``)."""

    rows: list[OutboxRow]
    recipient: _Recipient


class NotificationDispatcher:
    def __init__(
        self,
        engine: Engine,
        *,
        email: EmailSender | None = None,
        sms: SmsProvider | None = None,
        webhooks: MerchantWebhookSender | None = None,
        keyring: Keyring | None = None,
        max_attempts: int = 8,
        lease_seconds: float = 300.0,
        batch_size: int = 200,
    ) -> None:
        self.engine = engine
        self.email = email
        self.sms = sms
        self.webhooks = webhooks
        self.keyring = keyring
        """Opens merchants' webhook secrets; without it no merchant webhook is sent."""
        self.max_attempts = max_attempts
        self.lease_seconds = lease_seconds
        self.batch_size = batch_size

    async def aclose(self) -> None:
        if self.sms is not None:
            await self.sms.aclose()
        if self.webhooks is not None:
            await self.webhooks.aclose()

    async def deliver_refund(self, refund_id: str, *, final: bool = False) -> DeliveryReport:
        """One round over the refund's pending rows; ``final``: give up on what fails now."""
        rows = await self._db(
            lease_outbox,
            refund_id=refund_id,
            limit=self.batch_size,
            lease_seconds=self.lease_seconds,
        )
        report = await self._deliver(rows, final=final)
        still = await self._db(list_outbox, refund_id=refund_id, status="pending")
        report.held = len({r.id for r in still} - {o.outbox_id for o in report.rows})
        return report

    def lease_round(self, session: Session, refund_id: str) -> list[OutboxRow]:
        """Lease the refund's pending rows in the caller's transaction (the one that wrote
        them): no transaction of the round's own to start."""
        return lease_outbox(
            session, refund_id=refund_id, limit=self.batch_size, lease_seconds=self.lease_seconds
        )

    def with_recipient(self, rows: list[OutboxRow]) -> LeasedRound:
        """Rows leased by ``lease_round`` with their recipient, read after the lease's commit
        in a reading transaction: on SQLite, not while holding the database's write lock."""
        if not rows:
            return LeasedRound(rows, _Recipient())
        return LeasedRound(rows, self._read_recipient(rows[0].refund_id))

    async def deliver_round(self, leased: LeasedRound) -> DeliveryReport:
        """Deliver rows leased by ``lease_round`` (what fails stays pending: not final)."""
        return await self._deliver(leased.rows, final=False, recipient=leased.recipient)

    async def deliver_batch(self, *, final: bool = False) -> DeliveryReport:
        """One round over the oldest pending rows of any refund (a periodic sweeper)."""
        rows = await self._db(lease_outbox, limit=self.batch_size, lease_seconds=self.lease_seconds)
        return await self._deliver(rows, final=final)

    # ------------------------------------------------------------------------ rounds
    async def _deliver(
        self, rows: list[OutboxRow], *, final: bool, recipient: _Recipient | None = None
    ) -> DeliveryReport:
        report = DeliveryReport()
        recipients: dict[str | None, _Recipient] = {}
        if recipient is not None and rows:
            recipients[rows[0].refund_id] = recipient
        marks: list[OutboxMark] = []  # rows done whose mark is not written yet
        for row in rows:
            if row.refund_id not in recipients:
                recipients[row.refund_id] = await asyncio.to_thread(
                    self._read_recipient, row.refund_id
                )
            outcome = await self._deliver_row(row, recipients[row.refund_id], final, marks)
            report.rows.append(outcome)
        if marks:
            await self._write([partial(mark_outbox_rows, marks=marks)])
        return report

    async def _deliver_row(
        self, row: OutboxRow, to: _Recipient, final: bool, marks: list[OutboxMark]
    ) -> RowOutcome:
        """Deliver one row; its mark joins ``marks``. Each channel's record is written as soon
        as the channel is done, with the marks waiting so far."""
        assert row.id is not None
        done: dict[str, Any] = dict(row.deliveries)
        delivered: list[str] = []
        refused: list[str] = []
        retry: list[str] = []
        for channel, send in self._targets(row, to):
            if channel in done:
                continue
            try:
                detail = await send()
            except Exception as exc:
                # A surprise (a provider answering nonsense, a bug) must not leave the row
                # leased and unmarked: it counts as a failed attempt like any other.
                failure = exc if isinstance(exc, DeliveryError) else _unexpected(exc)
                (retry if failure.retryable else refused).append(f"{channel}: {failure}")
                if not failure.retryable:
                    await self._record(row.id, channel, False, str(failure), marks)
                    done[channel] = {"ok": False}
                continue
            await self._record(row.id, channel, True, detail, marks)
            done[channel] = {"ok": True}
            delivered.append(channel)
        error = "; ".join(retry + refused)
        if retry:
            give_up = final or row.attempts + 1 >= self.max_attempts
            marks.append(OutboxMark(outbox_id=row.id, sent=False, error=error, give_up=give_up))
            return RowOutcome(row.id, "failed" if give_up else "pending", delivered, error)
        # A customer notice the customer got on no channel has failed, even if the merchant
        # heard of it; any other row fails only when every channel refused it.
        mine = {ch: d for ch, d in done.items() if ch in _CUSTOMER_CHANNELS} or done
        all_refused = bool(mine) and not any(d.get("ok") for d in mine.values())
        marks.append(
            OutboxMark(outbox_id=row.id, sent=not all_refused, error=error, give_up=all_refused)
        )
        return RowOutcome(row.id, "failed" if all_refused else "sent", delivered, error)

    async def _record(
        self, outbox_id: int, channel: str, ok: bool, detail: str, marks: list[OutboxMark]
    ) -> None:
        """A channel is done: its record, with the marks waiting so far (one statement), in
        one transaction."""
        record = partial(
            record_delivery, outbox_id=outbox_id, channel=channel, ok=ok, detail=detail
        )
        await self._write([partial(mark_outbox_rows, marks=list(marks)), record])
        marks.clear()

    def _targets(
        self, row: OutboxRow, to: _Recipient
    ) -> list[tuple[Channel, Callable[[], Awaitable[str]]]]:
        event_id = _event_id(row)
        targets: list[tuple[Channel, Callable[[], Awaitable[str]]]] = []
        notice: Notice | None = None
        if row.channel == "customer" and to.customer_refusal is not None:
            refuse = partial(_raise, to.customer_refusal)
            if "email" in to.customer_channels and self.email is not None:
                targets.append(("email", refuse))
            if "sms" in to.customer_channels and self.sms is not None:
                targets.append(("sms", refuse))
        elif row.channel == "customer":
            try:
                notice = render_notice(row.template, row.locale, row.payload)
            except (KeyError, ValueError) as exc:
                # Bad template or params: no retry will render it, so each customer channel
                # is refused for good; the merchant still hears of the notice.
                refusal = DeliveryError(f"cannot render: {exc}", retryable=False, code="render")
                if to.email and self.email is not None:
                    targets.append(("email", partial(_raise, refusal)))
                if to.phone and self.sms is not None:
                    targets.append(("sms", partial(_raise, refusal)))
        if notice is not None and to.email and self.email is not None:
            send_mail = partial(self.email.send, to.email, notice, key=event_id, locale=row.locale)
            targets.append(("email", send_mail))
        if notice is not None and to.phone and self.sms is not None:
            targets.append(("sms", partial(self.sms.send, to.phone, notice.sms)))
        if to.webhook_refusal is not None and self.webhooks is not None:
            targets.append(("webhook", partial(_raise, to.webhook_refusal)))
        elif to.webhook_url and to.webhook_secret and self.webhooks is not None:
            event = _event(row, to, event_id, notice)
            post = partial(self.webhooks.send, to.webhook_url, to.webhook_secret, event)
            targets.append(("webhook", partial(_as_detail, post, event_id)))
        return targets

    # ------------------------------------------------------------------------ database
    def _customer(self, refund: RefundRow) -> _Recipient:
        """The customer's email and phone: sealed in the row (``refundflow.db.personal``),
        or in its request when a worker from before sealing wrote it (a sealed row's request
        holds no contact: it is read only for the others)."""
        recipient = _Recipient(merchant_id=refund.merchant_id, order_id=refund.order_id)
        if not refund.personal_sealed:
            contact = (refund.request or {}).get("contact") or {}
            return dataclasses.replace(
                recipient, email=contact.get("email"), phone=contact.get("phone")
            )
        try:
            if self.keyring is None:
                raise MissingKey("this worker has no encryption keys")
            personal = open_personal(self.keyring, refund.refund_id, refund.personal_sealed)
        except KeyringError as exc:
            masks = refund.personal_masked or {}
            return dataclasses.replace(
                recipient,
                customer_refusal=DeliveryError(
                    f"customer contact: {exc.message}", retryable=False, code=exc.code
                ),
                customer_channels=tuple(
                    ch for ch, key in (("email", "email"), ("sms", "phone")) if key in masks
                ),
            )
        return dataclasses.replace(
            recipient, email=personal.get("email"), phone=personal.get("phone")
        )

    def _read_recipient(self, refund_id: str | None) -> _Recipient:
        with session_scope(self.engine, readonly=True) as session:
            return self._recipient(session, refund_id)

    def _recipient(self, session: Session, refund_id: str | None) -> _Recipient:
        if refund_id is None or (self.email is None and self.sms is None and self.webhooks is None):
            return _Recipient()  # no channel to send on: nothing to read
        refund = refund_for_notices(session, refund_id=refund_id)
        if refund is None:
            return _Recipient()
        recipient = self._customer(refund)
        merchant = session.get(MerchantRow, refund.merchant_id)
        if merchant is None or not merchant.webhook_url:
            return recipient
        try:
            if self.keyring is None:
                raise MissingKey("this worker has no encryption keys")
            hook = merchant_webhook(session, merchant_id=refund.merchant_id, keyring=self.keyring)
        except KeyringError as exc:
            # A secret that does not open now will not open on a retry either: the
            # channel is refused, with the reason kept on the row.
            refusal = DeliveryError(
                f"merchant webhook secret: {exc.message}", retryable=False, code=exc.code
            )
            return dataclasses.replace(recipient, webhook_refusal=refusal)
        if hook is None:
            return recipient
        return dataclasses.replace(recipient, webhook_url=hook.url, webhook_secret=hook.secret)

    async def _db(self, fn: Callable[..., T], **kwargs: Any) -> T:
        # Sessions are synchronous; a worker thread keeps a busy database (SQLite waits for
        # its write lock) from stalling every other coroutine of the worker.
        def run() -> T:
            with session_scope(self.engine) as session:
                return fn(session, **kwargs)

        return await asyncio.to_thread(run)

    async def _write(self, writes: list[Write]) -> None:
        """Several writes of a round in one transaction (a worker thread, as ``_db``)."""

        def run() -> None:
            with session_scope(self.engine) as session:
                for write in writes:
                    write(session)

        await asyncio.to_thread(run)


def _event_id(row: OutboxRow) -> str:
    # Stable per row, so a redelivery carries the same id; the creation time keeps ids of a
    # fresh database from repeating those of an old one the merchant has already seen.
    name = f"{row.id}:{row.refund_id}:{row.created_at.isoformat()}"
    return "evt_" + uuid.uuid5(_EVENT_NS, name).hex


def _event(row: OutboxRow, to: _Recipient, event_id: str, notice: Notice | None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "refund_id": row.refund_id,
        "order_id": to.order_id,
        "merchant_id": to.merchant_id,
        "channel": row.channel,
        "template": row.template,
        "locale": row.locale,
        "params": row.payload,
    }
    if notice is not None:
        data["notice"] = {"subject": notice.subject, "text": notice.text}
    return {
        "id": event_id,
        "type": f"notification.{row.template}",
        "created": int(row.created_at.timestamp()),
        "data": data,
    }


async def _as_detail(send: Callable[[], Awaitable[int]], event_id: str) -> str:
    await send()
    return event_id


async def _raise(error: DeliveryError) -> str:
    raise error


def _unexpected(exc: Exception) -> DeliveryError:
    return DeliveryError(f"{type(exc).__name__}: {exc}", retryable=True, code="unexpected")
