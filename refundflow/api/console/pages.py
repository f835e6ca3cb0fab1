"""The console's pages for signing in and for approvers: the inbox, a refund, a decision.

Every action goes through :mod:`refundflow.api.refund_messages`, the same functions and the
same workflow Updates as the HTTP API: the console writes nothing itself."""

from __future__ import annotations

import time
from collections.abc import Awaitable

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from sqlmodel import Session

from refundflow.api import refund_messages
from refundflow.api.console import queries, refund_view
from refundflow.api.console import session as sessions
from refundflow.api.console.session import CSRF_FIELD, CsrfRefused
from refundflow.api.console.web import Refused, Visit, keep, page, refusal_words, signed_in, visit
from refundflow.api.deps import ReadSessionDep, RunsDep
from refundflow.api.errors import ApiError
from refundflow.api.schemas import MessageOut
from refundflow.db.engine import new_session
from refundflow.db.repository import verify_api_key
from refundflow.domain.states import ApprovalDecisionBody, RefundStatus

router = APIRouter(prefix="/console", include_in_schema=False)

DONE = {"approved", "rejected", "repaired", "inspected", "answered", "cancelled"}


async def form_of(request: Request, v: Visit) -> dict[str, str]:
    """The posted form, once its origin and CSRF token are checked; else :class:`Refused`."""
    form = await request.form()
    fields = {k: str(val) for k, val in form.items() if isinstance(val, str)}
    try:
        sessions.check_post(request, v.session if not v.fresh else None, fields.get(CSRF_FIELD))
    except CsrfRefused as refusal:
        raise Refused(page(v, "error.html", {"code": refusal.why}, status=403)) from None
    return fields


async def posted(request: Request, roles: tuple[str, ...]) -> tuple[Visit, dict[str, str]]:
    """The visit of a signed-in key admitted to ``roles`` and its checked form; else
    :class:`Refused` (sign in first, forbidden, cross-site or without its token)."""
    v = signed_in(request, roles)
    return v, await form_of(request, v)


@router.get("")
def home(request: Request) -> Response:
    v = visit(request)
    target = v.home() if v.principal else "/console/sign-in"
    response = RedirectResponse(target, status_code=303)
    keep(v, response)
    return response


@router.get("/sign-in")
def sign_in_form(request: Request, next: str = "") -> Response:
    v = visit(request)
    return page(v, "sign_in.html", {"next": _local(next)})


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    v = visit(request)
    fields = await form_of(request, v)
    token = fields.get("api_key", "").strip()
    with new_session(request.app.state.engine, readonly=True) as db:
        key = verify_api_key(db, token=token) if token else None
    if key is None:
        context = {"next": _local(fields.get("next", "")), "failed": True}
        return page(v, "sign_in.html", context, status=401)
    settings = request.app.state.settings
    v.session = v.session.signed_in(
        key.key_id, hours=settings.console_session_hours, now=time.time()
    )
    v.fresh = True  # a new session: the cookie goes out
    response = RedirectResponse(_local(fields.get("next", "")) or "/console", status_code=303)
    keep(v, response)
    return response


@router.post("/sign-out")
async def sign_out(request: Request) -> Response:
    v = visit(request)
    await form_of(request, v)
    response = RedirectResponse("/console/sign-in", status_code=303)
    sessions.clear(request, response)
    return response


def _local(target: str) -> str:
    # Only a path of ours: never a redirect to another site after sign-in.
    return target if target.startswith("/console") and "//" not in target else ""


@router.get("/inbox")
def inbox(request: Request, session: ReadSessionDep) -> Response:
    v = signed_in(request, refund_messages.DECIDERS)
    assert v.principal is not None
    items, total = queries.inbox(session, v.principal)
    return page(v, "inbox.html", {"items": items, "total": total, "next_offset": len(items)})


@router.get("/inbox/rows")
def inbox_rows(request: Request, session: ReadSessionDep, offset: int = 0) -> Response:
    """The next page of the inbox, as table rows for htmx to append."""
    v = signed_in(request, refund_messages.DECIDERS)
    assert v.principal is not None
    offset = max(0, offset)
    items, total = queries.inbox(session, v.principal, offset=offset)
    context = {"items": items, "total": total, "next_offset": offset + len(items)}
    return page(v, "_inbox_rows.html", context)


@router.get("/refunds")
def refunds(
    request: Request, session: ReadSessionDep, status: str = "", order_id: str = ""
) -> Response:
    """The latest refunds, for every reader: the way to a refund by its order."""
    v = signed_in(request)
    assert v.principal is not None
    status = status if status in RefundStatus.__members__ else ""
    order_id = order_id.strip()[:64]
    rows = queries.recent(session, v.principal, status=status, order_id=order_id)
    context = {"rows": rows, "status": status, "order_id": order_id, "statuses": list(RefundStatus)}
    return page(v, "refunds.html", context)


@router.get("/refunds/{refund_id}")
async def refund(
    request: Request, refund_id: str, session: ReadSessionDep, runs: RunsDep
) -> Response:
    v = signed_in(request)
    return await show_refund(v, session, runs, refund_id)


async def show_refund(
    v: Visit,
    session: Session,
    runs: RunsDep,
    refund_id: str,
    *,
    refusal: str = "",
    status: int = 200,
) -> Response:
    assert v.principal is not None
    try:
        row = refund_messages.own_refund(session, v.principal, refund_id)
    except ApiError:
        return page(v, "error.html", {"code": "not_found"}, status=404)
    built = await refund_view.build(v, session, runs, row)
    done = v.request.query_params.get("done", "")
    context = {"r": built, "refusal": refusal, "done": done if done in DONE else ""}
    return page(v, "refund.html", context, status=status)


@router.post("/refunds/{refund_id}/decision")
async def decision(
    request: Request, refund_id: str, session: ReadSessionDep, runs: RunsDep
) -> Response:
    v, fields = await posted(request, refund_messages.DECIDERS)
    assert v.principal is not None
    try:
        body = ApprovalDecisionBody.model_validate(
            {k: fields.get(k, "") for k in ("decision", "quote_fingerprint", "comment")}
        )
    except ValidationError:
        words = refusal_words(v.words, "invalid_decision", "")
        return await show_refund(v, session, runs, refund_id, refusal=words, status=422)
    return await sent(
        v,
        session,
        runs,
        refund_id,
        refund_messages.decide(session, runs, v.principal, refund_id, body),
        done="approved" if body.decision == "APPROVE" else "rejected",
    )


async def sent(
    v: Visit,
    session: Session,
    runs: RunsDep,
    refund_id: str,
    sending: Awaitable[MessageOut],
    *,
    done: str,
) -> Response:
    """Await a message to the run: on success back to the refund (a redirect, so a reload
    sends nothing again); a refusal is shown on the refund page, in words."""
    try:
        await sending
    except ApiError as err:
        if err.code == "not_found":
            return page(v, "error.html", {"code": "not_found"}, status=404)
        words = refusal_words(v.words, err.code, err.detail)
        return await show_refund(v, session, runs, refund_id, refusal=words, status=err.status)
    response = RedirectResponse(f"/console/refunds/{refund_id}?done={done}", status_code=303)
    keep(v, response)
    return response
