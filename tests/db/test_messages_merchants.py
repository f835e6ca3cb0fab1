from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from refundflow.db.core import table_of
from refundflow.db.models import IdempotencyKeyRow, OutboxRow, WebhookEventRow
from refundflow.db.repo_messages import _LEASE_OF_REFUND
from refundflow.db.repo_timeline import OutboxMark, mark_outbox_rows
from refundflow.db.repository import (
    ClaimOutcome,
    adjust_customer_balance,
    claim_idempotency_key,
    claim_outbox,
    complete_idempotency_key,
    create_api_key,
    enqueue_outbox,
    get_policy,
    latest_policy,
    lease_outbox,
    record_webhook_event,
    release_idempotency_key,
    revoke_api_key,
    save_policy,
    upsert_merchant,
    verify_api_key,
)
from refundflow.domain.errors import DomainError
from refundflow.domain.policy import DEFAULT_POLICY, Policy
from tests.db.builders import MERCHANT
from tests.db.helpers import count

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def _claim(session: Session, hash_: str, key: str = "idem-1") -> ClaimOutcome:
    claim = claim_idempotency_key(session, merchant_id=MERCHANT, key=key, request_hash=hash_)
    return claim.outcome


def test_idempotency_key_lifecycle(session: Session, engine: Engine) -> None:
    assert _claim(session, "h1") is ClaimOutcome.NEW
    session.commit()
    assert _claim(session, "h1") is ClaimOutcome.IN_FLIGHT
    assert _claim(session, "h2") is ClaimOutcome.MISMATCH

    complete_idempotency_key(
        session, merchant_id=MERCHANT, key="idem-1", response={"refund_id": "r-1"}, refund_id="r-1"
    )
    session.commit()
    done = claim_idempotency_key(session, merchant_id=MERCHANT, key="idem-1", request_hash="h1")
    assert (done.outcome, done.refund_id, done.response) == (
        ClaimOutcome.DONE,
        "r-1",
        {"refund_id": "r-1"},
    )
    assert _claim(session, "h2") is ClaimOutcome.MISMATCH
    with pytest.raises(DomainError) as err:
        complete_idempotency_key(session, merchant_id=MERCHANT, key="idem-1", response={"x": 1})
    assert err.value.code == "key_completed"
    assert not release_idempotency_key(session, merchant_id=MERCHANT, key="idem-1")  # answered
    session.commit()
    assert count(engine, IdempotencyKeyRow) == 1


def test_idempotency_key_release_allows_a_retry(session: Session) -> None:
    assert _claim(session, "h", key="idem-2") is ClaimOutcome.NEW
    assert release_idempotency_key(session, merchant_id=MERCHANT, key="idem-2")
    assert _claim(session, "h", key="idem-2") is ClaimOutcome.NEW
    session.commit()


def test_a_stale_in_flight_key_is_taken_over_once(session: Session) -> None:
    start = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)

    def claim(at: datetime, hash_: str = "h") -> ClaimOutcome:
        return claim_idempotency_key(
            session, merchant_id=MERCHANT, key="idem-3", request_hash=hash_, at=at
        ).outcome

    assert claim(start) is ClaimOutcome.NEW
    session.commit()
    # Its API process died: within two minutes the key is still busy, after that the next
    # caller takes it over, and the one after that finds it busy again.
    assert claim(start + timedelta(seconds=90)) is ClaimOutcome.IN_FLIGHT
    later = start + timedelta(minutes=3)
    assert claim(later, "other") is ClaimOutcome.MISMATCH  # a different request never does
    assert claim(later) is ClaimOutcome.NEW
    session.commit()
    assert claim(later + timedelta(seconds=1)) is ClaimOutcome.IN_FLIGHT


def test_webhook_events_are_deduplicated(session: Session, engine: Engine) -> None:
    assert record_webhook_event(session, provider="alipay", event_id="e-1", payload={"n": 1})
    session.commit()
    assert not record_webhook_event(session, provider="alipay", event_id="e-1", payload={"n": 2})
    assert record_webhook_event(session, provider="wechat", event_id="e-1", payload={})
    session.commit()
    assert count(engine, WebhookEventRow) == 2


def test_outbox_rows_are_claimed_and_marked(session: Session) -> None:
    first = enqueue_outbox(
        session, refund_id="r-1", channel="customer", template="refund_received", payload={"a": 1}
    )
    enqueue_outbox(session, refund_id=None, channel="ops", template="escalation", locale="zh-CN")
    session.commit()
    assert first.id is not None
    pending = claim_outbox(session, limit=10)
    assert [(o.template, o.locale) for o in pending] == [
        ("refund_received", "en"),
        ("escalation", "zh-CN"),
    ]
    mark_outbox_rows(session, [OutboxMark(outbox_id=first.id, sent=True)])
    retry = pending[1].id
    assert retry is not None
    mark_outbox_rows(session, [OutboxMark(outbox_id=retry, sent=False, error="smtp down")])
    session.commit()
    left = claim_outbox(session)
    assert [(o.template, o.attempts, o.last_error) for o in left] == [
        ("escalation", 1, "smtp down")
    ]
    session.commit()


def test_a_round_marks_its_rows_in_one_statement(session: Session) -> None:
    rows = [
        enqueue_outbox(session, refund_id="r-1", channel="customer", template=f"t{n}")
        for n in range(3)
    ]
    session.commit()
    ids = [row.id for row in rows]
    assert None not in ids
    first, second, third = (int(i) for i in ids if i is not None)
    marks = [
        OutboxMark(outbox_id=first, sent=True),
        OutboxMark(outbox_id=second, sent=False, error="smtp down"),
        OutboxMark(outbox_id=third, sent=False, error="refused", give_up=True),
    ]
    mark_outbox_rows(session, marks, at=NOW)
    session.commit()
    # The session's copies were expired by the statement: read back, not as enqueued.
    assert [(r.status, r.attempts, r.last_error) for r in rows] == [
        ("sent", 1, ""),
        ("pending", 1, "smtp down"),
        ("failed", 1, "refused"),
    ]
    with pytest.raises(DomainError) as err:
        mark_outbox_rows(session, [OutboxMark(outbox_id=third + 100, sent=True)], at=NOW)
    assert err.value.code == "unknown_outbox"
    session.rollback()


def test_policies_are_versioned(session: Session) -> None:
    assert latest_policy(session, merchant_id=MERCHANT) is None
    save_policy(session, merchant_id=MERCHANT, policy=DEFAULT_POLICY)
    v2 = Policy.parse({"version": 2, "return_window_days": {"CHANGED_MIND": 30}})
    save_policy(session, merchant_id=MERCHANT, policy=v2)
    session.commit()
    assert latest_policy(session, merchant_id=MERCHANT) == v2
    assert get_policy(session, merchant_id=MERCHANT, version=1) == DEFAULT_POLICY
    save_policy(session, merchant_id=MERCHANT, policy=v2)  # same document again: fine
    with pytest.raises(DomainError) as err:
        save_policy(session, merchant_id=MERCHANT, policy=Policy.parse({"version": 2}))
    assert err.value.code == "policy_version_exists"
    session.commit()


def test_api_keys_store_only_a_hash(session: Session) -> None:
    row, token = create_api_key(session, merchant_id=MERCHANT, name="shop backend")
    approver, _ = create_api_key(session, merchant_id=MERCHANT, name="fin-1", role="approver")
    session.commit()
    assert (row.role, approver.role) == ("client", "approver")
    assert token not in row.key_hash and len(row.key_hash) == 64
    with pytest.raises(DomainError) as err:
        create_api_key(session, merchant_id=MERCHANT, name="x", role="root")
    assert err.value.code == "invalid_role"
    found = verify_api_key(session, token=token)
    assert found is not None and found.merchant_id == MERCHANT
    assert verify_api_key(session, token=token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert verify_api_key(session, token="garbage") is None
    revoke_api_key(session, key_id=row.key_id)
    session.commit()
    assert verify_api_key(session, token=token) is None


def test_customer_balance_never_goes_negative(session: Session) -> None:
    def adjust(delta: int, customer_id: str = "c-1") -> int:
        return adjust_customer_balance(
            session, merchant_id=MERCHANT, customer_id=customer_id, currency="CNY", delta=delta
        )

    assert adjust(6000) == 6000
    assert adjust(-1000) == 5000
    session.commit()
    with pytest.raises(DomainError) as err:
        adjust(-5001)
    assert err.value.code == "insufficient_balance"
    assert adjust(0) == 5000
    with pytest.raises(DomainError):
        adjust(-1, customer_id="c-2")
    session.commit()


@pytest.mark.parametrize("merchant_id", ["a:b", "", "-shop", "shop 1", "x" * 65, "店铺"])
def test_merchant_ids_outside_the_documented_pattern_are_refused(
    session: Session, merchant_id: str
) -> None:
    with pytest.raises(DomainError) as err:
        upsert_merchant(session, merchant_id=merchant_id)
    assert err.value.code == "invalid_merchant_id"


def test_merchant_ids_in_the_documented_pattern_are_accepted(session: Session) -> None:
    for merchant_id in ("shop-1", "Shop_2.cn", "9" * 64):
        assert upsert_merchant(session, merchant_id=merchant_id).merchant_id == merchant_id


@pytest.mark.parametrize("name", ["", "   "])
def test_api_keys_need_the_name_of_who_holds_them(session: Session, name: str) -> None:
    """Approvals are attributed to the key's name: nameless keys would all be one person."""
    with pytest.raises(DomainError) as err:
        create_api_key(session, merchant_id=MERCHANT, name=name, role="approver")
    assert err.value.code == "key_name_required"


def test_a_refunds_lease_reads_its_own_rows_not_every_pending_one(
    session: Session, engine: Engine, dialect: str
) -> None:
    """A backlog of other refunds' pending notices (a mail server down for a while) must not
    slow down each run's lease of its own: the lease goes through the index by refund."""
    outbox = table_of(OutboxRow)
    now = datetime.now(UTC)
    backlog = [
        {"refund_id": f"r-{n}", "channel": "customer", "template": "t", "payload": {}}
        for n in range(3000)
    ]
    session.execute(
        outbox.insert(),
        [row | {"status": "pending", "created_at": now, "updated_at": now} for row in backlog],
    )
    enqueue_outbox(session, refund_id="r-mine", channel="customer", template="mine", at=now)
    session.commit()
    compiled = _LEASE_OF_REFUND.compile(engine)
    params = compiled.construct_params(
        {"of_refund_id": "r-mine", "now": now, "limit": 10, "until": now}
    )
    with engine.connect() as conn:
        if dialect == "sqlite":
            values = tuple(params[name] for name in compiled.positiontup or ())
            plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + str(compiled), values).all()
        else:
            conn.exec_driver_sql("ANALYZE outbox")
            plan = conn.exec_driver_sql("EXPLAIN " + str(compiled), params).all()
    shown = " ".join(str(step) for step in plan)
    assert "ix_outbox_refund_id_status_id" in shown, shown
    assert [row.template for row in lease_outbox(session, refund_id="r-mine")] == ["mine"]
