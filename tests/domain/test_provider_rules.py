from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from refundflow.domain.orders import PaymentMethod
from refundflow.domain.provider_rules import provider_refusal

NOW = datetime(2027, 3, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("route", "days_ago", "code"),
    [
        (PaymentMethod.ALIPAY, 364, None),
        (PaymentMethod.ALIPAY, 366, "REFUND_WINDOW_EXPIRED"),
        (PaymentMethod.WECHAT, 366, "REFUND_WINDOW_EXPIRED"),
        (PaymentMethod.PAYPAL, 179, None),
        (PaymentMethod.PAYPAL, 181, "REFUND_WINDOW_EXPIRED"),
        (PaymentMethod.CARD, 2000, None),  # no fixed window: the card network decides
    ],
)
def test_refund_windows(route: PaymentMethod, days_ago: int, code: str | None) -> None:
    refused = provider_refusal(
        route, paid_at=NOW - timedelta(days=days_ago), now=NOW, earlier_refunds=0
    )
    assert (refused[0] if refused else None) == code


def test_wechat_takes_at_most_fifty_refunds_on_one_payment() -> None:
    paid = NOW - timedelta(days=3)
    assert provider_refusal(PaymentMethod.WECHAT, paid_at=paid, now=NOW, earlier_refunds=49) is None
    refused = provider_refusal(PaymentMethod.WECHAT, paid_at=paid, now=NOW, earlier_refunds=50)
    assert refused is not None and refused[0] == "TOO_MANY_REFUNDS" and "50" in refused[1]
    assert (
        provider_refusal(PaymentMethod.ALIPAY, paid_at=paid, now=NOW, earlier_refunds=500) is None
    )
