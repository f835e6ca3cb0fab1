"""refundflow.crypto: sealing, key rotation, and keyrings read only when they are private."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from refundflow.crypto import (
    InvalidKeyring,
    Keyring,
    MissingKey,
    SealedValueError,
    create_keyring_file,
    new_key_entry,
    read_keyring_file,
)
from refundflow.settings import Settings

RING = Keyring.parse(new_key_entry("k1"), source="test")


def test_a_sealed_value_opens_only_for_its_purpose_and_unaltered() -> None:
    sealed = RING.seal("rfwh_secret", purpose="merchants.webhook_secret:a")
    assert "rfwh_secret" not in sealed and sealed.startswith("rfsealed1:k1:")
    assert RING.open(sealed, purpose="merchants.webhook_secret:a") == "rfwh_secret"
    assert sealed != RING.seal("rfwh_secret", purpose="merchants.webhook_secret:a")  # new nonce
    with pytest.raises(SealedValueError):
        RING.open(sealed, purpose="merchants.webhook_secret:b")
    body = sealed.rsplit(":", 1)[1]
    flipped = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    with pytest.raises(SealedValueError):
        RING.open(sealed.replace(body, flipped), purpose="merchants.webhook_secret:a")
    with pytest.raises(SealedValueError, match="not a sealed value"):
        RING.open("rfwh_secret", purpose="merchants.webhook_secret:a")


def test_keyrings_parse_rotate_and_refuse_bad_entries() -> None:
    old = new_key_entry("2026-01")
    raw = base64.b64encode(os.urandom(32)).decode()  # standard base64 is accepted too
    ring = Keyring.parse(f"2026-06:{raw}, {old}  # rotated in June", source="env")
    assert ring.current == "2026-06"
    sealed_old = Keyring.parse(old, source="old").seal("x", purpose="p")
    assert ring.open(sealed_old, purpose="p") == "x" and ring.needs_reseal(sealed_old)
    assert not ring.needs_reseal(ring.seal("x", purpose="p")) and ring.needs_reseal("plain")
    for bad in ("", "k1", f"k1:{raw[:-8]}", f"bad id:{raw}", f"k1:{raw}\nk1:{raw}"):
        with pytest.raises(InvalidKeyring) as refused:
            Keyring.parse(bad, source="REFUNDFLOW_ENCRYPTION_KEYS")
        assert raw not in refused.value.message  # errors never quote key material


def test_a_keyring_file_is_created_private_and_refused_when_it_is_not(tmp_path: Path) -> None:
    path = tmp_path / "encryption.keys"
    made = create_keyring_file(path, key_id="dev-1")
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_keyring_file(path).keys == made.keys
    with pytest.raises(FileExistsError):
        create_keyring_file(path, key_id="dev-2")  # never overwrites the keys of sealed data
    path.chmod(0o644)
    with pytest.raises(InvalidKeyring, match="readable by others"):
        read_keyring_file(path)


def test_settings_find_the_keys_or_say_where_they_looked(tmp_path: Path) -> None:
    with pytest.raises(MissingKey, match="REFUNDFLOW_ENCRYPTION_KEYS"):
        Settings(data_dir=tmp_path).keyring()
    create_keyring_file(tmp_path / "encryption.keys", key_id="dev-1")
    assert Settings(data_dir=tmp_path).keyring().current == "dev-1"
    entry = new_key_entry("prod-1")
    assert Settings(data_dir=tmp_path, encryption_keys=entry).keyring().current == "prod-1"
