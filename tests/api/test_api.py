"""The HTTP API as clients use it: auth and roles, merchant isolation, mass assignment, the
idempotency contract, problem+json codes, the refund flow and webhooks."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from refundflow.db.engine import session_scope
from refundflow.db.models import IdempotencyKeyRow, RefundRow
from refundflow.db.repository import list_audit
from refundflow.domain.quote import Quote
from refundflow.domain.states import PayoutEvent, PayoutStatus, RefundStatus
from refundflow.workflows.client import workflow_id
from refundflow.workflows.refund import RefundWorkflow
from tests.api.conftest import Api

REFUND = {"order_id": "o-1", "items": [{"line_id": "l1", "quantity": 1}], "reason": "LATE_DELIVERY"}


async def start(api: Api, key: str = "k-1", body: dict[str, Any] | None = None) -> Any:
    response = await api.call(
        "client", "POST", "/v1/refunds", json=body or REFUND, headers={"Idempotency-Key": key}
    )
    return response


def refund_rows(api: Api) -> list[RefundRow]:
    with session_scope(api.engine, readonly=True) as s:
        from sqlmodel import select

        return list(s.exec(select(RefundRow)).all())


async def test_orders_and_refunds_need_a_key(api: Api) -> None:
    none = await api.call(None, "GET", "/v1/orders/o-1")
    assert none.status_code == 401
    assert none.headers["content-type"] == "application/problem+json"
    assert none.json()["code"] == "unauthorized"
    bad = await api.http.get("/v1/orders/o-1", headers={"Authorization": "Bearer rf_nope"})
    assert bad.status_code == 401


# role -> may it call (method, path)? Everything else must answer 403 for that role.
MATRIX: list[tuple[str, str, set[str], dict[str, Any] | None]] = [
    ("PUT", "/v1/orders/o-9", {"client", "admin"}, None),
    ("GET", "/v1/orders/o-1", {"client", "approver", "warehouse", "ops", "admin"}, None),
    ("POST", "/v1/refunds/quote", {"client", "admin"}, REFUND),
    ("GET", "/v1/refunds", {"client", "approver", "warehouse", "ops", "admin"}, None),
    (
        "POST",
        "/v1/refunds/r-x/decisions",
        {"approver", "admin"},
        {"decision": "APPROVE", "quote_fingerprint": "x"},
    ),
    ("POST", "/v1/refunds/r-x/return-inspection", {"warehouse", "admin"}, {}),
    (
        "POST",
        "/v1/refunds/r-x/supplier-response",
        {"warehouse", "ops", "admin"},
        {"supplier_ref": "s", "can_cancel": True},
    ),
    ("POST", "/v1/refunds/r-x/customer-confirmation", {"client", "admin"}, {"confirmed": True}),
    ("POST", "/v1/refunds/r-x/receipt", {"client", "admin"}, {"received": True}),
    ("POST", "/v1/refunds/r-x/cancel", {"client", "ops", "admin"}, {}),
    ("POST", "/v1/refunds/r-x/ops-actions", {"ops", "admin"}, {"action": "resume"}),
    ("GET", "/v1/approvals", {"approver", "admin"}, None),
    ("PUT", "/v1/policies/{merchant}", {"admin"}, {}),
    ("GET", "/v1/reports/refunds", {"ops", "approver", "admin"}, None),
]


async def test_role_matrix(api: Api) -> None:
    assert (await api.put_order()).status_code == 200
    for method, template, allowed, body in MATRIX:
        path = template.format(merchant=api.merchant)
        for role in ("client", "approver", "warehouse", "ops", "admin"):
            if path == "/v1/orders/o-9" and body is None:
                payload: Any = (await api.put_order("o-0")).request.content
                response = await api.call(role, method, path, content=payload)
            else:
                response = await api.call(role, method, path, json=body)
            if role in allowed:
                assert response.status_code != 403, (role, method, path, response.text)
            else:
                assert response.status_code == 403, (role, method, path, response.text)
                assert response.json()["code"] == "forbidden"


async def test_other_merchants_see_nothing(api: Api) -> None:
    assert (await api.put_order()).status_code == 200
    created = await start(api)
    refund_id = created.json()["refund_id"]
    for who, method, path, body in [
        ("client-b", "GET", "/v1/orders/o-1", None),
        ("client-b", "GET", f"/v1/refunds/{refund_id}", None),
        ("client-b", "POST", f"/v1/refunds/{refund_id}/cancel", {}),
        (
            "approver-b",
            "POST",
            f"/v1/refunds/{refund_id}/decisions",
            {"decision": "APPROVE", "quote_fingerprint": "x"},
        ),
        ("client-b", "POST", "/v1/refunds/quote", REFUND),
    ]:
        response = await api.call(who, method, path, json=body)
        assert response.status_code == 404, (who, path, response.text)
    listed = await api.call("client-b", "GET", "/v1/refunds")
    assert listed.json()["items"] == []
    assert await api.finish(refund_id) == "COMPLETED"


@pytest.mark.parametrize(
    "extra",
    [
        {"status": "COMPLETED"},
        {"requested_by": "someone-else"},
        {"approved_by": "me"},
        {"total": 1},
    ],
)
async def test_mass_assignment_is_refused(api: Api, extra: dict[str, Any]) -> None:
    assert (await api.put_order()).status_code == 200
    response = await start(api, body={**REFUND, **extra})
    assert response.status_code == 422
    assert response.json()["code"] == "unknown_field"
    assert refund_rows(api) == []
    order = await api.put_order(merchant_id="shop-b")
    assert order.status_code == 422 and order.json()["code"] == "unknown_field"


async def test_idempotency_contract(api: Api) -> None:
    assert (await api.put_order()).status_code == 200
    first = await start(api, "same")
    again = await start(api, "same")
    assert first.status_code == again.status_code == 202
    assert first.json()["refund_id"] == again.json()["refund_id"]
    other = await start(api, "same", {**REFUND, "reason": "NOT_RECEIVED"})
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    missing = await api.call("client", "POST", "/v1/refunds", json=REFUND)
    assert missing.status_code == 400 and missing.json()["code"] == "idempotency_key_required"
    assert await api.finish(first.json()["refund_id"]) == "COMPLETED"
    assert len(refund_rows(api)) == 1


async def test_fifty_concurrent_identical_requests_make_one_refund(api: Api) -> None:
    assert (await api.put_order()).status_code == 200
    responses = await asyncio.gather(*(start(api, "burst") for _ in range(50)))
    codes = sorted({r.status_code for r in responses})
    assert set(codes) <= {202, 409}, codes
    ids = {r.json()["refund_id"] for r in responses if r.status_code == 202}
    assert len(ids) == 1
    for r in responses:
        if r.status_code == 409:
            assert r.json()["code"] == "idempotency_in_flight"
    refund_id = ids.pop()
    assert await api.finish(refund_id) == "COMPLETED"
    assert [r.refund_id for r in refund_rows(api)] == [refund_id]
    # One run: its id comes from the refund id, which comes from the key.
    described = await api.env.client.get_workflow_handle(workflow_id(refund_id)).describe()
    assert described.run_id == described.raw_description.workflow_execution_info.first_run_id


async def test_problem_codes(api: Api) -> None:
    assert (await api.put_order()).status_code == 200
    unknown = await start(api, "u", {**REFUND, "order_id": "nope"})
    assert unknown.status_code == 404 and unknown.json()["code"] == "not_found"
    negative = await start(api, "n", {**REFUND, "items": [{"line_id": "l1", "quantity": -1}]})
    assert negative.status_code == 422 and negative.json()["code"] == "negative_quantity"
    line = await start(api, "l", {**REFUND, "items": [{"line_id": "zz", "quantity": 1}]})
    assert line.status_code == 422 and line.json()["code"] == "unknown_line"
    too_many = await start(api, "m", {**REFUND, "items": [{"line_id": "l1", "quantity": 3}]})
    assert too_many.status_code == 409 and too_many.json()["code"] == "quantity_exceeds_remaining"
    currency = await start(api, "c", {**REFUND, "currency": "USD"})
    assert currency.status_code == 422 and currency.json()["code"] == "currency_mismatch"
    for response in (unknown, negative, line, too_many, currency):
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert {"type", "title", "status", "code", "detail"} <= set(body)
    # Nothing of these was written.
    assert refund_rows(api) == []
    with session_scope(api.engine, readonly=True) as s:
        from sqlmodel import select

        assert list(s.exec(select(IdempotencyKeyRow)).all()) == []


async def test_temporal_unavailable_answers_503_and_writes_nothing(api: Api) -> None:
    assert (await api.put_order()).status_code == 200
    api.http._transport.app.state.temporal = None  # type: ignore[attr-defined]
    response = await start(api, "down")
    assert response.status_code == 503
    assert response.json()["code"] == "temporal_unavailable"
    assert response.headers["retry-after"]
    assert refund_rows(api) == []


async def test_approval_flow_through_the_api(api: Api) -> None:
    big = [{"line_id": "l1", "sku": "TV", "quantity": 1, "unit_price": 300000}]
    pay = (await api.put_order()).json()["order"]["payments"]
    pay[0]["captured"] = 300000
    assert (await api.put_order(lines=big, payments=pay)).status_code == 200
    quote = await api.call("client", "POST", "/v1/refunds/quote", json=REFUND)
    assert quote.status_code == 200 and quote.json()["total"] == 300000
    created = await start(api, "tv")
    refund_id = created.json()["refund_id"]
    for _ in range(50):
        view = (await api.call("approver", "GET", f"/v1/refunds/{refund_id}")).json()
        if view["status"] == "AWAITING_APPROVAL":
            break
        await api.env.sleep(60)
    assert view["status"] == "AWAITING_APPROVAL"
    inbox = await api.call("approver", "GET", "/v1/approvals")
    assert [r["refund_id"] for r in inbox.json()] == [refund_id]
    fingerprint = Quote.model_validate(view["live"]["quote"]).fingerprint()
    stale = await api.call(
        "approver",
        "POST",
        f"/v1/refunds/{refund_id}/decisions",
        json={"decision": "APPROVE", "quote_fingerprint": "0" * 32},
    )
    assert stale.status_code == 409 and stale.json()["code"] == "outdated_quote"
    ok = await api.call(
        "approver",
        "POST",
        f"/v1/refunds/{refund_id}/decisions",
        json={"decision": "APPROVE", "quote_fingerprint": fingerprint},
    )
    assert ok.status_code == 200, ok.text
    # The answer is the status the approval led to: the refund went on to be paid.
    assert ok.json()["accepted"] is True and ok.json()["status"] != "AWAITING_APPROVAL"
    # The refused decision left no trace in the run; the audit trail keeps it.
    with session_scope(api.engine, readonly=True) as session:
        refused = [
            (row.kind, row.data["code"], row.data["message"])
            for row in list_audit(session, refund_id=refund_id)
            if row.kind == "message_refused"
        ]
    assert refused == [("message_refused", "outdated_quote", "decide")]
    self_approval = await api.call(
        "approver2",
        "POST",
        f"/v1/refunds/{refund_id}/decisions",
        json={"decision": "APPROVE", "quote_fingerprint": fingerprint},
    )
    assert self_approval.status_code == 409, self_approval.text  # no longer awaiting approval
    assert await api.finish(refund_id) == "COMPLETED"
    report = await api.call("ops", "GET", "/v1/reports/refunds", params={"format": "csv"})
    assert "COMPLETED,CNY,LATE_DELIVERY,1,300000" in report.text
    metrics = await api.http.get("/metrics")
    assert 'refundflow_refunds{status="COMPLETED"} 1.0' in metrics.text


async def test_webhooks_are_verified_deduplicated_and_routed(api: Api) -> None:
    api.sandbox.default_settlement("never")
    assert (await api.put_order()).status_code == 200
    refund_id = (await start(api, "wh")).json()["refund_id"]
    handle = api.env.client.get_workflow_handle_for(RefundWorkflow.run, workflow_id(refund_id))
    for _ in range(50):
        state = await handle.query(RefundWorkflow.view)
        if state.status is RefundStatus.AWAITING_FUNDS:
            break
        await api.env.sleep(60)
    key = state.payouts[0].key
    event = PayoutEvent(
        payout_key=key, status=PayoutStatus.SETTLED, event_id="evt-1", provider_ref="sbx"
    )
    body = event.model_dump_json().encode()
    forged = await api.http.post(
        "/v1/webhooks/sandbox", content=body, headers={"Sandbox-Signature": "t=1,v1=00"}
    )
    assert forged.status_code == 401 and forged.json()["code"] == "invalid_signature"
    assert (await handle.query(RefundWorkflow.view)).payouts[0].status is PayoutStatus.ACCEPTED
    headers = api.sandbox.sign_webhook(body)
    accepted = await api.http.post("/v1/webhooks/sandbox", content=body, headers=headers)
    assert accepted.status_code == 202 and accepted.json()["status"] == "accepted"
    duplicate = await api.http.post("/v1/webhooks/sandbox", content=body, headers=headers)
    assert duplicate.json()["status"] == "duplicate"
    assert await api.finish(refund_id) == "COMPLETED"
    assert json.loads(body)["payout_key"].startswith(refund_id)
