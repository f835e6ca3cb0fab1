"""Search attributes that let ops filter refunds in the Temporal UI and CLI (docs/architecture.md,
"Visibility")."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

REFUND_STATUS = SearchAttributeKey.for_keyword("RefundStatus")
REFUND_ORDER_ID = SearchAttributeKey.for_keyword("RefundOrderId")
REFUND_MERCHANT = SearchAttributeKey.for_keyword("RefundMerchant")
REFUND_CHANNEL = SearchAttributeKey.for_keyword("RefundChannel")
REFUND_AMOUNT = SearchAttributeKey.for_int("RefundAmount")
REFUND_CURRENCY = SearchAttributeKey.for_keyword("RefundCurrency")
REFUND_TAGS = SearchAttributeKey.for_keyword_list("RefundTags")

ALL = (
    REFUND_STATUS,
    REFUND_ORDER_ID,
    REFUND_MERCHANT,
    REFUND_CHANNEL,
    REFUND_AMOUNT,
    REFUND_CURRENCY,
    REFUND_TAGS,
)


def dev_server_flags() -> list[str]:
    """``temporal server start-dev`` arguments registering every attribute."""
    kinds = {"KEYWORD": "Keyword", "INT": "Int", "KEYWORD_LIST": "KeywordList"}
    flags: list[str] = []
    for key in ALL:
        flags += ["--search-attribute", f"{key.name}={kinds[key.indexed_value_type.name]}"]
    return flags
