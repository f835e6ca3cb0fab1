"""The test session's payload keys: every Temporal client and server environment the tests make
encrypts with them, as production does (``refundflow.payload_codec``). Processes the tests start
inherit them through ``REFUNDFLOW_PAYLOAD_KEYS``."""

from __future__ import annotations

import os
from collections.abc import Iterator

from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.client import WorkflowHistory
from temporalio.converter import DataConverter

from refundflow.crypto import Keyring, new_key_entry
from refundflow.payload_codec import EncryptionCodec, encrypted_data_converter

PAYLOAD_KEYS = os.environ.setdefault("REFUNDFLOW_PAYLOAD_KEYS", new_key_entry("test-payload-1"))
PAYLOAD_KEYRING = Keyring.parse(PAYLOAD_KEYS, source="REFUNDFLOW_PAYLOAD_KEYS")
CONVERTER: DataConverter = encrypted_data_converter(PAYLOAD_KEYRING)
CODEC = EncryptionCodec(PAYLOAD_KEYRING)
DB_KEYRING = Keyring.parse(new_key_entry("test-1"), source="tests")
"""Seals what the refunds database keeps of customers (workers made by the tests use it)."""
_SEARCH_ATTRIBUTES = "temporal.api.common.v1.SearchAttributes"


def payloads_in(message: Message, *, search_attributes: bool = False) -> Iterator[Payload]:
    """Every ``Payload`` in a protobuf message (an event, a whole history): inputs, results,
    memos, headers, user metadata, failure details; search attribute values (plaintext by
    design) only with ``search_attributes``."""
    for field, value in message.ListFields():
        kind = field.message_type
        if kind is None or (kind.full_name == _SEARCH_ATTRIBUTES and not search_attributes):
            continue
        if kind.GetOptions().map_entry:
            values = list(value.values())
            kind = kind.fields_by_name["value"].message_type
            if kind is None:
                continue
        else:
            values = [value] if isinstance(value, Message) else list(value)
        for item in values:
            if kind.full_name == Payload.DESCRIPTOR.full_name:
                yield item
            else:
                yield from payloads_in(item, search_attributes=search_attributes)


def decrypted(history: WorkflowHistory, codec: EncryptionCodec) -> WorkflowHistory:
    """A copy of ``history`` with every payload decrypted (unencrypted ones stay as they are)."""
    events = [type(e).FromString(e.SerializeToString()) for e in history.events]
    for event in events:
        for payload in payloads_in(event):
            payload.CopyFrom(codec.decrypt(payload))
    return WorkflowHistory(history.workflow_id, events)
