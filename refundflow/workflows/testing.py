"""Helpers for environments that do not register search attributes on start (the
time-skipping test server): register them through the operator service."""

from __future__ import annotations

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client

from refundflow.workflows.search_attributes import ALL


async def register_search_attributes(client: Client) -> None:
    """Add every refund search attribute (the test server answers only AddSearchAttributes)."""
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=client.namespace,
            search_attributes={
                key.name: IndexedValueType.ValueType(key.indexed_value_type) for key in ALL
            },
        )
    )
