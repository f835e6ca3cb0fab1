"""Encryption at rest for the secrets and personal data the service must read back.

A value is sealed with AES-256-GCM under one key of a :class:`Keyring` and stored as text::

    rfsealed1:<key id>:<base64url(12-byte nonce || ciphertext || 16-byte tag)>

The key id travels with the value, so keys rotate: put a new key first in the keyring (it
seals from then on), keep the old ones after it while values sealed with them remain, and
re-seal those (:meth:`Keyring.needs_reseal`). Every value is sealed for a *purpose*, e.g.
``merchants.webhook_secret:<merchant id>``, bound to the ciphertext as associated data: a
value copied into another row or column does not open there.

A keyring is written as ``<key id>:<base64 of 32 random bytes>`` entries, one per line or
separated by commas, the current key first (``refundflow secrets new-key`` prints one).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SEALED_PREFIX = "rfsealed1"
KEY_BYTES = 32
_NONCE_BYTES = 12
_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class KeyringError(Exception):
    """A keyring that cannot be used, or a sealed value that cannot be opened."""

    code = "encryption_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MissingKey(KeyringError):
    code = "missing_encryption_key"


class InvalidKeyring(KeyringError):
    code = "invalid_encryption_keys"


class SealedValueError(KeyringError):
    """Not a sealed value, sealed with a key this keyring lacks, or altered since."""

    code = "sealed_value_invalid"


@dataclass(frozen=True)
class Keyring:
    keys: Mapping[str, bytes] = field(repr=False)
    """Key id -> 32-byte key."""
    current: str
    """The key new values are sealed with."""

    def __post_init__(self) -> None:
        if self.current not in self.keys:
            raise InvalidKeyring(f"the current key {self.current!r} is not in the keyring")
        for key_id, key in self.keys.items():
            if not _KEY_ID.match(key_id) or len(key) != KEY_BYTES:
                raise InvalidKeyring(f"key {key_id!r}: ids are [A-Za-z0-9_-], keys 32 bytes")

    @classmethod
    def parse(cls, text: str, *, source: str) -> Keyring:
        """Entries ``<key id>:<base64 key>``, one per line or comma-separated, the current key
        first; blank lines and ``#`` comments are skipped. ``source`` names where the text came
        from in errors (never the text itself)."""
        keys: dict[str, bytes] = {}
        entries = [e.strip() for line in text.splitlines() for e in line.split("#")[0].split(",")]
        for number, entry in enumerate(filter(None, entries), start=1):
            key_id, sep, encoded = entry.partition(":")
            key = _decode_key(encoded.strip())
            if not sep or not _KEY_ID.match(key_id.strip()) or len(key) != KEY_BYTES:
                raise InvalidKeyring(
                    f"{source}: entry {number} is not '<key id>:<base64 of 32 bytes>'"
                )
            if key_id.strip() in keys:
                raise InvalidKeyring(f"{source}: key id {key_id.strip()!r} appears twice")
            keys[key_id.strip()] = key
        if not keys:
            raise InvalidKeyring(f"{source}: no keys")
        return cls(keys=keys, current=next(iter(keys)))

    def seal(self, plaintext: str, *, purpose: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        box = AESGCM(self.keys[self.current]).encrypt(nonce, plaintext.encode(), _aad(purpose))
        body = base64.urlsafe_b64encode(nonce + box).decode().rstrip("=")
        return f"{SEALED_PREFIX}:{self.current}:{body}"

    def open(self, sealed: str, *, purpose: str) -> str:
        key_id, blob = _parts(sealed)
        key = self.keys.get(key_id)
        if key is None:
            raise SealedValueError(f"sealed with key {key_id!r}, which the keyring does not hold")
        try:
            plain = AESGCM(key).decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], _aad(purpose))
        except InvalidTag:
            raise SealedValueError(f"a value sealed for {purpose!r} does not open") from None
        return plain.decode()

    def needs_reseal(self, stored: str) -> bool:
        """Plaintext from before sealing, or sealed with a key other than the current one."""
        return not is_sealed(stored) or _parts(stored)[0] != self.current


def is_sealed(value: str) -> bool:
    return value.startswith(SEALED_PREFIX + ":")


def new_key_entry(key_id: str) -> str:
    """A keyring entry with a fresh random key."""
    if not _KEY_ID.match(key_id):
        raise InvalidKeyring(f"key id {key_id!r}: use 1-32 of [A-Za-z0-9_-]")
    return f"{key_id}:{base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).decode()}"


def read_keyring_file(path: Path) -> Keyring:
    """The keyring in ``path``, which only its owner may read (like an SSH key)."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MissingKey(f"no encryption keys at {path}") from None
    except OSError as exc:
        raise InvalidKeyring(f"cannot read {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InvalidKeyring(
            f"{path} is readable by others (mode {stat.S_IMODE(mode):04o}): chmod 600 it"
        )
    return Keyring.parse(text, source=str(path))


def create_keyring_file(path: Path, *, key_id: str) -> Keyring:
    """A new keyring of one fresh key in ``path``, created 0600; never overwrites one."""
    entry = new_key_entry(key_id)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write(
            "# refundflow encryption keys: <key id>:<base64 key>, the current one first.\n"
            + entry
            + "\n"
        )
    return Keyring.parse(entry, source=str(path))


def _parts(sealed: str) -> tuple[str, bytes]:
    prefix, _, rest = sealed.partition(":")
    key_id, _, body = rest.partition(":")
    try:
        blob = base64.urlsafe_b64decode(_padded(body))
    except (binascii.Error, ValueError):
        blob = b""
    if prefix != SEALED_PREFIX or not key_id or len(blob) <= _NONCE_BYTES:
        raise SealedValueError("not a sealed value")
    return key_id, blob


def _decode_key(encoded: str) -> bytes:
    # Standard or URL-safe base64 alike: keys come from many tools.
    try:
        return base64.urlsafe_b64decode(_padded(encoded.replace("+", "-").replace("/", "_")))
    except (binascii.Error, ValueError):
        return b""


def _padded(text: str) -> str:
    return text + "=" * (-len(text) % 4)


def _aad(purpose: str) -> bytes:
    return f"refundflow:{purpose}".encode()
