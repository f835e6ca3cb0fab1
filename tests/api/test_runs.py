"""The API's calls to refund runs when Temporal is unreachable, slow, or the run is closed:
provider events reach their run at least once, closed runs are read without a worker,
messages have a deadline, and every outage answers problem+json with a stable code."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from sqlmodel import select
from temporalio.client import (
    Client,
    DescribeWorkflowInput,
    Interceptor,
    OutboundInterceptor,
    QueryWorkflowInput,
    SignalWorkflowInput,
    StartWorkflowInput,
    StartWorkflowUpdateInput,
    WorkflowExecutionDescription,
    WorkflowHandle,
    WorkflowUpdateHandle,
)
from temporalio.service import RPCError, RPCStatusCode

from refundflow.db.engine import session_scope
from refundflow.db.models import WebhookEventRow
from refundflow.domain.states import PayoutEvent, PayoutStatus, RefundStatus
from refundflow.workflows.client import workflow_id
from refundflow.workflows.refund import RefundWorkflow
from tests.api.conftest import Api

REFUND = {"order_id": "o-1", "items": [{"line_id": "l1", "quantity": 1}], "reason": "LATE_DELIVERY"}
PROBLEM = "application/problem+json"


class Outage(Interceptor):
    """Wraps a real client: its next ``calls`` calls to Temporal (every call when ``None``)
    fail the way they do when the cluster cannot be reached."""

    def __init__(self, calls: int | None = None) -> None:
        self.calls = calls

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        return _FailingCalls(next, self)

    def check(self) -> None:
        if self.calls == 0:
            return
        if self.calls is not None:
            self.calls -= 1
        raise RPCError("tcp connect error", RPCStatusCode.UNAVAILABLE, b"")

    def client(self, real: Client) -> Client:
        config = real.config()
        config["interceptors"] = [*config["interceptors"], self]
        return Client(**config)


class _FailingCalls(OutboundInterceptor):
    def __init__(self, next: OutboundInterceptor, outage: Outage) -> None:
        super().__init__(next)
        self.outage = outage

    async def start_workflow(self, input: StartWorkflowInput) -> WorkflowHandle[Any, Any]:
        self.outage.check()
        return await super().start_workflow(input)

    async def describe_workflow(self, input: DescribeWorkflowInput) -> WorkflowExecutionDescription:
        self.outage.check()
        return await super().describe_workflow(input)

    async def query_workflow(self, input: QueryWorkflowInput) -> Any:
        self.outage.check()
        return await super().query_workflow(input)

    async def signal_workflow(self, input: SignalWorkflowInput) -> None:
        self.outage.check()
        await super().signal_workflow(input)

    async def start_workflow_update(
        self, input: StartWorkflowUpdateInput
    ) -> WorkflowUpdateHandle[Any]:
        self.outage.check()
        return await super().start_workflow_update(input)


async def start(api: Api, key: str, body: dict[str, Any] | None = None) -> str:
    assert (await api.put_order()).status_code == 200
    response = await api.call(
        "client", "POST", "/v1/refunds", json=body or REFUND, headers={"Idempotency-Key": key}
    )
    assert response.status_code == 202, response.text
    return str(response.json()["refund_id"])


async def wait_for(api: Api, refund_id: str, status: RefundStatus) -> dict[str, Any]:
    """The refund's GET once the run reports ``status`` (workflow time moves, not ours)."""
    for _ in range(50):
        view: dict[str, Any] = (await api.call("ops", "GET", f"/v1/refunds/{refund_id}")).json()
        if view["status"] == status.value:
            return view
        await api.env.sleep(60)
    raise AssertionError(f"{refund_id} never reached {status}: {view}")


async def awaiting_funds(api: Api, key: str) -> str:
    """A refund paid out and waiting for the provider's word, which only a webhook brings."""
    api.sandbox.default_settlement("never")
    refund_id = await start(api, key)
    await wait_for(api, refund_id, RefundStatus.AWAITING_FUNDS)
    return refund_id


def webhook_events(api: Api, event_id: str) -> list[WebhookEventRow]:
    with session_scope(api.engine, readonly=True) as s:
        return list(s.exec(select(WebhookEventRow).where(WebhookEventRow.event_id == event_id)))


async def post_webhook(api: Api, event: PayoutEvent) -> httpx.Response:
    body = event.model_dump_json().encode()
    headers = api.sandbox.sign_webhook(body)
    return await api.http.post("/v1/webhooks/sandbox", content=body, headers=headers)


async def test_a_webhook_the_run_did_not_get_is_not_recorded_and_its_retry_delivers_it(
    api: Api,
) -> None:
    refund_id = await awaiting_funds(api, "wh-retry")
    handle = api.env.client.get_workflow_handle_for(RefundWorkflow.run, workflow_id(refund_id))
    key = (await handle.query(RefundWorkflow.view)).payouts[0].key
    event = PayoutEvent(
        payout_key=key, status=PayoutStatus.SETTLED, event_id="evt-retry", provider_ref="sbx"
    )
    api.app.state.temporal = Outage(calls=1).client(api.env.client)

    lost = await post_webhook(api, event)
    assert lost.status_code == 503, lost.text
    assert lost.headers["content-type"] == PROBLEM
    assert lost.json()["code"] == "temporal_unavailable"
    assert lost.headers["retry-after"]
    assert webhook_events(api, "evt-retry") == []
    assert (await handle.query(RefundWorkflow.view)).payouts[0].status is PayoutStatus.ACCEPTED

    retried = await post_webhook(api, event)
    assert retried.status_code == 202, retried.text
    assert retried.json()["status"] == "accepted"
    assert len(webhook_events(api, "evt-retry")) == 1
    again = await post_webhook(api, event)
    assert again.json()["status"] == "duplicate"
    # The sandbox never settles on its own: only the delivered event completes the refund.
    assert await api.finish(refund_id) == "COMPLETED"
    # An event for a finished run has nowhere to go; it stays on record for ops.
    late = await post_webhook(api, event.model_copy(update={"event_id": "evt-late"}))
    assert late.status_code == 202 and late.json()["status"] == "recorded"
    assert len(webhook_events(api, "evt-late")) == 1


async def test_a_finished_refund_is_read_from_its_run_with_no_worker_polling(api: Api) -> None:
    refund_id = await start(api, "done-read")
    assert await api.finish(refund_id) == "COMPLETED"
    # A query on a closed run needs a worker to replay it; with none, only a read that sends
    # no query task can answer.
    await api.worker.shutdown()
    response = await api.call("client", "GET", f"/v1/refunds/{refund_id}")
    assert response.status_code == 200, response.text
    view = response.json()
    assert view["status"] == "COMPLETED"
    assert view["live"] is not None, "the finished run's last view is its result"
    assert view["live"]["status"] == "COMPLETED"
    assert [p["status"] for p in view["live"]["payouts"]] == ["settled"]


async def test_a_run_ended_early_is_read_from_the_stored_row(api: Api) -> None:
    refund_id = await awaiting_funds(api, "ended-early")
    await api.env.client.get_workflow_handle(workflow_id(refund_id)).terminate("ops ended it")
    response = await api.call("client", "GET", f"/v1/refunds/{refund_id}")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "AWAITING_FUNDS"
    assert response.json()["live"] is None, "a closed run is not queried"


async def test_a_message_nobody_answers_gets_a_deadline(api_own_server: Api) -> None:
    api = api_own_server
    refund_id = await awaiting_funds(api, "unanswered")
    settings = api.app.state.settings
    api.app.state.settings = settings.model_copy(update={"update_timeout_seconds": 1.0})
    await api.worker.shutdown()  # the run is open, but nothing runs it
    # The guard only turns a hang into a failure; the deadline under test is 1 s.
    response = await asyncio.wait_for(
        api.call("client", "POST", f"/v1/refunds/{refund_id}/receipt", json={"received": True}),
        timeout=60,
    )
    assert response.status_code == 504, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["code"] == "update_timeout"


async def test_a_message_to_a_finished_refund_is_wrong_state(api: Api) -> None:
    refund_id = await start(api, "done-cancel")
    assert await api.finish(refund_id) == "COMPLETED"
    response = await api.call("client", "POST", f"/v1/refunds/{refund_id}/cancel", json={})
    assert response.status_code == 409, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["code"] == "wrong_state"


MESSAGES: list[tuple[str, str, dict[str, Any]]] = [
    ("approver", "decisions", {"decision": "APPROVE", "quote_fingerprint": "x"}),
    ("warehouse", "supplier-response", {"supplier_ref": "s", "can_cancel": True}),
    ("warehouse", "return-inspection", {}),
    ("client", "customer-confirmation", {"confirmed": True}),
    ("client", "receipt", {"received": True}),
    ("client", "cancel", {}),
    ("ops", "ops-actions", {"action": "resume"}),
]


async def test_an_unreachable_cluster_answers_503_on_every_route(api: Api) -> None:
    refund_id = await awaiting_funds(api, "outage")
    handle = api.env.client.get_workflow_handle_for(RefundWorkflow.run, workflow_id(refund_id))
    key = (await handle.query(RefundWorkflow.view)).payouts[0].key
    api.app.state.temporal = Outage().client(api.env.client)

    read = await api.call("client", "GET", f"/v1/refunds/{refund_id}")
    assert read.status_code == 200, read.text
    assert (read.json()["status"], read.json()["live"]) == ("AWAITING_FUNDS", None)
    created = await api.call(
        "client", "POST", "/v1/refunds", json=REFUND, headers={"Idempotency-Key": "outage-2"}
    )
    event = PayoutEvent(payout_key=key, status=PayoutStatus.SETTLED, event_id="evt-outage")
    webhook = await post_webhook(api, event)
    messages = [
        await api.call(who, "POST", f"/v1/refunds/{refund_id}/{path}", json=body)
        for who, path, body in MESSAGES
    ]
    for response in [created, webhook, *messages]:
        assert response.status_code == 503, (response.request.url, response.text)
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["code"] == "temporal_unavailable"
