"""A time-skipping Temporal test server for the session, and a fresh stack per test: its own
SQLite database (real migration), sandbox provider file, task queue and worker with the real
activities."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import col, select
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle, WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import WorkerDeploymentConfig

from refundflow.activities.contracts import RefundWorkflowInput
from refundflow.activities.notify import NotifyActivities
from refundflow.activities.refund import RefundActivities
from refundflow.db.engine import make_engine, session_scope
from refundflow.db.migrate import upgrade
from refundflow.db.models import (
    ApiKeyRow,
    AuditEventRow,
    LedgerEntryRow,
    LedgerPostingRow,
    OutboxRow,
    PayoutRow,
    RefundRow,
    ReservationRow,
    TenderBalanceRow,
)
from refundflow.db.repository import create_api_key, save_policy, upsert_merchant, upsert_order
from refundflow.devstack.sandbox import SandboxGateway
from refundflow.domain.money import FxRate
from refundflow.domain.orders import OrderSnapshot, PaymentMethod, RefundRequest
from refundflow.domain.policy import Policy
from refundflow.domain.states import RefundState, RefundStatus
from refundflow.gateways.balance import BalanceGateway, refunds_account
from refundflow.gateways.base import Gateway
from refundflow.notify.config import NotifyConfig
from refundflow.worker import build_worker
from refundflow.workflows.client import start_refund
from refundflow.workflows.refund import RefundWorkflow
from tests.payload_keys import CODEC, DB_KEYRING, decrypted

MERCHANT = "shop-1"
APPROVERS = ("alice", "bob", "carol")
ACCOUNT = {  # a customer's bank account, for transfers and fallbacks
    "holder_name": "Li Lei",
    "account_number": "6222020200112233",
    "bank_name": "ICBC",
    "bank_code": "ICBKCNBJ",
    "country": "CN",
    "currency": "CNY",
}


@dataclass
class Stack:
    env: WorkflowEnvironment
    engine: Engine
    sandbox: SandboxGateway
    task_queue: str
    started: list[WorkflowHandle[RefundWorkflow, RefundState]] = field(default_factory=list)

    @property
    def client(self) -> Client:
        return self.env.client

    async def now(self) -> datetime:
        return await self.env.get_current_time()

    async def order(self, order_id: str = "o-1", **overrides: Any) -> OrderSnapshot:
        """An order paid two days ago (in the test server's time) and delivered yesterday."""
        now = await self.now()
        data: dict[str, Any] = {
            "order_id": order_id,
            "merchant_id": MERCHANT,
            "channel": "own_store",
            "customer_id": "cust-1",
            "country": "CN",
            "currency": "CNY",
            "placed_at": (now - timedelta(days=2)).isoformat(),
            "status": "DELIVERED",
            "delivered_at": (now - timedelta(days=1)).isoformat(),
            "lines": [
                {"line_id": "l1", "sku": "MUG", "quantity": 2, "unit_price": 4000},
                {"line_id": "l2", "sku": "TEA", "quantity": 1, "unit_price": 2000},
            ],
            "payments": [payment("p1", "alipay", 10000, now)],
        }
        data.update(overrides)
        order = OrderSnapshot.parse(data)
        with session_scope(self.engine) as session:
            upsert_order(session, order=order)
        return order

    def policy(self, data: dict[str, Any]) -> Policy:
        policy = Policy.parse({"version": 2, **data})
        with session_scope(self.engine) as session:
            save_policy(session, merchant_id=MERCHANT, policy=policy)
        return policy

    async def start(
        self,
        refund_id: str,
        order: OrderSnapshot,
        fx_rate: FxRate | None = None,
        history_limit: int | None = None,
        **request: Any,
    ) -> WorkflowHandle[RefundWorkflow, RefundState]:
        data: dict[str, Any] = {
            "order_id": order.order_id,
            "items": [{"line_id": "l1", "quantity": 1}],
            # Late delivery: merchant's fault, no return needed: the shortest path by default.
            "reason": "LATE_DELIVERY",
            "requested_by": "desk-1",
            "contact": {"email": "li@example.com", "locale": "zh-CN"},
        }
        data.update(request)
        inp = RefundWorkflowInput(
            refund_id=refund_id,
            merchant_id=order.merchant_id,
            order_id=order.order_id,
            request=RefundRequest.parse(data),
            fx_rate=fx_rate,
            history_limit=history_limit,
        )
        handle = await start_refund(self.client, inp, order=order, task_queue=self.task_queue)
        self.started.append(handle)
        return handle

    async def finish(self, handle: WorkflowHandle[RefundWorkflow, RefundState]) -> RefundState:
        """Run the workflow to its end, skipping time in growing steps.

        Not ``handle.result()``: while it waits, the v1 test server skips to the next timer
        anywhere, and once the run is done that is a ten-year timer: every later "now" in the
        session would lie a decade ahead.
        """
        step = timedelta(minutes=1)
        for _ in range(500):
            described = await handle.describe()
            if described.status != WorkflowExecutionStatus.RUNNING:
                break
            await self.env.sleep(step)
            step = min(step * 2, timedelta(hours=6))
        else:
            state = await handle.query(RefundWorkflow.view)
            raise AssertionError(f"{handle.id} still {state.status} after skipping months")
        with self.env.auto_time_skipping_disabled():
            return await handle.result()

    async def terminate_open_runs(self) -> None:
        for handle in self.started:
            latest = self.client.get_workflow_handle(handle.id)
            if (await latest.describe()).status == WorkflowExecutionStatus.RUNNING:
                await latest.terminate("test finished")

    async def record_histories(self, folder: Path) -> None:
        """Save the histories of finished runs for the replay test. A history already saved is
        kept as it is: it stands for runs recorded by older code."""
        folder.mkdir(parents=True, exist_ok=True)
        for handle in self.started:
            path = folder / f"{handle.id}.json"
            if path.exists():
                continue
            # Decrypted: the session's payload keys are gone after it, and the replayer reads
            # unencrypted payloads as they are.
            history = decrypted(await handle.fetch_history(), CODEC)
            last = history.events[-1]
            if last.HasField("workflow_execution_completed_event_attributes"):
                path.write_text(history.to_json())

    # ---- reading what the run left in the database
    def refund(self, refund_id: str) -> RefundRow:
        with session_scope(self.engine, readonly=True) as session:
            row = session.get(RefundRow, refund_id)
            assert row is not None, f"no refund row {refund_id}"
            return row

    def outbox(self, refund_id: str, channel: str | None = None) -> list[OutboxRow]:
        with session_scope(self.engine, readonly=True) as session:
            stmt = select(OutboxRow).where(OutboxRow.refund_id == refund_id)
            if channel:
                stmt = stmt.where(OutboxRow.channel == channel)
            return list(session.exec(stmt.order_by(col(OutboxRow.id))).all())

    def templates(self, refund_id: str, channel: str = "customer") -> list[str]:
        return [row.template for row in self.outbox(refund_id, channel)]

    def audit(self, refund_id: str) -> list[AuditEventRow]:
        with session_scope(self.engine, readonly=True) as session:
            stmt = select(AuditEventRow).where(AuditEventRow.refund_id == refund_id)
            return list(session.exec(stmt.order_by(col(AuditEventRow.id))).all())

    def audit_kinds(self, refund_id: str) -> list[str]:
        return [row.kind for row in self.audit(refund_id)]

    def payouts(self, refund_id: str) -> list[PayoutRow]:
        with session_scope(self.engine, readonly=True) as session:
            stmt = select(PayoutRow).where(PayoutRow.refund_id == refund_id)
            return list(session.exec(stmt.order_by(col(PayoutRow.id))).all())

    def reservations(self, refund_id: str) -> list[ReservationRow]:
        with session_scope(self.engine, readonly=True) as session:
            stmt = select(ReservationRow).where(ReservationRow.refund_id == refund_id)
            return list(session.exec(stmt).all())

    def assert_books_balance(self, state: RefundState) -> None:
        """The refund row, the payout rows, the reservations and the ledger tell one story,
        whatever path (and whatever ops action) the refund took."""
        refund_id = state.refund_id
        assert self.refund(refund_id).status == state.status.value
        rows = {row.payout_key: row for row in self.payouts(refund_id)}
        for record in state.payouts:
            if record.key in rows:  # a tranche never sent has no row
                assert rows[record.key].status == record.status.value, record.key
        settled = sum(row.amount for row in rows.values() if row.status == "settled")
        holds = self.reservations(refund_id)
        assert sum(hold.consumed for hold in holds) == settled
        assert self.ledger_total(refund_id) == settled
        if state.status is RefundStatus.COMPLETED:
            assert state.quote is not None and settled == state.quote.total
            assert {hold.state for hold in holds} <= {"consumed"}
        elif state.status in (RefundStatus.CANCELLED, RefundStatus.REJECTED):
            assert settled == 0 and {hold.state for hold in holds} <= {"released"}

    def ledger_total(self, refund_id: str) -> int:
        """What the ledger says this refund paid out of the merchant's refunds account."""
        with session_scope(self.engine, readonly=True) as session:
            stmt = (
                select(LedgerEntryRow.amount)
                .join(
                    LedgerPostingRow, col(LedgerPostingRow.posting_id) == LedgerEntryRow.posting_id
                )
                .where(
                    LedgerPostingRow.refund_id == refund_id,
                    LedgerEntryRow.account == refunds_account(MERCHANT),
                )
            )
            return sum(session.exec(stmt).all())

    def tender(self, payment_id: str) -> TenderBalanceRow:
        with session_scope(self.engine, readonly=True) as session:
            stmt = select(TenderBalanceRow).where(TenderBalanceRow.payment_id == payment_id)
            row = session.exec(stmt).first()
            assert row is not None
            return row


def payment(
    pid: str, method: str, captured: int, now: datetime, currency: str = "CNY"
) -> dict[str, Any]:
    return {
        "payment_id": pid,
        "method": method,
        "provider_txn_id": f"txn-{pid}",
        "captured": captured,
        "currency": currency,
        "paid_at": (now - timedelta(days=2)).isoformat(),
    }


@asynccontextmanager
async def open_stack(
    env: WorkflowEnvironment,
    tmp_path: Path,
    routes: dict[PaymentMethod, Gateway] | None = None,
    notify: NotifyConfig | None = None,
    database_url: str | None = None,
    deployment: WorkerDeploymentConfig | None = None,
) -> AsyncIterator[Stack]:
    """A migrated database (SQLite unless ``database_url`` names another) with a merchant and
    its approvers, and a worker on its own task queue whose gateways are the sandbox, the store
    balance, and ``routes`` over them; ``deployment`` makes the worker versioned. Runs still open
    at the end are terminated."""
    url = database_url or f"sqlite:///{tmp_path / 'refundflow.db'}"
    upgrade(url)
    engine = make_engine(url)
    with session_scope(engine) as session:
        upsert_merchant(session, merchant_id=MERCHANT, name="Test shop")
        for name in APPROVERS:
            create_api_key(session, merchant_id=MERCHANT, name=name, role="approver")
    sandbox = SandboxGateway(path=tmp_path / "sandbox.db", settle_after_queries=1)
    gateways: dict[PaymentMethod, Any] = {m: sandbox for m in PaymentMethod}
    gateways[PaymentMethod.BALANCE] = BalanceGateway(engine)
    gateways.update(routes or {})
    activities = RefundActivities(engine, gateways, keyring=DB_KEYRING)
    task_queue = f"refunds-{uuid.uuid4().hex[:8]}"
    notices = NotifyActivities.from_config(engine, notify or NotifyConfig(), keyring=DB_KEYRING)
    async with build_worker(
        env.client, activities, task_queue=task_queue, notify=notices, deployment=deployment
    ):
        stack = Stack(env=env, engine=engine, sandbox=sandbox, task_queue=task_queue)
        try:
            yield stack
        finally:
            # A run left open by a failed test would hold the shared server's clock: its
            # pending activities have no worker once this one stops.
            await stack.terminate_open_runs()
    await notices.aclose()
    engine.dispose()


def histories_to_record() -> Path | None:
    """Where ``REFUNDFLOW_RECORD_HISTORIES`` asks the path tests to save their histories:
    ``1`` the histories folder, a name a folder of that name in it (a new code path's runs
    beside the older ones, all replayed by test_history). Unset: nowhere."""
    wanted = os.environ.get("REFUNDFLOW_RECORD_HISTORIES")
    if not wanted:
        return None
    folder = Path(__file__).parent / "histories"
    return folder if wanted == "1" else folder / wanted


@pytest.fixture
async def stack(env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Stack]:
    async with open_stack(env, tmp_path) as opened:
        yield opened
        folder = histories_to_record()
        if folder is not None:
            await opened.record_histories(folder)


def approver_keys(engine: Engine) -> list[ApiKeyRow]:
    with session_scope(engine, readonly=True) as session:
        return list(session.exec(select(ApiKeyRow)).all())


def local_activities(history: WorkflowHistory) -> list[str]:
    """The local activities of a history, in order (their markers' metadata is not encoded)."""
    markers = [
        e.marker_recorded_event_attributes.details["data"]
        for e in history.events
        if e.HasField("marker_recorded_event_attributes")
        and "data" in e.marker_recorded_event_attributes.details
    ]
    return [json.loads(data.payloads[0].data)["activity_type"] for data in markers]
