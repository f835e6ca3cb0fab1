"""The API's documentation: the OpenAPI document (with the problem schema every error answers
with) and Swagger UI at ``/docs``, served from the installed ``swagger-ui-bundle-v2`` package,
never from a CDN, so it works offline and wherever a CDN is blocked."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from refundflow.api.problems import documented
from refundflow.api.schemas import Problem

ASSETS = "/docs/assets"

DESCRIPTION = """Every order refund as a durable Temporal workflow.

**Authentication**: `Authorization: Bearer <API key>` (the *Authorize* button). A key belongs
to one merchant and has one role; another merchant's orders and refunds answer 404.

**Amounts** are integers in minor units of the currency: 10^exponent minor units per major
unit, the ISO 4217 exponent (CNY, USD and EUR 2; JPY and KRW 0; KWD and BHD 3). `89900` in
CNY is 899.00 yuan. Every amount is between 0 and 10^15.

**Errors** are `application/problem+json` with a stable `code`; each route lists the codes it
can answer. Every response carries an `X-Request-ID`.
"""


def install(app: FastAPI) -> None:
    app.mount(ASSETS, StaticFiles(directory=swagger_ui_path), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
            swagger_ui_parameters={"persistAuthorization": True},
        )

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=DESCRIPTION,
                routes=app.routes,
            )
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            schemas["Problem"] = Problem.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            _problems_for_validation(document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _problems_for_validation(document: dict[str, Any]) -> None:
    """FastAPI documents its own 422 body (``HTTPValidationError``) on routes with parameters
    that declare none; ours is a problem with the code ``validation_error``."""
    ours = documented("validation_error")[422]
    for operation in _operations(document):
        response = operation["responses"].get("422")
        if response and "HTTPValidationError" in str(response.get("content", {})):
            operation["responses"]["422"] = ours
    schemas = document["components"]["schemas"]
    for fastapi_own in ("HTTPValidationError", "ValidationError"):
        schemas.pop(fastapi_own, None)


def _operations(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [op for path in document["paths"].values() for op in path.values()]
