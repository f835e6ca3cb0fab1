"""Personal data never reaches Temporal in plaintext: a run's raw history, read without the
payload keys, holds none of the customer's details; with the keys it decodes in full."""

from __future__ import annotations

import json

from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError

from refundflow.domain.states import RefundStatus
from refundflow.payload_codec import ENCODING, KEY_ID
from refundflow.workflows import search_attributes as sa
from tests.payload_keys import CODEC, CONVERTER, decrypted, payloads_in
from tests.workflows.conftest import Stack

EMAIL = "zhang.wei.private@example.com"
PHONE = "+86 138 0013 8000"
ACCOUNT = "6222020200998877"
HOLDER = "张伟 Zhang Wei"
PERSONAL = (EMAIL, PHONE, ACCOUNT, HOLDER)
MARKER_BOOKKEEPING = {
    *("seq", "attempt", "activity_id", "activity_type", "complete_time", "backoff"),
    *("original_schedule_time", "activation_index"),
}
PATCH_BOOKKEEPING = {"id", "deprecated"}  # a patch marker: the patch's name


def spellings(value: str) -> list[bytes]:
    """The value as raw bytes might hold it: UTF-8, and JSON-escaped either way."""
    return [
        value.encode(),
        json.dumps(value).encode()[1:-1],
        json.dumps(value, ensure_ascii=False).encode()[1:-1],
    ]


async def test_a_raw_history_holds_no_personal_data_and_decodes_with_the_keys(
    stack: Stack,
) -> None:
    order = await stack.order("o-private")
    handle = await stack.start(
        "r-private",
        order,
        contact={"email": EMAIL, "phone": PHONE, "locale": "en"},
        destination={
            "kind": "BANK_TRANSFER",
            "bank_account": {
                "holder_name": HOLDER,
                "account_number": ACCOUNT,
                "bank_name": "ICBC",
                "bank_code": "ICBKCNBJ",
                "country": "CN",
                "currency": "CNY",
            },
        },
    )
    assert (await stack.finish(handle)).status is RefundStatus.COMPLETED

    # A client of the same cluster without the codec: what anyone with read access sees.
    bare = Client(stack.client.service_client, data_converter=pydantic_data_converter)
    raw = await bare.get_workflow_handle(handle.id).fetch_history()
    assert len(raw.events) > 10
    for event in raw.events:
        blob = event.SerializeToString()
        for value in PERSONAL:
            for spelling in spellings(value):
                assert spelling not in blob, (value, event.event_type)
    payloads = [p for e in raw.events for p in payloads_in(e)]
    # The one plaintext the SDK writes itself: a local activity marker's bookkeeping (its
    # sequence number, attempt, type and times; the activity's result beside it is encrypted)
    # and a patch marker's name.
    bookkeeping = {
        key: [
            json.loads(p.data)
            for e in raw.events
            for name, details in e.marker_recorded_event_attributes.details.items()
            for p in details.payloads
            if name == key and p.metadata["encoding"] != ENCODING
        ]
        for key in ("data", "patch-data")
    }
    plaintext = [p for p in payloads if p.metadata["encoding"] != ENCODING]
    assert len(plaintext) == len(bookkeeping["data"]) + len(bookkeeping["patch-data"])
    assert all(set(b) <= MARKER_BOOKKEEPING for b in bookkeeping["data"]), bookkeeping
    assert all(set(b) <= PATCH_BOOKKEEPING for b in bookkeeping["patch-data"]), bookkeeping
    encrypted = [p for p in payloads if p.metadata["encoding"] == ENCODING]
    assert {p.metadata[KEY_ID] for p in encrypted} == {b"test-payload-1"}
    started = raw.events[0]
    assert started.user_metadata.summary.metadata["encoding"] == ENCODING
    assert started.user_metadata.details.metadata["encoding"] == ENCODING

    # The same history with the keys: every detail is there.
    opened = decrypted(raw, CODEC)
    plain = b"\n".join(p.data for e in opened.events for p in payloads_in(e))
    for value in PERSONAL:
        assert any(spelling in plain for spelling in spellings(value)), value
    described = await stack.client.get_workflow_handle(handle.id).describe()
    assert "o-private" in (await described.static_summary() or "")


async def test_failure_messages_are_encrypted_too() -> None:
    """A failure's message and stack trace go into its encoded attributes: an activity error
    quoting a customer's account never reaches the server readable."""
    failure = Failure()
    await CONVERTER.encode_failure(
        ApplicationError(f"account {ACCOUNT} of {HOLDER} refused", type="account_closed"), failure
    )
    blob = failure.SerializeToString()
    assert all(s not in blob for s in spellings(ACCOUNT) + spellings(HOLDER))
    assert failure.message == "Encoded failure"
    assert failure.encoded_attributes.metadata["encoding"] == ENCODING
    error = await CONVERTER.decode_failure(failure)
    assert ACCOUNT in str(error)


async def test_unencrypted_payloads_decode_unchanged() -> None:
    """Histories from before encryption (and a client without the codec in a rolling deploy)
    stay readable."""
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b'{"email": "a@b.c"}')
    assert await CODEC.decode([plain]) == [plain]
    assert await CONVERTER.decode([plain], [dict]) == [{"email": "a@b.c"}]


def test_search_attributes_name_no_personal_field() -> None:
    """Search attributes stay plaintext (the UI filters on them): only ids, status, channel,
    money and tags, never a contact or account detail."""
    assert {key.name for key in sa.ALL} == {
        *("RefundStatus", "RefundOrderId", "RefundMerchant", "RefundChannel"),
        *("RefundAmount", "RefundCurrency", "RefundTags"),
    }
