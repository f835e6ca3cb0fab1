"""Customer data in the refunds database: sealed, never in plaintext in any table, masked,
revealed with an audit record, resealed on rotation, erased by retention, migrated."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlmodel import Session, SQLModel

from refundflow.crypto import Keyring, MissingKey, new_key_entry
from refundflow.db.engine import session_scope
from refundflow.db.migrate import downgrade, upgrade
from refundflow.db.models import RefundRow
from refundflow.db.personal import mask_document
from refundflow.db.repo_personal import PersonalField
from refundflow.db.repository import (
    PersonalDataAbsent,
    PersonalDataErased,
    create_refund,
    erase_personal,
    expired_personal,
    list_audit,
    reseal_personal,
    reveal_personal,
    upsert_order,
)
from refundflow.db.types import utcnow
from refundflow.domain.states import RefundStatus
from refundflow.settings import get_settings
from tests.db.builders import MERCHANT, order, quote, request
from tests.payload_keys import DB_KEYRING

EMAIL = "liu.yang.customer@example.com"
PHONE = "+86 139 1234 5678"
ACCOUNT = "6222020200445566"
HOLDER = "刘洋 Liu Yang"
PERSONAL = (EMAIL, PHONE, ACCOUNT, HOLDER)
BANK = {
    "holder_name": HOLDER,
    "account_number": ACCOUNT,
    "bank_name": "ICBC",
    "bank_code": "ICBKCNBJ",
    "country": "CN",
    "currency": "CNY",
}


def add_refund(
    session: Session,
    refund_id: str,
    *,
    status: RefundStatus = RefundStatus.COMPLETED,
    days_ago: float = 0,
    keyring: Keyring | None = DB_KEYRING,
) -> RefundRow:
    snap = order(order_id=f"o-{refund_id}")
    upsert_order(session, order=snap)
    return create_refund(
        session,
        refund_id=refund_id,
        order=snap,
        request=request(
            snap,
            contact={"email": EMAIL, "phone": PHONE},
            destination={"kind": "BANK_TRANSFER", "bank_account": BANK},
        ),
        quote=quote(snap, {"p1": 4000}),
        requested_by="desk-1",
        policy_version=1,
        status=status,
        at=utcnow() - timedelta(days=days_ago),
        keyring=keyring,
    )


def every_table(engine: Engine) -> str:
    """Every row of every table, as text: where plaintext would show."""
    with engine.connect() as conn:
        return "\n".join(
            repr(row)
            for table in SQLModel.metadata.sorted_tables
            for row in conn.execute(table.select()).all()
        )


def test_customer_data_is_sealed_and_masked(session: Session, engine: Engine) -> None:
    row = add_refund(session, "rf-seal")
    session.commit()
    dump = every_table(engine)
    for value in PERSONAL:
        assert value not in dump and json.dumps(value)[1:-1] not in dump, value
    assert row.personal_sealed is not None and row.personal_sealed.startswith("rfsealed1:test-1:")
    assert row.personal_masked == {
        "email": "l****@example.com",
        "phone": "****5678",
        "account_number": "****5566",
        "holder_name": "刘****",
    }
    # The request still validates and keeps what the books need.
    account = row.request["destination"]["bank_account"]
    assert account["account_number"] == "****5566" and account["currency"] == "CNY"
    assert row.request["contact"]["email"] is None


def test_without_keys_customer_data_is_refused_not_stored(session: Session) -> None:
    with pytest.raises(MissingKey):
        add_refund(session, "rf-nokey", keyring=None)


def test_a_reveal_is_recorded_with_who_and_why_never_the_value(session: Session) -> None:
    add_refund(session, "rf-reveal")
    value = reveal_personal(
        session,
        refund_id="rf-reveal",
        field="account_number",
        actor="ops-alice",
        reason="customer asked on the phone",
        keyring=DB_KEYRING,
    )
    assert value == ACCOUNT
    (event,) = [e for e in list_audit(session, refund_id="rf-reveal") if "revealed" in e.kind]
    assert (event.kind, event.actor) == ("personal_data_revealed", "ops-alice")
    assert event.data == {"field": "account_number", "reason": "customer asked on the phone"}
    stranger = Keyring.parse(new_key_entry("test-1"), source="another key")
    with pytest.raises(Exception, match="does not open"):
        reveal_personal(
            session,
            refund_id="rf-reveal",
            field="phone",
            actor="x",
            reason="why",
            keyring=stranger,
        )


def test_rotation_reseals_under_the_new_key_and_plaintext_left_by_old_workers(
    session: Session,
) -> None:
    add_refund(session, "rf-rotate")
    # A worker from before sealing wrote a plaintext request during a rolling deploy.
    legacy = add_refund(session, "rf-legacy")
    legacy.request = {**legacy.request, "contact": {"email": EMAIL, "phone": None}}
    legacy.personal_sealed = legacy.personal_masked = None
    session.add(legacy)
    session.flush()
    rotated = Keyring.parse(
        new_key_entry("test-2") + "\n" + ",".join(_entries(DB_KEYRING)), source="rotation"
    )
    assert reseal_personal(session, keyring=rotated) == 2
    assert reseal_personal(session, keyring=rotated) == 0  # nothing left to do
    checks: list[tuple[str, PersonalField, str]] = [
        ("rf-rotate", "phone", PHONE),
        ("rf-legacy", "email", EMAIL),
    ]
    for refund_id, field, wanted in checks:
        row = session.get(RefundRow, refund_id)
        assert row is not None and row.personal_sealed is not None
        assert row.personal_sealed.startswith("rfsealed1:test-2:")
        assert EMAIL not in json.dumps(row.request)
        got = reveal_personal(
            session, refund_id=refund_id, field=field, actor="a", reason="why", keyring=rotated
        )
        assert got == wanted


def test_erasure_keeps_amounts_and_the_audit_trail(session: Session, engine: Engine) -> None:
    add_refund(session, "rf-old", days_ago=40)
    add_refund(session, "rf-recent", days_ago=1)
    add_refund(session, "rf-open", status=RefundStatus.PAYING, days_ago=40)
    due = expired_personal(session, finished_before=utcnow() - timedelta(days=30), limit=10)
    assert due == ["rf-old"]
    assert erase_personal(session, refund_id="rf-old")
    assert not erase_personal(session, refund_id="rf-old")  # once
    row = session.get(RefundRow, "rf-old")
    assert row is not None and row.total == 4000 and row.quote
    assert row.personal_sealed is None and row.personal_masked is None
    assert row.personal_erased_at is not None
    assert [e.kind for e in list_audit(session, refund_id="rf-old")][-1] == "personal_data_erased"
    with pytest.raises(PersonalDataErased):
        reveal_personal(
            session, refund_id="rf-old", field="email", actor="a", reason="why", keyring=DB_KEYRING
        )
    with pytest.raises(PersonalDataAbsent):
        reveal_personal(
            session, refund_id="nope", field="email", actor="a", reason="why", keyring=DB_KEYRING
        )


def test_masking_reaches_every_depth() -> None:
    doc: dict[str, Any] = {
        "payouts": [{"bank_account": BANK, "amount": 4000}],
        "inbox": {"ops": {"destination": {"bank_account": BANK}}},
        "contact": {"email": EMAIL, "phone": PHONE},
    }
    masked = json.dumps(mask_document(doc), ensure_ascii=False)
    assert all(value not in masked for value in PERSONAL)
    assert "****5566" in masked and "4000" in masked


def test_the_migration_seals_existing_rows(
    db_url: str, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    with session_scope(engine) as session:
        from refundflow.db.repository import upsert_merchant

        upsert_merchant(session, merchant_id=MERCHANT)
        add_refund(session, "rf-before")
    downgrade(db_url, "0002")
    # As a refund stood before 0003: the customer's details in its request.
    plain = request(
        order(order_id="o-rf-before"),
        contact={"email": EMAIL, "phone": PHONE},
        destination={"kind": "BANK_TRANSFER", "bank_account": BANK},
    ).model_dump(mode="json")
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE refunds SET request = :r WHERE refund_id = 'rf-before'"),
            {"r": json.dumps(plain)},
        )
    monkeypatch.delenv("REFUNDFLOW_ENCRYPTION_KEYS", raising=False)
    monkeypatch.setenv("REFUNDFLOW_DATA_DIR", "/nonexistent")
    get_settings.cache_clear()
    with pytest.raises(RuntimeError, match="seals the customer data of existing refunds"):
        upgrade(db_url)
    monkeypatch.setenv("REFUNDFLOW_ENCRYPTION_KEYS", ",".join(_entries(DB_KEYRING)))
    get_settings.cache_clear()
    try:
        upgrade(db_url)
    finally:
        get_settings.cache_clear()
    assert all(value not in every_table(engine) for value in PERSONAL)
    with session_scope(engine) as session:
        got = reveal_personal(
            session,
            refund_id="rf-before",
            field="account_number",
            actor="a",
            reason="why",
            keyring=DB_KEYRING,
        )
    assert got == ACCOUNT


def _entries(keyring: Keyring) -> list[str]:
    import base64

    return [f"{k}:{base64.b64encode(v).decode()}" for k, v in keyring.keys.items()]
