"""The Idempotency-Key contract under retries: the key is looked up before the quote, so a
replay of a refund of everything that remains answers the refund it started; a retry of a
request whose run already exists (an interrupted first attempt) answers that refund; and every
refund id given out resolves, even for a refund that lost the race for the order's money."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlmodel import select

from refundflow.db.engine import session_scope
from refundflow.db.models import IdempotencyKeyRow
from refundflow.db.repository import list_audit
from refundflow.db.types import utcnow
from refundflow.domain.states import RefundStatus
from refundflow.workflows.client import refund_id_for
from tests.api.conftest import Api

WHOLE_LINE = {
    "order_id": "o-1",
    "items": [{"line_id": "l1", "quantity": 2}],
    "reason": "LATE_DELIVERY",
}
"""Everything the test order has: a second identical quote would find nothing left."""


async def post(api: Api, key: str, body: dict[str, Any] = WHOLE_LINE) -> httpx.Response:
    return await api.call(
        "client", "POST", "/v1/refunds", json=body, headers={"Idempotency-Key": key}
    )


async def reserved(api: Api, refund_id: str) -> None:
    """Until the run has reserved the order's money (its row exists)."""
    for _ in range(50):
        response = await api.call("client", "GET", f"/v1/refunds/{refund_id}")
        if response.status_code == 200:
            return
        await api.env.sleep(1)
    raise AssertionError(f"{refund_id} never reserved")


def key_row(api: Api, key: str) -> IdempotencyKeyRow:
    with session_scope(api.engine, readonly=True) as s:
        rows = s.exec(select(IdempotencyKeyRow).where(IdempotencyKeyRow.key == key)).all()
    assert len(rows) == 1
    return rows[0]


async def test_a_replayed_whole_line_refund_answers_the_same_refund(api: Api) -> None:
    assert (await api.put_order()).status_code == 200
    first = await post(api, "whole")
    assert first.status_code == 202, first.text
    refund_id = first.json()["refund_id"]
    await reserved(api, refund_id)  # nothing remains for a second quote

    again = await post(api, "whole")
    assert again.status_code == 202, again.text
    assert again.json()["refund_id"] == refund_id
    other = await post(api, "whole", {**WHOLE_LINE, "reason": "NOT_RECEIVED"})
    assert other.status_code == 422, other.text
    assert other.json()["code"] == "idempotency_key_reused"

    assert await api.finish(refund_id) == "COMPLETED"
    late = await post(api, "whole")
    assert late.status_code == 202 and late.json()["refund_id"] == refund_id


async def test_concurrent_replays_of_a_whole_line_refund_never_answer_over_refund(
    api: Api,
) -> None:
    assert (await api.put_order()).status_code == 200
    burst = await asyncio.gather(*(post(api, "whole-burst") for _ in range(10)))
    ids = {r.json()["refund_id"] for r in burst if r.status_code == 202}
    for response in burst:
        assert response.status_code in (202, 409), response.text
        if response.status_code == 409:
            assert response.json()["code"] == "idempotency_in_flight", response.text
    assert len(ids) == 1
    refund_id = ids.pop()
    await reserved(api, refund_id)
    # The first attempt is answered now: every replay is the refund it started.
    replays = await asyncio.gather(*(post(api, "whole-burst") for _ in range(10)))
    assert {(r.status_code, r.json().get("refund_id")) for r in replays} == {(202, refund_id)}
    assert await api.finish(refund_id) == "COMPLETED"


@pytest.mark.parametrize("interruption", ["released", "stale_in_flight"])
async def test_a_retry_after_an_interrupted_first_attempt_answers_the_started_refund(
    api: Api, interruption: str
) -> None:
    """The first attempt started the run but its answer was never recorded: the API process
    died (the claim stays in flight past the takeover) or released the claim."""
    assert (await api.put_order()).status_code == 200
    body = {**WHOLE_LINE, "items": [{"line_id": "l1", "quantity": 1}]}
    first = await post(api, "cut", body)
    assert first.status_code == 202, first.text
    refund_id = first.json()["refund_id"]
    assert await api.finish(refund_id) == "COMPLETED"
    with session_scope(api.engine) as s:
        row = s.exec(select(IdempotencyKeyRow).where(IdempotencyKeyRow.key == "cut")).one()
        if interruption == "released":
            s.delete(row)
        else:
            row.state, row.response = "in_flight", None
            row.updated_at = utcnow() - timedelta(minutes=10)
            s.add(row)

    retry = await post(api, "cut", body)
    assert retry.status_code == 202, retry.text
    assert retry.json()["refund_id"] == refund_id
    assert retry.json()["status"] == "COMPLETED"
    assert key_row(api, "cut").state == "done"
    again = await post(api, "cut", body)
    assert again.status_code == 202 and again.json()["refund_id"] == refund_id


async def test_every_refund_id_given_out_resolves_after_a_reservation_race(api: Api) -> None:
    assert (await api.put_order()).status_code == 200
    burst = await asyncio.gather(*(post(api, f"race-{i}") for i in range(20)))
    given = [r.json()["refund_id"] for r in burst if r.status_code == 202]
    for response in burst:
        if response.status_code != 202:  # the quote saw nothing left: no id was given out
            assert response.json()["code"] == "quantity_exceeds_remaining", response.text
    assert len(given) >= 2, "no race: only one request got an id"

    finals = {refund_id: await api.finish(refund_id) for refund_id in given}
    assert sorted(finals.values()).count("COMPLETED") == 1, finals
    assert set(finals.values()) == {"COMPLETED", "REJECTED"}
    listed = await api.call("client", "GET", "/v1/refunds", params={"order_id": "o-1"})
    assert {r["refund_id"] for r in listed.json()["items"]} == set(given)
    for refund_id, final in finals.items():
        if final != "REJECTED":
            continue
        with session_scope(api.engine, readonly=True) as s:
            why = [a.data for a in list_audit(s, refund_id=refund_id) if a.kind == "rejected"]
        # Lost at the reservation (the code), or at review once the winner had reserved.
        assert len(why) == 1, why
        assert why[0].get("code") in ("over_refund", "quantity_exceeds_remaining") or why[0].get(
            "reasons"
        ), why
    tenders = (await api.call("client", "GET", "/v1/orders/o-1")).json()["tenders"]
    assert all(t["refunded"] + t["reserved"] <= t["captured"] for t in tenders), tenders
    assert sum(t["refunded"] for t in tenders) == 8000
    assert RefundStatus.REJECTED.value in finals.values()


def test_two_merchants_keys_never_name_the_same_refund() -> None:
    """Merchant ids and keys may both contain the separator a naive join would use."""
    assert refund_id_for("shop:a", "k") != refund_id_for("shop", "a:k")
    assert refund_id_for("shop", "k") != refund_id_for("shop", "k ")
    assert refund_id_for("shop", "k") == refund_id_for("shop", "k")
