"""The API's documentation as a user meets it: /docs loads from this server alone (offline, or
where a CDN is blocked), and the OpenAPI document says how to authenticate, what every field
is, what every route answers, with examples, and every problem code a route can give."""

from __future__ import annotations

import re
from typing import Any

from fastapi.routing import APIRoute
from pydantic import BaseModel

from refundflow.api import examples, schemas
from refundflow.api.problems import DOCUMENTED, PROBLEM_CODES
from tests.api.conftest import Api


async def test_docs_are_served_by_the_app_and_name_no_other_host(api: Api) -> None:
    page = await api.http.get("/docs")
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href|url)\s*[:=]\s*['"]([^'"]+)['"]""", page.text)
    assert urls, page.text
    for url in urls:
        assert url.startswith("/"), f"/docs loads {url} from elsewhere"
        assert not url.startswith("//"), url
        assert (await api.http.get(url)).status_code == 200, url
    assert not re.search(r"https?://", page.text), "the page names another host"


def openapi(api: Api) -> dict[str, Any]:
    document: dict[str, Any] = api.app.openapi()
    return document


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, op)
        for path, item in document["paths"].items()
        for method, op in item.items()
    ]


async def test_the_document_declares_bearer_keys_and_the_idempotency_key(api: Api) -> None:
    document = openapi(api)
    schemes = document["components"]["securitySchemes"]
    assert [(s["type"], s["scheme"]) for s in schemes.values()] == [("http", "bearer")]
    for method, path, op in operations(document):
        if path.startswith("/v1/") and not path.startswith("/v1/webhooks"):
            assert op.get("security"), (method, path)
    create = document["paths"]["/v1/refunds"]["post"]
    [key] = [p for p in create["parameters"] if p["name"].lower() == "idempotency-key"]
    assert key["in"] == "header" and key["required"] is True
    assert key["schema"]["maxLength"] == 200


async def test_every_field_is_described_and_amounts_say_minor_units(api: Api) -> None:
    document = openapi(api)
    for name, schema in document["components"]["schemas"].items():
        for field, spec in schema.get("properties", {}).items():
            assert spec.get("description"), f"{name}.{field} has no description"
    amount = document["components"]["schemas"]["OrderLine"]["properties"]["unit_price"]
    assert "minor units" in amount["description"] and "exponent" in amount["description"]
    assert (amount["minimum"], amount["maximum"]) == (0, 10**15)


async def test_every_route_has_examples_and_documents_its_problems(api: Api) -> None:
    document = openapi(api)
    for method, path, op in operations(document):
        where = f"{method} {path}"
        body = op.get("requestBody", {}).get("content", {}).get("application/json")
        if body is not None:
            has = "example" in body or "examples" in body
            assert has or resolve(document, body["schema"]).get("examples"), where
        ok = [s for s in op["responses"] if s.startswith("2")]
        assert len(ok) == 1, where
        answer = op["responses"][ok[0]]["content"]["application/json"]
        assert "example" in answer or resolve(document, answer["schema"]).get("examples"), where
        for status, response in op["responses"].items():
            if status.startswith("2"):
                continue
            problem = response["content"]["application/problem+json"]
            assert problem["schema"] == {"$ref": "#/components/schemas/Problem"}, where
            codes = response[DOCUMENTED]
            assert codes and set(problem["examples"]) == set(codes), where
            assert {PROBLEM_CODES[c].status for c in codes} == {int(status)}, where
        assert "500" in op["responses"], where


async def test_the_request_examples_are_valid_requests() -> None:
    pairs: list[tuple[type[BaseModel], dict[str, Any]]] = [
        (schemas.OrderUpsert, examples.ORDER),
        (schemas.RefundCreate, examples.REFUND),
        (schemas.DecisionIn, examples.DECISION),
        (schemas.SupplierResponseIn, examples.SUPPLIER_RESPONSE),
        (schemas.ReturnInspectionIn, examples.RETURN_INSPECTION),
        (schemas.CustomerConfirmationIn, examples.CUSTOMER_CONFIRMATION),
        (schemas.ReceiptIn, examples.RECEIPT),
        (schemas.CancelIn, examples.CANCEL),
        (schemas.OpsActionIn, examples.OPS_ACTION),
    ]
    for model, example in pairs:
        model.model_validate(example)
    schemas.RefundPublic.model_validate(examples.REFUND_PUBLIC)
    schemas.OrderPublic.model_validate(examples.ORDER_PUBLIC)


async def test_a_route_answering_a_code_it_does_not_document_fails_in_strict_mode(
    api: Api,
) -> None:
    """The check that keeps the documented codes complete: the whole API suite and the fuzz
    test run in strict mode, so every code a test provokes must be documented."""
    from refundflow.api.errors import ApiError

    def undocumented() -> None:
        raise ApiError(409, "wrong_state", "not documented here")

    api.app.add_api_route("/test-only/undocumented", undocumented, methods=["GET"])
    route = next(
        r for r in api.app.routes if isinstance(r, APIRoute) and r.path == "/test-only/undocumented"
    )
    assert route.responses == {}
    response = await api.http.get("/test-only/undocumented")
    assert response.status_code == 500, response.text
    assert "does not document" in response.json()["detail"]
