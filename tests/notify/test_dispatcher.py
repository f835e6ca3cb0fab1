"""Outbox delivery end to end on SQLite and PostgreSQL: real SMTP server, Twilio simulator and
merchant receiver; the activity runs in Temporal's ActivityEnvironment."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from sqlalchemy import Engine, update
from sqlmodel import col
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from refundflow.activities.contracts import DeliverInput, DeliverResult, SweepInput
from refundflow.activities.notify import NotifyActivities
from refundflow.crypto import Keyring, new_key_entry
from refundflow.db.engine import session_scope
from refundflow.db.models import OutboxRow
from refundflow.db.repository import (
    MerchantWebhook,
    create_refund,
    enqueue_outbox,
    lease_outbox,
    list_outbox,
    merchant_webhook,
    set_merchant_webhook,
    upsert_merchant,
    upsert_order,
)
from refundflow.devstack.sms_simulator import TwilioSimulator
from refundflow.domain.errors import DomainError
from refundflow.domain.states import RefundStatus
from refundflow.notify.dispatcher import NotificationDispatcher
from refundflow.notify.merchant_webhook import MerchantWebhookSender
from refundflow.notify.sms import TwilioSms
from tests.db.builders import MERCHANT, order, quote, request
from tests.notify.conftest import KEYRING, WEBHOOK_SECRET, Receiver, SmtpServer

PHONE = "+86 138 0013 8000"
PAYOUT = {
    "amount": 4000,
    "currency": "CNY",
    "route": "alipay",
    "expected_from": "2027-10-06",
    "expected_by": "2027-10-08",
    "trace_ref": "2027100622001400001",
}


def seed(engine: Engine, *, webhook: str | None, phone: str = PHONE, locale: str = "zh-CN") -> str:
    """A refund whose customer has email and phone, with a customer and an approver notice."""
    refund_id = f"rf_{uuid.uuid4().hex}"
    snap = order()
    contact = {"email": "lilei@example.cn", "phone": phone, "locale": locale}
    with session_scope(engine) as s:
        upsert_merchant(s, merchant_id=MERCHANT, name="Shop")
        if webhook:
            set_merchant_webhook(
                s, merchant_id=MERCHANT, url=webhook, secret=WEBHOOK_SECRET, keyring=KEYRING
            )
        upsert_order(s, order=snap)
        create_refund(
            s,
            refund_id=refund_id,
            order=snap,
            request=request(snap, contact=contact),
            quote=quote(snap, {"p1": 4000}),
            requested_by="desk-1",
            policy_version=1,
            status=RefundStatus.PAYING,
            keyring=KEYRING,
        )
        base = {"refund_id": refund_id, "order_id": snap.order_id}
        enqueue_outbox(
            s,
            refund_id=refund_id,
            channel="customer",
            template="payout_sent",
            locale=locale,
            payload={**base, **PAYOUT},
        )
        enqueue_outbox(
            s,
            refund_id=refund_id,
            channel="approver",
            template="approval_requested",
            payload={"refund_id": refund_id, "amount": 4000},
        )
    return refund_id


def rows(engine: Engine, refund_id: str) -> list[OutboxRow]:
    with session_scope(engine, readonly=True) as s:
        return list_outbox(s, refund_id=refund_id)


def texts_to(sim: TwilioSimulator, number: str) -> list[str]:
    return [m.body for m in sim.messages if m.to == number]


@pytest.fixture
async def dispatcher(
    engine: Engine, smtp: SmtpServer, sms: TwilioSms
) -> AsyncIterator[NotificationDispatcher]:
    webhooks = MerchantWebhookSender(timeout_s=3)
    yield NotificationDispatcher(
        engine, email=smtp.sender(), sms=sms, webhooks=webhooks, keyring=KEYRING, max_attempts=3
    )
    await webhooks.aclose()


async def test_every_channel_gets_each_notice_once(
    engine: Engine,
    dispatcher: NotificationDispatcher,
    smtp: SmtpServer,
    twilio: tuple[TwilioSimulator, str],
    receiver: Receiver,
) -> None:
    sim, _ = twilio
    phone = f"+1555{uuid.uuid4().int % 10**7:07d}"
    refund_id = seed(dispatcher.engine, webhook=receiver.url, phone=phone)
    report = await dispatcher.deliver_refund(refund_id)
    assert (report.sent, report.failed, report.pending) == (2, 0, 0)

    [(rcpt, mail)] = smtp.mailbox.received
    assert rcpt == ["lilei@example.cn"] and mail["Subject"] == "您的 ¥40.00 退款已发出"
    [sms_text] = texts_to(sim, phone)
    assert "2027年10月8日前到账" in sms_text and "2027100622001400001" in sms_text
    customer, approver = receiver.events
    assert customer["type"] == "notification.payout_sent"
    assert customer["data"]["notice"]["subject"] == "您的 ¥40.00 退款已发出"
    assert approver["data"]["channel"] == "approver" and "notice" not in approver["data"]
    assert approver["data"]["params"] == {"refund_id": refund_id, "amount": 4000}
    assert receiver.event_ids == [customer["id"], approver["id"]]

    first, second = rows(engine, refund_id)
    assert (first.status, first.attempts, first.last_error) == ("sent", 1, "")
    assert set(first.deliveries) == {"email", "sms", "webhook"}
    assert first.deliveries["webhook"]["detail"] == customer["id"]
    assert second.status == "sent" and set(second.deliveries) == {"webhook"}

    again = await dispatcher.deliver_refund(refund_id)
    assert again.rows == [] and again.pending == 0
    assert len(smtp.mailbox.received) == 1 and len(receiver.events) == 2
    assert len(texts_to(sim, phone)) == 1


async def test_smtp_down_keeps_the_row_pending_and_the_retry_sends_only_the_email(
    engine: Engine,
    dispatcher: NotificationDispatcher,
    smtp: SmtpServer,
    twilio: tuple[TwilioSimulator, str],
    receiver: Receiver,
) -> None:
    sim, _ = twilio
    phone = f"+1555{uuid.uuid4().int % 10**7:07d}"
    refund_id = seed(engine, webhook=receiver.url, phone=phone)
    smtp.stop()
    report = await dispatcher.deliver_refund(refund_id)
    assert (report.sent, report.failed, report.pending) == (1, 0, 1)
    customer, approver = rows(engine, refund_id)
    assert (customer.status, customer.attempts) == ("pending", 1)
    assert customer.last_error.startswith("email: smtp: SMTPConnect")
    assert set(customer.deliveries) == {"sms", "webhook"} and customer.locked_until is None
    assert approver.status == "sent"

    smtp.start()
    report = await dispatcher.deliver_refund(refund_id)
    assert (report.sent, report.pending) == (1, 0)
    assert len(smtp.mailbox.received) == 1
    assert len(texts_to(sim, phone)) == 1 and len(receiver.events) == 2
    customer, _ = rows(engine, refund_id)
    assert (customer.status, customer.attempts, customer.last_error) == ("sent", 2, "")


async def test_after_max_attempts_the_row_fails_for_good(
    engine: Engine, dispatcher: NotificationDispatcher, smtp: SmtpServer
) -> None:
    refund_id = seed(engine, webhook=None)
    smtp.stop()
    for attempt in (1, 2):
        report = await dispatcher.deliver_refund(refund_id)
        assert report.pending == 1, attempt
    report = await dispatcher.deliver_refund(refund_id)
    assert (report.failed, report.pending) == (1, 0)
    customer, approver = rows(engine, refund_id)
    assert (customer.status, customer.attempts) == ("failed", 3)
    assert "email: smtp:" in customer.last_error
    # No webhook configured: the approver notice had nowhere to go and is done.
    assert (approver.status, approver.deliveries) == ("sent", {})
    assert (await dispatcher.deliver_refund(refund_id)).rows == []


async def test_an_invalid_number_is_recorded_and_not_retried(
    engine: Engine, dispatcher: NotificationDispatcher, smtp: SmtpServer
) -> None:
    refund_id = seed(engine, webhook=None, phone="12345", locale="en")
    report = await dispatcher.deliver_refund(refund_id)
    assert report.sent == 2
    customer, _ = rows(engine, refund_id)
    assert customer.status == "sent" and "21211" in customer.last_error
    assert customer.deliveries["sms"]["ok"] is False
    assert customer.deliveries["email"]["ok"] is True
    [(_, mail)] = smtp.mailbox.received
    assert mail["Subject"] == "Your refund of CN¥40.00 is on its way"


async def test_rows_another_sender_holds_are_left_alone(
    engine: Engine, dispatcher: NotificationDispatcher, smtp: SmtpServer
) -> None:
    refund_id = seed(engine, webhook=None)
    with session_scope(engine) as s:
        assert len(lease_outbox(s, refund_id=refund_id)) == 2
    report = await dispatcher.deliver_refund(refund_id)
    assert report.rows == [] and report.held == 2 and report.pending == 2
    assert smtp.mailbox.received == []


async def test_activity_retries_a_busy_sms_provider_without_resending_the_email(
    engine: Engine,
    dispatcher: NotificationDispatcher,
    smtp: SmtpServer,
    twilio: tuple[TwilioSimulator, str],
) -> None:
    sim, _ = twilio
    refund_id = seed(engine, webhook=None)
    activities = NotifyActivities(dispatcher)
    env = ActivityEnvironment()
    sim.fail_next(1, status=500)
    with pytest.raises(ApplicationError, match="sms: 20500: Twilio HTTP 500") as err:
        await env.run(activities.deliver_notifications, DeliverInput(refund_id=refund_id))
    assert err.value.type == "notifications_pending" and not err.value.non_retryable
    env.info = dataclasses.replace(env.info, attempt=2)
    result = await env.run(activities.deliver_notifications, DeliverInput(refund_id=refund_id))
    assert result == DeliverResult(sent=1, failed=0, pending=0)
    assert len(smtp.mailbox.received) == 1
    assert [r.status for r in rows(engine, refund_id)] == ["sent", "sent"]


async def test_activity_gives_up_on_its_last_attempt(
    engine: Engine, dispatcher: NotificationDispatcher, smtp: SmtpServer
) -> None:
    refund_id = seed(engine, webhook=None)
    smtp.stop()
    activities = NotifyActivities(dispatcher)
    env = ActivityEnvironment()
    inp = DeliverInput(refund_id=refund_id, max_attempts=2)
    with pytest.raises(ApplicationError, match="1 notice"):
        await env.run(activities.deliver_notifications, inp)
    env.info = dataclasses.replace(env.info, attempt=2)
    assert await env.run(activities.deliver_notifications, inp) == DeliverResult(
        sent=0, failed=1, pending=0
    )
    customer, _ = rows(engine, refund_id)
    assert (customer.status, customer.attempts) == ("failed", 2)


async def test_a_notice_that_cannot_render_fails_for_good_but_reaches_the_merchant(
    engine: Engine, dispatcher: NotificationDispatcher, smtp: SmtpServer, receiver: Receiver
) -> None:
    refund_id = seed(engine, webhook=receiver.url)
    with session_scope(engine) as s:
        enqueue_outbox(s, refund_id=refund_id, channel="customer", template="refund_teleported")
    report = await dispatcher.deliver_refund(refund_id)
    assert (report.sent, report.failed) == (2, 1)
    *_, odd = rows(engine, refund_id)
    assert odd.status == "failed" and odd.attempts == 1
    assert odd.last_error.startswith('email: render: cannot render: "no customer notice')
    assert odd.deliveries["webhook"]["ok"] is True and odd.deliveries["sms"]["ok"] is False
    assert receiver.events[-1]["type"] == "notification.refund_teleported"
    assert len(smtp.mailbox.received) == 1


def test_merchant_webhook_settings(engine: Engine) -> None:
    with session_scope(engine) as s:
        upsert_merchant(s, merchant_id=MERCHANT, name="Shop")
        hook = set_merchant_webhook(
            s, merchant_id=MERCHANT, url="https://shop.example/hooks", keyring=KEYRING
        )
        assert hook is not None
        secret = hook.secret
        assert secret.startswith("rfwh_") and len(secret) > 40
        moved = set_merchant_webhook(
            s, merchant_id=MERCHANT, url="https://shop.example/v2", keyring=KEYRING
        )
        assert moved == MerchantWebhook(url="https://shop.example/v2", secret=secret)
        off = set_merchant_webhook(s, merchant_id=MERCHANT, url=None, keyring=KEYRING)
        assert off is None and merchant_webhook(s, merchant_id=MERCHANT, keyring=KEYRING) is None
        with pytest.raises(DomainError, match="must be http"):
            set_merchant_webhook(s, merchant_id=MERCHANT, url="ftp://shop.example", keyring=KEYRING)


async def test_the_sweep_delivers_what_no_run_is_left_to_send(
    engine: Engine, dispatcher: NotificationDispatcher, smtp: SmtpServer
) -> None:
    refund_id = seed(engine, webhook=None)  # rows written, as by a run that then died
    result = await NotifyActivities(dispatcher).sweep_outbox_batch(SweepInput())
    assert (result.sent, result.failed) == (2, 0)
    assert [r.status for r in rows(engine, refund_id)] == ["sent", "sent"]
    assert len(smtp.mailbox.received) == 1


async def test_a_customer_contact_that_does_not_open_is_refused_for_good(
    engine: Engine, smtp: SmtpServer, sms: TwilioSms
) -> None:
    """Sealed with keys this worker lacks: no retry would open it, so the customer's channels
    are refused at once, and nothing is sent to a guessed address."""
    refund_id = seed(engine, webhook=None)
    stranger = Keyring.parse(new_key_entry("test-1"), source="another worker's keys")
    dispatcher = NotificationDispatcher(
        engine, email=smtp.sender(), sms=sms, keyring=stranger, max_attempts=3
    )
    report = await dispatcher.deliver_refund(refund_id)
    assert report.pending == 0 and report.failed >= 1
    customer = rows(engine, refund_id)[0]
    assert customer.status == "failed" and set(customer.deliveries) == {"email", "sms"}
    assert "customer contact" in customer.last_error
    assert smtp.mailbox.received == []


async def test_a_round_leased_in_the_writing_transaction_delivers_its_rows_once(
    engine: Engine, dispatcher: NotificationDispatcher, smtp: SmtpServer, receiver: Receiver
) -> None:
    """What a run's writes activity does: write the notices and lease them in the same
    transaction, read their recipient, then deliver with no writing transaction of the
    round's own."""
    refund_id = seed(engine, webhook=receiver.url)
    with session_scope(engine) as s:
        enqueue_outbox(s, refund_id=refund_id, channel="approver", template="approval_requested")
        rows_leased = dispatcher.lease_round(s, refund_id)
    leased = dispatcher.with_recipient(rows_leased)
    assert len(leased.rows) == 3 and leased.recipient.email == "lilei@example.cn"
    with session_scope(engine) as s:
        assert lease_outbox(s, refund_id=refund_id) == []  # the round holds them
    report = await dispatcher.deliver_round(leased)
    assert (report.sent, report.failed, report.pending) == (3, 0, 0)
    assert [(r.status, r.attempts, r.locked_until) for r in rows(engine, refund_id)] == [
        ("sent", 1, None)
    ] * 3
    assert len(smtp.mailbox.received) == 1 and len(receiver.events) == 3


async def test_a_round_cut_short_is_finished_later_without_sending_anything_twice(
    engine: Engine,
    dispatcher: NotificationDispatcher,
    smtp: SmtpServer,
    twilio: tuple[TwilioSimulator, str],
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A row's mark waits for the round's next write: a round stopped in between (the run's
    time for it ran out, the worker died) leaves the row leased with its channels recorded,
    and the round after the lease sends none of them again."""
    sim, _ = twilio
    phone = f"+1555{uuid.uuid4().int % 10**7:07d}"
    refund_id = seed(engine, webhook=receiver.url, phone=phone)
    assert dispatcher.webhooks is not None
    send_webhook = dispatcher.webhooks.send
    calls = 0

    async def second_webhook_hangs(url: str, secret: str, event: Mapping[str, Any]) -> int:
        nonlocal calls
        calls += 1
        if calls == 2:
            await asyncio.Event().wait()
        return await send_webhook(url, secret, event)

    monkeypatch.setattr(dispatcher.webhooks, "send", second_webhook_hangs)
    with session_scope(engine) as s:
        leased = dispatcher.with_recipient(dispatcher.lease_round(s, refund_id))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(dispatcher.deliver_round(leased), 2)
    customer, approver = rows(engine, refund_id)
    assert set(customer.deliveries) == {"email", "sms", "webhook"}
    assert customer.status == "pending" and customer.locked_until is not None
    assert approver.deliveries == {}

    monkeypatch.undo()
    with session_scope(engine) as s:  # the lease runs out
        s.execute(
            update(OutboxRow).where(col(OutboxRow.refund_id) == refund_id).values(locked_until=None)
        )
    report = await dispatcher.deliver_refund(refund_id)
    assert (report.sent, report.pending) == (2, 0)
    assert [(r.status, r.attempts) for r in rows(engine, refund_id)] == [("sent", 1)] * 2
    assert len(smtp.mailbox.received) == 1 and len(texts_to(sim, phone)) == 1
    assert [e["data"]["channel"] for e in receiver.events] == ["customer", "approver"]
