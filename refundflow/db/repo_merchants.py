"""Merchants, their API keys, refund policies and customers' store balances."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import bindparam
from sqlmodel import Session, col, select

from refundflow.crypto import Keyring, is_sealed
from refundflow.db.core import flush_pending, table_of, upsert_into
from refundflow.db.guards import atomic, insert_once
from refundflow.db.models import (
    API_KEY_ROLES,
    ApiKeyRow,
    CustomerBalanceRow,
    MerchantRow,
    PolicyRow,
)
from refundflow.db.types import utcnow
from refundflow.domain.errors import DomainError, InvalidInput
from refundflow.domain.policy import Policy

_KEY_PREFIX = "rf"

MERCHANT_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""A merchant id: 1 to 64 ASCII letters, digits, ``.``, ``_`` or ``-``, starting with a letter
or digit. It appears in refund ids' derivation, search attributes and ledger account names,
so it carries no separators (``:``), spaces or other characters those would have to escape."""


def check_merchant_id(merchant_id: str) -> str:
    if MERCHANT_ID_PATTERN.fullmatch(merchant_id) is None:
        raise InvalidInput(
            f"merchant id {merchant_id!r} must be 1 to 64 letters, digits, '.', '_' or '-',"
            " starting with a letter or digit",
            code="invalid_merchant_id",
        )
    return merchant_id


def upsert_merchant(
    session: Session, *, merchant_id: str, name: str = "", at: datetime | None = None
) -> MerchantRow:
    with atomic(session):
        row = session.get(MerchantRow, merchant_id)
        if row is None:
            check_merchant_id(merchant_id)
            row = MerchantRow(merchant_id=merchant_id, created_at=at or utcnow())
        row.name = name
        session.add(row)
    return row


def get_merchant(session: Session, *, merchant_id: str) -> MerchantRow | None:
    return session.get(MerchantRow, merchant_id)


WEBHOOK_SECRET_PREFIX = "rfwh_"


@dataclass(frozen=True)
class MerchantWebhook:
    """Where a merchant's refund events go, and the secret they are signed with."""

    url: str
    secret: str = field(repr=False)


def _webhook_purpose(merchant_id: str) -> str:
    return f"merchants.webhook_secret:{merchant_id}"


def set_merchant_webhook(
    session: Session,
    *,
    merchant_id: str,
    url: str | None,
    keyring: Keyring,
    secret: str | None = None,
) -> MerchantWebhook | None:
    """Point the merchant's notification webhook at ``url`` (``None`` switches it off and
    forgets the secret). Without ``secret`` the current one is kept, or a new one is made:
    read it from the answer and hand it to the merchant. The secret is stored sealed with
    ``keyring`` (see :mod:`refundflow.crypto`)."""
    if url is not None and not url.startswith(("https://", "http://")):
        raise InvalidInput(f"webhook URL {url!r} must be http(s)", code="invalid_webhook_url")
    purpose = _webhook_purpose(merchant_id)
    with atomic(session):
        row = session.get(MerchantRow, merchant_id)
        if row is None:
            raise InvalidInput(f"unknown merchant {merchant_id!r}", code="unknown_merchant")
        row.webhook_url = url
        if url is None:
            row.webhook_secret = None
        else:
            if secret is None and row.webhook_secret is not None:
                secret = _open_secret(keyring, row.webhook_secret, purpose)
            secret = secret or WEBHOOK_SECRET_PREFIX + secrets.token_urlsafe(32)
            row.webhook_secret = keyring.seal(secret, purpose=purpose)
        session.add(row)
    return None if url is None or secret is None else MerchantWebhook(url=url, secret=secret)


def merchant_webhook(
    session: Session, *, merchant_id: str, keyring: Keyring
) -> MerchantWebhook | None:
    """The merchant's webhook with its secret opened, or ``None`` when it has none."""
    row = session.get(MerchantRow, merchant_id)
    if row is None or not row.webhook_url or not row.webhook_secret:
        return None
    secret = _open_secret(keyring, row.webhook_secret, _webhook_purpose(merchant_id))
    return MerchantWebhook(url=row.webhook_url, secret=secret)


def reseal_webhook_secrets(session: Session, *, keyring: Keyring) -> int:
    """Seal with the current key every webhook secret stored in plaintext (from before
    secrets were sealed) or under an older key; how many were sealed again."""
    count = 0
    with atomic(session):
        stored = select(MerchantRow).where(col(MerchantRow.webhook_secret).is_not(None))
        for row in session.exec(stored).all():
            assert row.webhook_secret is not None
            if keyring.needs_reseal(row.webhook_secret):
                purpose = _webhook_purpose(row.merchant_id)
                secret = _open_secret(keyring, row.webhook_secret, purpose)
                row.webhook_secret = keyring.seal(secret, purpose=purpose)
                session.add(row)
                count += 1
    return count


def _open_secret(keyring: Keyring, stored: str, purpose: str) -> str:
    # A value from before sealing is still plaintext until reseal_webhook_secrets has run.
    return keyring.open(stored, purpose=purpose) if is_sealed(stored) else stored


KEY_NAME_MAX_LENGTH = 128
"""Names are the actor ids runs record (approver, inspector, requester), bounded like them."""


def _hash(token: str) -> str:
    # API keys are 256-bit random secrets, so a fast hash is enough; a slow password hash
    # would only add latency to every request.
    return hashlib.sha256(token.encode()).hexdigest()


def create_api_key(
    session: Session,
    *,
    merchant_id: str,
    name: str,
    role: str = "client",
    at: datetime | None = None,
) -> tuple[ApiKeyRow, str]:
    """A new key for ``merchant_id``: the row (hash only) and the token, shown this once.

    ``name`` is who holds the key: requests and approvals are attributed to it, so it is
    required (keys without one would all be the same person to the two-approver rule)."""
    name = name.strip()
    if not name or len(name) > KEY_NAME_MAX_LENGTH:
        raise InvalidInput(
            f"an API key needs the name of who holds it (1 to {KEY_NAME_MAX_LENGTH} characters)",
            code="key_name_required",
        )
    if role not in API_KEY_ROLES:
        raise InvalidInput(
            f"unknown role {role!r}; one of {', '.join(API_KEY_ROLES)}", code="invalid_role"
        )
    key_id = secrets.token_hex(8)
    token = f"{_KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    row = ApiKeyRow(
        key_id=key_id,
        merchant_id=merchant_id,
        name=name,
        role=role,
        key_hash=_hash(token),
        created_at=at or utcnow(),
    )
    with atomic(session):
        if session.get(MerchantRow, merchant_id) is None:
            raise InvalidInput(f"unknown merchant {merchant_id!r}", code="unknown_merchant")
        session.add(row)
    return row, token


def verify_api_key(session: Session, *, token: str) -> ApiKeyRow | None:
    """The live key ``token`` belongs to, or ``None`` (unknown, malformed or revoked)."""
    prefix, _, rest = token.partition("_")
    key_id, _, _secret = rest.partition("_")
    if prefix != _KEY_PREFIX or not key_id:
        return None
    row = session.get(ApiKeyRow, key_id)
    if row is None or row.revoked_at is not None:
        return None
    return row if hmac.compare_digest(row.key_hash, _hash(token)) else None


def revoke_api_key(session: Session, *, key_id: str, at: datetime | None = None) -> None:
    with atomic(session):
        row = session.get(ApiKeyRow, key_id)
        if row is None:
            raise InvalidInput(f"unknown API key {key_id!r}", code="unknown_api_key")
        if row.revoked_at is None:
            row.revoked_at = at or utcnow()
            session.add(row)


def save_policy(
    session: Session, *, merchant_id: str, policy: Policy, at: datetime | None = None
) -> PolicyRow:
    """Store ``policy`` under its version. Versions are immutable: saving the same document
    again is a no-op, a different document under a used version is refused."""
    document = policy.model_dump(mode="json")
    existing = session.get(PolicyRow, (merchant_id, policy.version))
    if existing is None:
        row = PolicyRow(
            merchant_id=merchant_id,
            version=policy.version,
            document=document,
            created_at=at or utcnow(),
        )
        if session.get(MerchantRow, merchant_id) is None:
            raise InvalidInput(f"unknown merchant {merchant_id!r}", code="unknown_merchant")
        if insert_once(session, row, constraint="pk_policies"):
            return row
        existing = session.get(PolicyRow, (merchant_id, policy.version))
    if existing is None or existing.document != document:
        raise DomainError(
            f"policy version {policy.version} of {merchant_id} exists with another document; "
            "publish a new version",
            code="policy_version_exists",
        )
    return existing


# Built once (refundflow.db.core): every review and second check reads the policy.
_POLICIES = table_of(PolicyRow)
_OF_MERCHANT = _POLICIES.select().where(_POLICIES.c.merchant_id == bindparam("merchant_id"))
_LATEST_POLICY = (
    _OF_MERCHANT.with_only_columns(_POLICIES.c.document)
    .order_by(_POLICIES.c.version.desc())
    .limit(1)
)
_POLICY = _OF_MERCHANT.with_only_columns(_POLICIES.c.document).where(
    _POLICIES.c.version == bindparam("version")
)


def latest_policy(session: Session, *, merchant_id: str) -> Policy | None:
    flush_pending(session)  # a Core read: what the session holds unwritten counts too
    document = session.execute(_LATEST_POLICY, {"merchant_id": merchant_id}).scalar()
    return None if document is None else Policy.model_validate(document)


def get_policy(session: Session, *, merchant_id: str, version: int) -> Policy | None:
    params = {"merchant_id": merchant_id, "version": version}
    flush_pending(session)
    document = session.execute(_POLICY, params).scalar()
    return None if document is None else Policy.model_validate(document)


_BALANCES = table_of(CustomerBalanceRow)


def adjust_customer_balance(
    session: Session,
    *,
    merchant_id: str,
    customer_id: str,
    currency: str,
    delta: int,
    at: datetime | None = None,
) -> int:
    """Add ``delta`` (negative to spend) to the store balance; returns the new balance.

    A balance never goes below zero: the CHECK refuses it (``insufficient_balance``).
    """
    now = at or utcnow()
    table = _BALANCES
    if delta < 0:
        # A debit only changes a balance that covers it: no row back means it did not.
        balance = session.execute(
            table.update()
            .where(
                table.c.merchant_id == merchant_id,
                table.c.customer_id == customer_id,
                table.c.currency == currency,
                table.c.balance + delta >= 0,
            )
            .values(balance=table.c.balance + delta, updated_at=now)
            .returning(table.c.balance)
        ).scalar()
        if balance is None:
            raise DomainError(
                "the customer balance cannot go below zero", code="insufficient_balance"
            )
        return int(balance)
    # A credit: the first one creates the wallet, later ones (or one racing it) add to it; one
    # statement either way.
    values = upsert_into(session, table).values(
        merchant_id=merchant_id,
        customer_id=customer_id,
        currency=currency,
        balance=delta,
        updated_at=now,
    )
    statement = values.on_conflict_do_update(
        index_elements=[table.c.merchant_id, table.c.customer_id, table.c.currency],
        set_={"balance": table.c.balance + values.excluded.balance, "updated_at": now},
    ).returning(table.c.balance)
    with atomic(session):  # an amount over the column's bound is refused, as any write
        balance = session.execute(statement).scalar_one()
    return int(balance)
