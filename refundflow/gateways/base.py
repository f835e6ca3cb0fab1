"""The one interface every payment provider sits behind (docs/architecture.md, "Providers")."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Protocol

from pydantic import BaseModel, ConfigDict

from refundflow.domain.orders import BankAccount, PaymentMethod
from refundflow.domain.states import PayoutEvent, PayoutStatus


class PayoutInstruction(BaseModel):
    """What to pay, where, under which idempotency key."""

    model_config = ConfigDict(frozen=True)

    payout_key: str
    """Sent to the provider as its refund number / idempotency key; never re-minted."""
    refund_id: str
    merchant_id: str
    customer_id: str
    route: PaymentMethod
    amount: int
    currency: str
    original_txn_id: str = ""
    """The provider's id of the payment being refunded (for original-route refunds)."""
    original_amount: int = 0
    bank_account: BankAccount | None = None
    reason: str = ""
    provider_ref: str = ""
    """The provider's id of this refund, once an earlier answer gave it (for queries)."""
    original_paid_at: datetime | None = None


class PayoutResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    status: PayoutStatus
    provider_ref: str = ""
    """The provider's id of the refund."""
    trace_ref: str = ""
    """What the customer can give their bank (card ARN, WeChat received account...)."""
    code: str = ""
    """The provider's own status or error code, kept for ops."""
    message: str = ""
    settled_at: datetime | None = None


WEBHOOK_TOLERANCE_S = 300.0
"""How far a notification's signed send time may be from our clock, either way: older is a
replay, newer a forged or broken clock. The same window for every provider."""


def check_sent_time(provider: str, sent: float, now: float, tolerance: float) -> None:
    """Refuse a signed notification (ValueError) sent outside ``tolerance`` of ``now``."""
    if abs(now - sent) > tolerance:
        raise ValueError(
            f"{provider} notification sent {sent - now:+.0f} s from our clock, outside the"
            f" tolerance of {tolerance:.0f} s (replayed, or a clock far off)"
        )


class GatewayError(Exception):
    """A call whose outcome is known to be 'nothing happened'; safe to retry."""


class GatewayTimeout(Exception):
    """The outcome is unknown: the provider may have committed. Query before any resend."""


class GatewayMismatch(Exception):
    """The provider answered under our key with a refund we did not ask for (another amount
    or currency): money may have moved, so neither a retry nor a fallback is safe. Ops look."""


class Gateway(Protocol):
    name: str

    async def refund(self, instruction: PayoutInstruction) -> PayoutResult:
        """Send the refund. Raises GatewayError (retryable), GatewayTimeout (unknown) or
        GatewayMismatch (the provider holds another refund under our key)."""
        ...

    async def query(self, instruction: PayoutInstruction) -> PayoutResult:
        """The provider's current view of the refund under this instruction's key (NOT_FOUND
        only when the provider says there is none). It takes the whole instruction because
        several providers look a refund up by the payment as well as by our key."""
        ...

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> PayoutEvent:
        """Check a webhook's signature and turn it into an event; raises ValueError if forged."""
        ...
