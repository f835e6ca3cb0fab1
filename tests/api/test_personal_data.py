"""Customer data through the HTTP API: masked in every answer, revealed in full to ops and
admins only (and recorded), never in a log line."""

from __future__ import annotations

import json
import logging

import pytest

from refundflow.db.engine import session_scope
from refundflow.db.repository import list_audit
from tests.api.conftest import Api

EMAIL = "zhou.min.customer@example.com"
PHONE = "+86 137 5555 0199"
ACCOUNT = "6222020200778899"
HOLDER = "周敏 Zhou Min"
PERSONAL = (EMAIL, PHONE, ACCOUNT, HOLDER)
REFUND = {
    "order_id": "o-1",
    "items": [{"line_id": "l1", "quantity": 1}],
    "reason": "LATE_DELIVERY",
    "contact": {"email": EMAIL, "phone": PHONE},
    "destination": {
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
}


def assert_private(text: str) -> None:
    for value in PERSONAL:
        assert value not in text and json.dumps(value)[1:-1] not in text, value


async def test_customer_data_is_masked_revealed_to_ops_and_never_logged(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    assert (await api.put_order()).status_code == 200
    started = await api.call(
        "client", "POST", "/v1/refunds", json=REFUND, headers={"Idempotency-Key": "pii-1"}
    )
    assert started.status_code == 202, started.text
    refund_id = started.json()["refund_id"]
    assert await api.finish(refund_id) == "COMPLETED"

    shown = await api.call("client", "GET", f"/v1/refunds/{refund_id}")
    assert_private(shown.text)
    body = shown.json()
    assert body["customer"] == {
        "email": "z****@example.com",
        "phone": "****0199",
        "account_number": "****8899",
        "holder_name": "周****",
    }
    # The run's own view names the account it paid: masked too.
    (payout,) = body["live"]["payouts"]
    assert payout["bank_account"]["account_number"] == "****8899"
    listed = await api.call("client", "GET", "/v1/refunds")
    assert_private(listed.text)

    path = f"/v1/refunds/{refund_id}/personal-data"
    ask = {"field": "account_number", "reason": "bank asks to confirm the account"}
    for who, status in (("client", 403), ("approver", 403), ("client-b", 403), (None, 401)):
        refused = await api.call(who, "POST", path, json=ask)
        assert refused.status_code == status, who
        assert_private(refused.text)
    revealed = await api.call("ops", "POST", path, json=ask)
    assert revealed.status_code == 200, revealed.text
    assert revealed.json() == {"refund_id": refund_id, "field": "account_number", "value": ACCOUNT}
    assert revealed.headers["cache-control"] == "no-store"
    phone = await api.call("admin", "POST", path, json={"field": "phone", "reason": "callback"})
    assert phone.json()["value"] == PHONE
    bad = await api.call("ops", "POST", path, json={"field": "iban", "reason": "x" * 5})
    assert bad.status_code == 422 and bad.json()["code"] == "validation_error"
    missing = await api.call("ops", "POST", "/v1/refunds/rf_nope/personal-data", json=ask)
    assert missing.status_code == 404

    with session_scope(api.engine, readonly=True) as session:
        events = list_audit(session, refund_id=refund_id)
    reveals = [(e.actor, e.data["field"]) for e in events if e.kind == "personal_data_revealed"]
    assert reveals == [("ops-1", "account_number"), ("admin-1", "phone")]
    assert_private(json.dumps([e.data for e in events], ensure_ascii=False))

    # Whatever the API, the worker and the SDK logged on the way.
    assert caplog.records
    assert_private("\n".join(r.getMessage() for r in caplog.records))
