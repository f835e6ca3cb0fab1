"""The API's calls to a refund's run: each has a deadline, and Temporal's answers become
problem codes, so a slow or unreachable cluster gives a clear error instead of a hung request."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from refundflow.api.errors import ApiError
from refundflow.domain.states import PayoutEvent, RefundState
from refundflow.workflows.client import workflow_id
from refundflow.workflows.refund import RefundWorkflow


class RefundRuns:
    """Provider events for refund runs, as the HTTP API needs them."""

    def __init__(
        self,
        client: Client,
        *,
        signal_timeout: timedelta,
    ) -> None:
        self.client = client
        self.signal_timeout = signal_timeout

    def _handle(self, refund_id: str) -> WorkflowHandle[RefundWorkflow, RefundState]:
        return self.client.get_workflow_handle_for(RefundWorkflow.run, workflow_id(refund_id))

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
