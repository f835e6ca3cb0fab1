"""The web console for approvers, ops and the warehouse: server-rendered pages under
``/console`` (docs/console.md). Signing in takes an API key once; every action is a message to
the refund's run through the same functions as the HTTP API."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

from refundflow.api.console import ops_pages, pages
from refundflow.api.console.session import ConsoleUnavailable
from refundflow.api.console.web import HERE, Refused, unavailable


def install(app: FastAPI) -> None:
    app.include_router(pages.router)
    app.include_router(ops_pages.router)
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")

    @app.exception_handler(ConsoleUnavailable)
    async def _no_keys(request: Request, exc: ConsoleUnavailable) -> HTMLResponse:
        return unavailable(request, exc)

    # A page that is not for this visit (sign in first, forbidden, a refused form) raises
    # Refused with its answer, so handlers read as the path that succeeds.
    @app.exception_handler(Refused)
    async def _refused(request: Request, exc: Refused) -> Response:
        return exc.response
