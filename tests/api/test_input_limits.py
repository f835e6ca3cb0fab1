"""Input the API must refuse with a clear problem, never a 500: amounts past what the database
and the providers hold, fields past the domain's bounds, bodies too large for a workflow
payload, unsupported methods; and a server error that does happen tells no internals."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from refundflow.domain.money import MAX_MINOR
from tests.api.conftest import Api
from tests.api.test_api import REFUND, refund_rows
from tests.api.test_idempotency import reserved

PROBLEM = "application/problem+json"


def assert_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["code"] == code, response.text
    assert response.headers["x-request-id"]


async def post_refund(api: Api, body: dict[str, Any], key: str = "k") -> httpx.Response:
    return await api.call(
        "client", "POST", "/v1/refunds", json=body, headers={"Idempotency-Key": key}
    )


@pytest.mark.parametrize("amount", [10**30, 2**63, MAX_MINOR + 1])
async def test_a_goodwill_amount_past_the_bound_is_refused(api: Api, amount: int) -> None:
    assert (await api.put_order()).status_code == 200
    body = {"order_id": "o-1", "goodwill_amount": amount, "reason": "OTHER"}
    assert_problem(await post_refund(api, body), 422, "amount_too_large")
    quote = await api.call("client", "POST", "/v1/refunds/quote", json=body)
    assert_problem(quote, 422, "amount_too_large")
    assert refund_rows(api) == []


@pytest.mark.parametrize(
    ("line", "captured"),
    [
        ({"unit_price": 2**63}, 8000),
        ({"unit_price": 4000}, 2**63),
        ({"unit_price": MAX_MINOR, "quantity": 10}, MAX_MINOR),  # the line's total is past it
        ({"unit_price": 4000, "quantity": 10**12}, 8000),
    ],
)
async def test_order_amounts_past_the_bound_are_refused(
    api: Api, line: dict[str, Any], captured: int
) -> None:
    payments = (await api.put_order()).json()["order"]["payments"]
    payments[0]["captured"] = captured
    lines = [{"line_id": "l1", "sku": "MUG", "quantity": 2, **line}]
    response = await api.put_order("o-big", lines=lines, payments=payments)
    code = "quantity_too_large" if line.get("quantity", 0) > 10**6 else "amount_too_large"
    assert_problem(response, 422, code)
    missing = await api.call("client", "GET", "/v1/orders/o-big")
    assert missing.status_code == 404


async def test_an_order_whose_lines_add_up_past_the_bound_is_refused(api: Api) -> None:
    lines = [
        {"line_id": f"l{i}", "sku": "GOLD", "quantity": 1, "unit_price": MAX_MINOR}
        for i in range(3)
    ]
    assert_problem(await api.put_order("o-sum", lines=lines), 422, "amount_too_large")


@pytest.mark.parametrize("supplier_ref", ["", "s" * 129])
async def test_a_supplier_reference_out_of_bounds_is_refused(api: Api, supplier_ref: str) -> None:
    assert (await api.put_order()).status_code == 200
    refund_id = (await post_refund(api, REFUND, key=f"sup-{len(supplier_ref)}")).json()["refund_id"]
    await reserved(api, refund_id)
    response = await api.call(
        "warehouse",
        "POST",
        f"/v1/refunds/{refund_id}/supplier-response",
        json={"supplier_ref": supplier_ref, "can_cancel": True},
    )
    assert_problem(response, 422, "validation_error")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("supplier-response", {"supplier_ref": "s", "can_cancel": True, "cancellation_fee": 2**63}),
        ("return-inspection", {"deduction": 10**30}),
    ],
)
async def test_message_amounts_past_the_bound_are_refused(
    api: Api, path: str, body: dict[str, Any]
) -> None:
    response = await api.call("warehouse", "POST", f"/v1/refunds/r-x/{path}", json=body)
    assert_problem(response, 422, "amount_too_large")


async def test_a_body_past_the_size_limit_is_refused_before_it_is_read(api: Api) -> None:
    assert (await api.put_order()).status_code == 200
    huge = {**REFUND, "evidence": ["x" * 1000] * 4000}  # about 4 MB
    assert_problem(await post_refund(api, huge), 413, "body_too_large")
    # Without a Content-Length (chunked), the body is counted as it arrives.

    async def chunks() -> Any:
        for _ in range(400):
            yield b"x" * 1024

    chunked = await api.call(
        "client",
        "POST",
        "/v1/refunds",
        content=chunks(),
        headers={"Idempotency-Key": "chunked", "Content-Type": "application/json"},
    )
    assert_problem(chunked, 413, "body_too_large")
    assert refund_rows(api) == []


@pytest.mark.parametrize("evidence", [["photo"] * 21, ["x" * 2001]], ids=["too-many", "too-long"])
async def test_evidence_is_bounded_in_count_and_length(api: Api, evidence: list[str]) -> None:
    assert (await api.put_order()).status_code == 200
    assert_problem(
        await post_refund(api, {**REFUND, "evidence": evidence}), 422, "evidence_too_large"
    )
    assert refund_rows(api) == []


async def test_unsupported_methods_answer_405_with_allow(api: Api) -> None:
    for method, path, allowed in [
        ("TRACE", "/v1/refunds", {"GET", "POST"}),
        ("DELETE", "/v1/orders/o-1", {"GET", "PUT"}),
        ("TRACE", "/healthz", {"GET"}),
    ]:
        response = await api.call("client", method, path)
        assert_problem(response, 405, "method_not_allowed")
        assert {m.strip() for m in response.headers["allow"].split(",")} == allowed


async def test_a_server_error_is_problem_json_with_a_request_id_and_no_internals(
    api: Api,
) -> None:
    def explode() -> None:
        raise RuntimeError("secret internals: postgres://user:pw@db")

    api.app.add_api_route("/test-only/explode", explode, methods=["GET"])
    response = await api.http.get("/test-only/explode")
    assert_problem(response, 500, "internal_error")
    body = response.json()
    assert "secret" not in response.text and "postgres" not in response.text
    assert body["request_id"] == response.headers["x-request-id"]
    ok = await api.http.get("/healthz")
    assert ok.headers["x-request-id"] and ok.headers["x-request-id"] != body["request_id"]
