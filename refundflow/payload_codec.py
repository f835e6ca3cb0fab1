"""Every payload refundflow hands to Temporal is encrypted before it leaves the process.

Workflow and activity inputs and results, memos, the summary and details of runs and
activities, Update and query answers, and failure messages (through
``DefaultFailureConverterWithEncodedAttributes``) all pass through :class:`EncryptionCodec`.
The Temporal cluster, its database and its backups hold ciphertext only; search attributes
stay plaintext by design (:mod:`refundflow.workflows.search_attributes` holds no personal data).

An encrypted payload is::

    metadata: encoding = "binary/encrypted", encryption-key-id = <key id>
    data:     12-byte nonce || AES-256-GCM(serialized original Payload) || 16-byte tag

The original payload's own metadata (its encoding, a type hint) is inside the ciphertext. The
key id is bound to it as associated data, so relabelling a payload with another key id fails.
Keys come from :meth:`refundflow.settings.Settings.payload_keyring`: the first key encrypts,
every key listed decrypts, so keys rotate without touching history (docs/privacy.md).

Decoding passes a payload without this encoding through unchanged: histories recorded before
encryption, and runs started by a client without the codec during a rolling deploy, keep
replaying and reading.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf.message import DecodeError
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)

from refundflow.crypto import Keyring, KeyringError

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
_NONCE_BYTES = 12


class PayloadKeyError(KeyringError):
    """An encrypted payload this keyring cannot open (unknown key id, or altered)."""

    code = "payload_undecryptable"


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over whole payloads with the current key of ``keyring``."""

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keyring.keys.items()}

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(p) for p in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        key_id = self.keyring.current
        nonce = os.urandom(_NONCE_BYTES)
        box = self._ciphers[key_id].encrypt(nonce, payload.SerializeToString(), _aad(key_id))
        return Payload(metadata={"encoding": ENCODING, KEY_ID: key_id.encode()}, data=nonce + box)

    def decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload  # recorded before encryption, or by a client without the codec
        key_id = payload.metadata.get(KEY_ID, b"").decode(errors="replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise PayloadKeyError(
                f"a payload is encrypted with key {key_id!r}, which the payload keys lack"
            )
        blob = payload.data
        try:
            plain = cipher.decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], _aad(key_id))
            return Payload.FromString(plain)
        except (InvalidTag, DecodeError, ValueError):
            raise PayloadKeyError(
                f"a payload encrypted with key {key_id!r} does not open"
            ) from None


def encrypted_data_converter(keyring: Keyring) -> DataConverter:
    """The pydantic data converter every refundflow client uses, with payloads and failure
    messages encrypted under ``keyring``."""
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=EncryptionCodec(keyring),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


def _aad(key_id: str) -> bytes:
    return f"refundflow-payload:{key_id}".encode()
