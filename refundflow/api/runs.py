"""The API's calls to a refund's run: each has a deadline, and Temporal's answers become
problem codes, so a slow or unreachable cluster gives a clear error instead of a hung request."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine
from temporalio.client import (
    Client,
    RPCTimeoutOrCancelledError,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
    WorkflowUpdateFailedError,
)
from temporalio.common import QueryRejectCondition
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from refundflow.api import schemas as api
from refundflow.api.errors import ApiError, status_for
from refundflow.db.engine import session_scope
from refundflow.db.repository import append_audit
from refundflow.domain.states import TERMINAL, PayoutEvent, RefundState
from refundflow.workflows.client import workflow_id
from refundflow.workflows.refund import RefundWorkflow


class RefundRuns:
    """Reads, messages and provider events for refund runs, as the HTTP API needs them."""

    def __init__(
        self,
        client: Client,
        *,
        engine: Engine,
        query_timeout: timedelta,
        update_timeout: timedelta,
        signal_timeout: timedelta,
    ) -> None:
        self.client = client
        self.engine = engine
        self.query_timeout = query_timeout
        self.update_timeout = update_timeout
        self.signal_timeout = signal_timeout

    def _handle(self, refund_id: str) -> WorkflowHandle[RefundWorkflow, RefundState]:
        return self.client.get_workflow_handle_for(RefundWorkflow.run, workflow_id(refund_id))

    async def view(self, refund_id: str, *, stored_status: str) -> RefundState | None:
        """The run's own view of the refund, or ``None`` when it has none to give in time
        (closed without finishing, unreachable, slow): the stored row is the answer then.

        A closed run is never queried: a query on it would need a worker to replay its whole
        history, and would hang while none polls. A finished refund's last view is the run's
        result, which the server reads from history on its own."""
        handle = self._handle(refund_id)
        # The SDK retries some failures past ``rpc_timeout``; the outer deadline is the bound.
        try:
            async with asyncio.timeout(self.query_timeout.total_seconds()):
                if stored_status in TERMINAL:
                    return await self._final_view(handle)
                return await handle.query(
                    RefundWorkflow.view,
                    reject_condition=QueryRejectCondition.NOT_OPEN,
                    rpc_timeout=self.query_timeout,
                )
        except (
            RPCError,
            TimeoutError,
            WorkflowQueryRejectedError,  # closed since the row was written
            WorkflowQueryFailedError,
        ):
            return None

    async def _final_view(
        self, handle: WorkflowHandle[RefundWorkflow, RefundState]
    ) -> RefundState | None:
        described = await handle.describe(rpc_timeout=self.query_timeout)
        if described.status is not WorkflowExecutionStatus.COMPLETED:
            # Still delivering its last notices (the row turns terminal first), or ended by
            # ops: no final view to read without a worker; the row says enough.
            return None
        return await handle.result(rpc_timeout=self.query_timeout)

    async def update(self, refund_id: str, update: Any, msg: Any, *, actor: str) -> api.MessageOut:
        """Send one message (a workflow update) and return the run's answer; a refusal becomes
        its problem code (and an audit row: a refused message leaves no trace in the run), a
        finished run 409 ``wrong_state``, no answer in time 504."""
        handle = self._handle(refund_id)
        try:
            # ``rpc_timeout`` bounds each call to the server; the SDK may call again (retries,
            # polling for the outcome of an accepted update), so the whole wait is bounded too.
            async with asyncio.timeout(self.update_timeout.total_seconds()):
                result = await handle.execute_update(update, msg, rpc_timeout=self.update_timeout)
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError):
                code, detail = cause.type or "refused", cause.message
            else:
                code, detail = "refused", str(cause or err)
            what = getattr(update, "__name__", "message")
            await asyncio.to_thread(
                self._record_refusal, refund_id, actor=actor, message=what, code=code, detail=detail
            )
            raise ApiError(status_for(code), code, detail) from err
        except (TimeoutError, RPCTimeoutOrCancelledError) as err:
            raise ApiError(
                504,
                "update_timeout",
                f"refund {refund_id} did not answer within {self.update_timeout.total_seconds():g}"
                " s; the message may still take effect, so read the refund before sending again",
            ) from err
        except RPCError as err:
            # Both the dev server and the test server answer NOT_FOUND for an update on a
            # closed run (their messages differ); every other status goes to the RPCError
            # handler (503 when Temporal is unreachable).
            if err.status is RPCStatusCode.NOT_FOUND:
                raise ApiError(409, "wrong_state", "the refund is no longer running") from err
            raise
        return api.MessageOut(
            accepted=result.accepted, status=result.status.value, detail=result.detail
        )

    def _record_refusal(
        self, refund_id: str, *, actor: str, message: str, code: str, detail: str
    ) -> None:
        with session_scope(self.engine) as session:
            append_audit(
                session,
                refund_id=refund_id,
                kind="message_refused",
                actor=actor,
                data={"message": message, "code": code, "detail": detail},
            )

    async def payout_event(self, refund_id: str, event: PayoutEvent) -> bool:
        """Hand a provider's event to the run: ``True`` once it has it, ``False`` when the run
        has finished. Raises when it could not be handed over, so the caller records nothing
        and the provider retries."""
        handle = self._handle(refund_id)
        try:
            async with asyncio.timeout(self.signal_timeout.total_seconds()):
                await handle.signal(
                    RefundWorkflow.payout_event, event, rpc_timeout=self.signal_timeout
                )
        except TimeoutError as err:
            raise ApiError(
                503, "temporal_unavailable", "the workflow service did not answer in time; retry"
            ) from err
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                return False
            raise
        return True
