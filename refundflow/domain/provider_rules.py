"""What each provider refuses, checked before we ask it (docs/architecture.md, "Providers"): a
refund after the provider's window for the original payment, or beyond its count of refunds per
payment. A payout refused here is a failure for good, handled by policy like the provider's own
refusal, with no call that could only fail."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from refundflow.domain.orders import PaymentMethod


@dataclass(frozen=True)
class ProviderLimits:
    window_days: int | None = None
    """Days after the payment within which the provider still refunds it."""
    max_refunds: int | None = None
    """Refunds the provider accepts on one payment."""


LIMITS: dict[PaymentMethod, ProviderLimits] = {
    PaymentMethod.ALIPAY: ProviderLimits(window_days=365),  # twelve months
    PaymentMethod.WECHAT: ProviderLimits(window_days=365, max_refunds=50),
    PaymentMethod.PAYPAL: ProviderLimits(window_days=180),
}


# How long a provider typically takes from accepting a refund to settling it: the follow-up's
# first poll waits this long, so a settlement whose webhook was lost (a crash, a network cut)
# is found in minutes where the provider is fast, without polling slow ones for nothing.
TYPICAL_SETTLE: dict[PaymentMethod, timedelta] = {
    PaymentMethod.ALIPAY: timedelta(minutes=2),  # refunds to the balance settle in seconds
    PaymentMethod.WECHAT: timedelta(minutes=5),  # the balance at once; bank cards take days
    PaymentMethod.PAYPAL: timedelta(minutes=2),
    PaymentMethod.CARD: timedelta(minutes=10),  # Stripe reports the refund succeeded quickly
    PaymentMethod.STRIPE: timedelta(minutes=10),
    PaymentMethod.BANK_TRANSFER: timedelta(hours=2),  # the bank's status report, in batches
}


def first_poll_after(routes: list[PaymentMethod], default: timedelta) -> timedelta:
    """When to first ask about payouts sent through ``routes``: the fastest typical settle
    time among them, or ``default`` (the policy's) for routes without one."""
    known = [TYPICAL_SETTLE[route] for route in routes if route in TYPICAL_SETTLE]
    return min(known) if known else default


def provider_refusal(
    route: PaymentMethod, *, paid_at: datetime | None, now: datetime, earlier_refunds: int
) -> tuple[str, str] | None:
    """``(code, message)`` when ``route``'s provider would refuse this refund, else None."""
    limits = LIMITS.get(route)
    if limits is None:
        return None
    window = limits.window_days
    if window is not None and paid_at is not None and now - paid_at > timedelta(days=window):
        return (
            "REFUND_WINDOW_EXPIRED",
            f"{route.value} refunds a payment for {window} days; this one was paid on"
            f" {paid_at.date().isoformat()}",
        )
    if limits.max_refunds is not None and earlier_refunds >= limits.max_refunds:
        return (
            "TOO_MANY_REFUNDS",
            f"{route.value} accepts at most {limits.max_refunds} refunds on one payment",
        )
    return None
