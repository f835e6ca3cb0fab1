"""Order snapshots, upserted by the shop or order system."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from sqlmodel import Session

from refundflow.api import examples
from refundflow.api import schemas as api
from refundflow.api.deps import Principal, ReadSessionDep, SessionDep, require
from refundflow.api.errors import ApiError
from refundflow.api.problems import AUTH, BODY, ORDER_INPUT, documented
from refundflow.db.repository import get_order, tender_balances, upsert_order
from refundflow.domain.orders import OrderSnapshot

router = APIRouter(prefix="/v1/orders", tags=["orders"])


def _public(session: Session, order: OrderSnapshot) -> api.OrderPublic:
    tenders = tender_balances(session, merchant_id=order.merchant_id, order_id=order.order_id)
    return api.OrderPublic(
        order=order.model_dump(mode="json"),
        tenders=[
            api.TenderPublic(
                payment_id=t.payment_id,
                captured=t.captured,
                reserved=t.reserved,
                refunded=t.refunded,
            )
            for t in tenders
        ],
    )


@router.put(
    "/{order_id}",
    response_model=api.OrderPublic,
    responses=documented(
        *AUTH,
        *BODY,
        *ORDER_INPUT,
        "order_in_use",
        "order_mismatch",
        "unknown_payment",
        "currency_mismatch",
        "database_busy",
        answer=(200, examples.ORDER_PUBLIC),
    ),
)
def put_order(
    order_id: str,
    body: api.OrderUpsert,
    session: SessionDep,
    principal: Annotated[Principal, Depends(require("client"))],
) -> api.OrderPublic:
    """Create or update an order snapshot. Captured amounts never drop below what is
    already reserved or refunded."""
    data = {
        **body.model_dump(mode="json"),
        "order_id": order_id,
        "merchant_id": principal.merchant_id,
    }
    order = OrderSnapshot.parse(data)
    upsert_order(session, order=order)
    # Read in the writing transaction: after its commit the session would start another one,
    # which on SQLite queues for the write lock again only to read.
    public = _public(session, order)
    session.commit()
    return public


@router.get(
    "/{order_id}",
    response_model=api.OrderPublic,
    responses=documented(*AUTH, "not_found", answer=(200, examples.ORDER_PUBLIC)),
)
def read_order(
    order_id: str,
    session: ReadSessionDep,
    principal: Annotated[Principal, Depends(require("client", "approver", "warehouse", "ops"))],
) -> api.OrderPublic:
    """The stored snapshot and, per tender, what is captured, reserved and refunded."""
    order = get_order(session, merchant_id=principal.merchant_id, order_id=order_id)
    if order is None:
        raise ApiError(404, "not_found", f"no order {order_id}")
    return _public(session, order)
