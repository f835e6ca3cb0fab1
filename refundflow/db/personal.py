"""Customer data in the refunds database: sealed, masked, revealed on purpose, erased on time.

A refund's request keeps what the books need (items, reason, destination kind, the account's
bank, country and currency). The customer's email, phone and bank account (number and holder)
are taken out of it before it is stored: they go, as one JSON object, into
``refunds.personal_sealed``, sealed with the secrets' keyring (:mod:`refundflow.crypto`) for
the purpose ``refunds.personal:<refund id>``; the request keeps masked stand-ins (``****8877``)
so it still validates, and ``refunds.personal_masked`` holds the masks the API shows.

Only :func:`open_personal` reads the sealed object back: notices (the email and phone they go
to) and :func:`refundflow.db.repo_personal.reveal_personal`, which records who saw it.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from refundflow.crypto import Keyring, MissingKey

MASK = "****"
PERSONAL_KEYS = ("email", "phone", "account_number", "holder_name")
"""Keys whose values are personal wherever they appear in a document the API answers."""


def _purpose(refund_id: str) -> str:
    return f"refunds.personal:{refund_id}"


def last4(value: str) -> str:
    """``****`` and the last four letters or digits (spaces and dashes ignored)."""
    kept = [c for c in value if c.isalnum()]
    return MASK + "".join(kept[-4:])


def mask_email(email: str) -> str:
    local, _, domain = email.partition("@")
    return f"{local[:1]}{MASK}@{domain}"


def mask_name(name: str) -> str:
    return f"{name[:1]}{MASK}"


_MASKERS = {
    "email": mask_email,
    "phone": last4,
    "account_number": last4,
    "holder_name": mask_name,
}


def mask_document(doc: Any) -> Any:
    """A copy of a JSON document with every personal value masked, at any depth."""
    if isinstance(doc, dict):
        return {
            k: _MASKERS[k](v) if k in _MASKERS and isinstance(v, str) else mask_document(v)
            for k, v in doc.items()
        }
    if isinstance(doc, list):
        return [mask_document(item) for item in doc]
    return doc


def split_personal(request: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(request to store, personal data)``: the request with email and phone removed and the
    bank account's number and holder masked; the personal values, possibly empty."""
    stored = copy.deepcopy(request)
    personal: dict[str, Any] = {}
    contact = stored.get("contact") or {}
    for key in ("email", "phone"):
        value = contact.get(key)
        if value and MASK not in value:
            personal[key] = value
            contact[key] = None
    account = (stored.get("destination") or {}).get("bank_account") or {}
    for key in ("account_number", "holder_name"):
        value = account.get(key)
        if value and not value.endswith(MASK) and not value.startswith(MASK):
            personal[key] = value
            account[key] = _MASKERS[key](value)
    return stored, personal


def masked(personal: dict[str, Any]) -> dict[str, str]:
    return {k: _MASKERS[k](v) for k, v in personal.items() if k in _MASKERS and v}


def seal_personal(keyring: Keyring | None, refund_id: str, personal: dict[str, Any]) -> str:
    if keyring is None:
        raise MissingKey("customer data cannot be stored without the encryption keys")
    return keyring.seal(json.dumps(personal, ensure_ascii=False), purpose=_purpose(refund_id))


def open_personal(keyring: Keyring, refund_id: str, sealed: str) -> dict[str, Any]:
    opened: dict[str, Any] = json.loads(keyring.open(sealed, purpose=_purpose(refund_id)))
    return opened


def personal_columns(
    keyring: Keyring | None, refund_id: str, request: dict[str, Any]
) -> dict[str, Any]:
    """The ``refunds`` columns for ``request``: the request without its personal data, and
    that data sealed and masked. Without a keyring, a request carrying personal data is
    refused (:class:`MissingKey`): it is never stored in plaintext."""
    stored, personal = split_personal(request)
    if not personal:
        return {"request": stored, "personal_sealed": None, "personal_masked": None}
    return {
        "request": stored,
        "personal_sealed": seal_personal(keyring, refund_id, personal),
        "personal_masked": masked(personal),
    }
