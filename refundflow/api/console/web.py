"""What every console page shares: the visit (session, signed-in key, language), rendering a
template with the session cookie kept fresh, and the answers for refusals in words."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import Engine

from refundflow.api.console import session as sessions
from refundflow.api.console.i18n import LANG_COOKIE, LOCALES, Words, negotiate
from refundflow.api.console.session import ConsoleSession, ConsoleUnavailable
from refundflow.api.deps import Principal
from refundflow.api.refund_messages import (
    DECIDERS,
    INSPECTORS,
    READERS,
    REPAIRERS,
    REPORT_READERS,
    SUPPLIER_ANSWERERS,
    admitted,
)
from refundflow.db.personal import last4

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
# One masking rule for the API, notices and the console: ****8877.
templates.env.filters["mask"] = last4

NAV = (
    # (page, roles admitted, text key): a role sees only the pages it may use.
    ("inbox", DECIDERS, "nav.inbox"),
    ("ops", REPAIRERS, "nav.ops"),
    ("warehouse", tuple(sorted({*INSPECTORS, *SUPPLIER_ANSWERERS})), "nav.warehouse"),
    ("reports", REPORT_READERS, "nav.reports"),
    ("refunds", READERS, "nav.refunds"),
)


@dataclass
class Visit:
    request: Request
    session: ConsoleSession
    words: Words
    principal: Principal | None = None
    fresh: bool = False
    """The session was made for this visit: its cookie goes out with the answer."""
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def engine(self) -> Engine:
        engine: Engine = self.request.app.state.engine
        return engine

    def may(self, roles: tuple[str, ...]) -> bool:
        return self.principal is not None and admitted(self.principal, roles)

    def nav(self) -> list[tuple[str, str]]:
        return [(page, key) for page, roles, key in NAV if self.may(roles)]

    def home(self) -> str:
        pages = self.nav()
        # Every role reads refunds, so a signed-in key always has a first page.
        return f"/console/{pages[0][0]}" if pages else "/console/refunds"


class Refused(Exception):
    """A page answer other than the page: a redirect to sign in, a 403, a 404."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def visit(request: Request) -> Visit:
    """The visit; :class:`ConsoleUnavailable` without encryption keys."""
    words = Words(negotiate(request))
    found = sessions.current(request)
    if found is None:
        return Visit(request, ConsoleSession.anonymous(time.time()), words, fresh=True)
    principal = sessions.principal_for(request.app.state.engine, found)
    if found.key_id is not None and principal is None:  # the key was revoked
        return Visit(request, ConsoleSession.anonymous(time.time()), words, fresh=True)
    return Visit(request, found, words, principal=principal)


def signed_in(request: Request, roles: tuple[str, ...] = READERS) -> Visit:
    """The visit of a signed-in key admitted to ``roles``; else :class:`Refused`."""
    v = visit(request)
    if v.principal is None:
        target = request.url.path
        response = RedirectResponse(f"/console/sign-in?next={target}", status_code=303)
        if v.fresh:
            sessions.store(request, response, v.session)
        raise Refused(response)
    if not v.may(roles):
        raise Refused(page(v, "error.html", {"code": "forbidden"}, status=403))
    return v


def page(v: Visit, template: str, context: dict[str, Any], *, status: int = 200) -> HTMLResponse:
    context = {
        "v": v,
        "t": v.words,
        "locales": LOCALES,
        "csrf": v.session.csrf,
        "me": v.principal,
        **context,
    }
    response = templates.TemplateResponse(v.request, template, context, status_code=status)
    keep(v, response)
    return response


def keep(v: Visit, response: Response) -> None:
    """The session cookie when new, and the language cookie when the switch was used."""
    if v.fresh:
        sessions.store(v.request, response, v.session)
    asked = v.request.query_params.get("lang")
    if asked in LOCALES:
        response.set_cookie(
            LANG_COOKIE,
            asked,
            max_age=365 * 24 * 3600,
            path="/console",
            samesite="strict",
            secure=v.request.url.scheme == "https",
        )
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline';"
        " frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    )
    response.headers["X-Content-Type-Options"] = "nosniff"


def unavailable(request: Request, exc: ConsoleUnavailable) -> HTMLResponse:
    words = Words(negotiate(request))
    html = templates.get_template("unavailable.html").render(t=words, detail=str(exc))
    return HTMLResponse(html, status_code=503, headers={"Retry-After": "60"})


def refusal_words(words: Words, code: str, detail: str) -> str:
    """A refusal in the reader's language where we have its words; the run's own otherwise."""
    key = f"refusal.{code}"
    said = words(key)
    return detail if said == key else said
