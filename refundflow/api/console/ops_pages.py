"""The console's pages for ops (refunds needing attention, late ones, repairs each behind a
confirmation), the warehouse and supplier answers, and the reports with their CSV."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, ValidationError
from sqlmodel import Session

from refundflow.api import refund_messages
from refundflow.api.console import charts, queries, refund_view, reports
from refundflow.api.console.pages import posted, sent, show_refund
from refundflow.api.console.web import Visit, keep, page, refusal_words, signed_in
from refundflow.api.deps import Principal, ReadSessionDep, RunsDep
from refundflow.api.errors import ApiError
from refundflow.api.runs import RefundRuns
from refundflow.api.schemas import MessageOut
from refundflow.domain.errors import DomainError
from refundflow.domain.money import from_major
from refundflow.domain.orders import Destination, DestinationKind
from refundflow.domain.states import (
    CancelRequestBody,
    OpsActionBody,
    ReturnInspectionBody,
    SupplierResponse,
)
from refundflow.domain.states import RefundStatus as S

router = APIRouter(prefix="/console", include_in_schema=False)

BANK_FIELDS = ("holder_name", "account_number", "bank_name", "bank_code", "country", "currency")
Message = TypeVar("Message", bound=BaseModel)
WAREHOUSE = tuple(sorted({*refund_messages.INSPECTORS, *refund_messages.SUPPLIER_ANSWERERS}))


def _roles_for(action: str) -> tuple[str, ...]:
    return refund_messages.CANCELLERS if action == "cancel" else refund_messages.REPAIRERS


@router.get("/ops")
def ops(request: Request, session: ReadSessionDep) -> Response:
    v = signed_in(request, refund_messages.REPAIRERS)
    assert v.principal is not None
    context = {
        "attention": queries.needing_attention(session, v.principal),
        "late": queries.late(session, v.principal),
    }
    return page(v, "ops.html", context)


@router.get("/refunds/{refund_id}/actions")
async def accepted_repairs(
    request: Request, refund_id: str, session: ReadSessionDep, runs: RunsDep
) -> Response:
    """The repairs the run accepts now, as links: the ops list loads one per row (htmx), so
    the list itself asks no run."""
    v = signed_in(request, refund_messages.REPAIRERS)
    assert v.principal is not None
    try:
        row = refund_messages.own_refund(session, v.principal, refund_id)
    except ApiError:
        return page(v, "error.html", {"code": "not_found"}, status=404)
    built = await refund_view.build(v, session, runs, row)
    return page(v, "_actions.html", {"r": built})


@router.get("/refunds/{refund_id}/ops/{action}")
async def confirm_repair(
    request: Request, refund_id: str, action: str, session: ReadSessionDep, runs: RunsDep
) -> Response:
    """The confirmation of a repair: what it does, and the fields it needs."""
    v = signed_in(request, _roles_for(action))
    if action not in refund_view.OPS_ACTIONS:
        return page(v, "error.html", {"code": "not_found"}, status=404)
    assert v.principal is not None
    try:
        row = refund_messages.own_refund(session, v.principal, refund_id)
    except ApiError:
        return page(v, "error.html", {"code": "not_found"}, status=404)
    built = await refund_view.build(v, session, runs, row)
    context = {"r": built, "action": action, "fallbacks": refund_view.FALLBACKS}
    return page(v, "confirm.html", context)


@router.post("/refunds/{refund_id}/ops/{action}")
async def repair(
    request: Request, refund_id: str, action: str, session: ReadSessionDep, runs: RunsDep
) -> Response:
    v, fields = await posted(request, _roles_for(action))
    assert v.principal is not None
    note = fields.get("note", "")
    try:
        if action == "cancel":
            body = CancelRequestBody(reason=note)
            sending = refund_messages.cancel(session, runs, v.principal, refund_id, body)
            return await sent(v, session, runs, refund_id, sending, done="cancelled")
        repair = OpsActionBody.model_validate(
            {
                "action": action,
                "note": note,
                "reference": fields.get("reference", ""),
                "destination": _destination(fields) if action == "switch_destination" else None,
            }
        )
    except (ValidationError, ValueError):
        return await _invalid(v, session, runs, refund_id, "invalid_repair")
    if action == "mark_settled" and not repair.reference.strip():
        return await _invalid(v, session, runs, refund_id, "reference_required")
    sending = refund_messages.repair(session, runs, v.principal, refund_id, repair)
    return await sent(v, session, runs, refund_id, sending, done="repaired")


def _destination(fields: dict[str, str]) -> Destination:
    kind = DestinationKind(fields.get("destination", ""))
    if kind is not DestinationKind.BANK_TRANSFER:
        return Destination(kind=kind)
    account = {f: fields.get(f, "").strip() for f in BANK_FIELDS}
    account["country"], account["currency"] = (
        account["country"].upper(),
        account["currency"].upper(),
    )
    return Destination.model_validate({"kind": kind, "bank_account": account})


async def _invalid(
    v: Visit, session: ReadSessionDep, runs: RunsDep, refund_id: str, code: str
) -> Response:
    words = refusal_words(v.words, code, code)
    return await show_refund(v, session, runs, refund_id, refusal=words, status=422)


@router.get("/warehouse")
def warehouse(request: Request, session: ReadSessionDep) -> Response:
    v = signed_in(request, WAREHOUSE)
    assert v.principal is not None
    context = {
        "returns": queries.with_status(session, v.principal, [S.AWAITING_RETURN])
        if v.may(refund_messages.INSPECTORS)
        else [],
        "presale": queries.with_status(session, v.principal, [S.AWAITING_SUPPLIER])
        if v.may(refund_messages.SUPPLIER_ANSWERERS)
        else [],
    }
    return page(v, "warehouse.html", context)


@router.post("/refunds/{refund_id}/inspection")
async def inspection(
    request: Request, refund_id: str, session: ReadSessionDep, runs: RunsDep
) -> Response:
    def read(fields: dict[str, str], currency: str) -> ReturnInspectionBody:
        return ReturnInspectionBody.model_validate(
            {
                "condition": fields.get("condition", "OK"),
                "deduction": _minor(fields.get("deduction", ""), currency),
                "note": fields.get("note", ""),
            }
        )

    return await _answer(
        request,
        refund_id,
        session,
        runs,
        roles=refund_messages.INSPECTORS,
        read=read,
        send=refund_messages.inspect_return,
        done="inspected",
    )


@router.post("/refunds/{refund_id}/supplier-response")
async def supplier_response(
    request: Request, refund_id: str, session: ReadSessionDep, runs: RunsDep
) -> Response:
    def read(fields: dict[str, str], currency: str) -> SupplierResponse:
        return SupplierResponse.model_validate(
            {
                "supplier_ref": fields.get("supplier_ref", ""),
                "can_cancel": fields.get("can_cancel") == "yes",
                "cancellation_fee": _minor(fields.get("cancellation_fee", ""), currency),
                "note": fields.get("note", ""),
            }
        )

    return await _answer(
        request,
        refund_id,
        session,
        runs,
        roles=refund_messages.SUPPLIER_ANSWERERS,
        read=read,
        send=refund_messages.answer_for_supplier,
        done="answered",
    )


async def _answer(
    request: Request,
    refund_id: str,
    session: ReadSessionDep,
    runs: RunsDep,
    *,
    roles: tuple[str, ...],
    read: Callable[[dict[str, str], str], Message],
    send: Callable[[Session, RefundRuns, Principal, str, Message], Awaitable[MessageOut]],
    done: str,
) -> Response:
    """A warehouse or supplier answer typed into a form: read in the refund's currency, sent
    as the same Update the API sends."""
    v, fields = await posted(request, roles)
    assert v.principal is not None
    try:
        row = refund_messages.own_refund(session, v.principal, refund_id)
        message = read(fields, row.currency)
    except ApiError:
        return page(v, "error.html", {"code": "not_found"}, status=404)
    except (ValidationError, DomainError, InvalidOperation):
        return await _invalid(v, session, runs, refund_id, "invalid_amount")
    sending = send(session, runs, v.principal, refund_id, message)
    return await sent(v, session, runs, refund_id, sending, done=done)


def _minor(text: str, currency: str) -> int:
    """An amount typed in major units ("12.50") as exact minor units; blank is zero."""
    text = text.strip().replace(",", "")
    return from_major(Decimal(text), currency) if text else 0


REPORT_DAYS = (7, 30, 90, 365)


@router.get("/reports")
def reports_page(request: Request, session: ReadSessionDep, days: int = 30) -> Response:
    v = signed_in(request, refund_messages.REPORT_READERS)
    assert v.principal is not None
    days = days if days in REPORT_DAYS else 30
    window = reports.Window.last_days(v.principal.merchant_id, days, datetime.now(UTC))
    data = {name: make(session, window) for name, make in reports.REPORTS.items()}
    w = v.words
    figures = {
        "by_day": [
            charts.refunds_by_day(data["by_day"], w),
            *charts.amount_by_day(data["by_day"], w),
        ],
        "rate_by_reason": [
            charts.rates(data["rate_by_reason"], w, label="reason", title_key="reports.by_reason")
        ],
        "rate_by_channel": [
            charts.rates(
                data["rate_by_channel"], w, label="channel", title_key="reports.by_channel"
            )
        ],
        "time_to_money": [
            charts.durations(
                data["time_to_money"], w, label="provider", title_key="reports.time_to_money"
            )
        ],
        "approval_turnaround": [
            charts.durations(
                data["approval_turnaround"], w, label="approver", title_key="reports.turnaround"
            )
        ],
        "payout_failures": [charts.failures(data["payout_failures"], w)],
    }
    context = {
        "figures": figures,
        "data": data,
        "columns": reports.COLUMNS,
        "days": days,
        "choices": REPORT_DAYS,
    }
    return page(v, "reports.html", context)


@router.get("/reports/{name}.csv")
def report_csv(request: Request, name: str, session: ReadSessionDep, days: int = 30) -> Response:
    v = signed_in(request, refund_messages.REPORT_READERS)
    if name not in reports.REPORTS:
        return page(v, "error.html", {"code": "not_found"}, status=404)
    assert v.principal is not None
    days = days if days in REPORT_DAYS else 30
    window = reports.Window.last_days(v.principal.merchant_id, days, datetime.now(UTC))
    rows = reports.REPORTS[name](session, window)
    response = PlainTextResponse(
        reports.to_csv(rows, reports.COLUMNS[name]),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="refunds-{name}-{days}d.csv"'},
    )
    keep(v, response)
    return response
