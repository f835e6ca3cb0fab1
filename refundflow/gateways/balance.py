"""The store balance: our own wallet ledger, so a refund to balance settles at once.

The payout key names the ledger posting, and the database refuses a second posting with the
same id: a retried or replayed payout can never credit the customer twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from sqlalchemy import Engine

from refundflow.db.engine import session_scope
from refundflow.db.repository import adjust_customer_balance, post_ledger, posting_exists
from refundflow.domain.states import PayoutEvent, PayoutStatus
from refundflow.gateways.base import PayoutInstruction, PayoutResult


def wallet_account(merchant_id: str, customer_id: str) -> str:
    return f"wallet:{merchant_id}:{customer_id}"


def refunds_account(merchant_id: str) -> str:
    return f"refunds:{merchant_id}"


class BalanceGateway:
    name = "balance"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def refund(self, instruction: PayoutInstruction) -> PayoutResult:
        return await asyncio.to_thread(self._refund, instruction)

    async def query(self, instruction: PayoutInstruction) -> PayoutResult:
        return await asyncio.to_thread(self._query, instruction.payout_key)

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> PayoutEvent:
        raise ValueError("the store balance sends no webhooks")

    def _refund(self, ins: PayoutInstruction) -> PayoutResult:
        posting_id = _posting_id(ins.payout_key)
        with session_scope(self.engine) as session:
            if not posting_exists(session, posting_id=posting_id):
                adjust_customer_balance(
                    session,
                    merchant_id=ins.merchant_id,
                    customer_id=ins.customer_id,
                    currency=ins.currency,
                    delta=ins.amount,
                )
                post_ledger(
                    session,
                    posting_id=posting_id,
                    entries=[
                        (refunds_account(ins.merchant_id), ins.amount),
                        (wallet_account(ins.merchant_id, ins.customer_id), -ins.amount),
                    ],
                    currency=ins.currency,
                    refund_id=ins.refund_id,
                    memo=f"refund {ins.refund_id} to store balance",
                )
        return _settled(posting_id)

    def _query(self, payout_key: str) -> PayoutResult:
        posting_id = _posting_id(payout_key)
        with session_scope(self.engine, readonly=True) as session:
            found = posting_exists(session, posting_id=posting_id)
        return _settled(posting_id) if found else PayoutResult(status=PayoutStatus.NOT_FOUND)


def _posting_id(payout_key: str) -> str:
    return f"balance:{payout_key}"


def _settled(posting_id: str) -> PayoutResult:
    return PayoutResult(
        status=PayoutStatus.SETTLED, provider_ref=posting_id, trace_ref=posting_id, code="CREDITED"
    )
