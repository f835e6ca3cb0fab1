"""A refund paid out in another currency through the API: the client names the FX rate, the
quote converts with it and charges the policy's cross-border fee, and the run pays the
converted amount."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.api.conftest import Api
from tests.workflows.conftest import ACCOUNT

RATE = {"base": "USD", "quote": "CNY", "rate": "7.1000", "source": "manual"}


def _international(order_id: str) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "items": [{"line_id": "l1", "quantity": 1}],
        "reason": "LATE_DELIVERY",
        "destination": {"kind": "BANK_TRANSFER", "bank_account": ACCOUNT},  # a CNY account
    }


async def _usd_order(api: Api, order_id: str) -> None:
    payments = (await api.put_order(order_id)).json()["order"]["payments"]
    usd = [{**payments[0], "method": "paypal", "currency": "USD", "captured": 8000}]
    put = await api.put_order(order_id, country="US", currency="USD", payments=usd)
    assert put.status_code == 200, put.text


async def test_a_usd_order_refunded_to_a_cny_account_converts_at_the_given_rate(
    api: Api,
) -> None:
    await _usd_order(api, "o-fx")
    rate = {**RATE, "as_of": (datetime.now(UTC) - timedelta(minutes=5)).isoformat()}
    body = {**_international("o-fx"), "fx_rate": rate}
    quoted = await api.call("client", "POST", "/v1/refunds/quote", json=body)
    assert quoted.status_code == 200, quoted.text
    quote = quoted.json()
    assert quote["total"] == 4000 and quote["payout_currency"] == "CNY"
    assert quote["fx"]["converted_total"] == 28400  # USD 40.00 at 7.1
    assert quote["fx"]["cross_border_fee"] == 426  # 1.5% by the default policy
    no_rate = await api.call("client", "POST", "/v1/refunds/quote", json=_international("o-fx"))
    assert no_rate.status_code == 422 and no_rate.json()["code"] == "fx_rate_missing"

    started = await api.call(
        "client", "POST", "/v1/refunds", json=body, headers={"Idempotency-Key": "fx-1"}
    )
    assert started.status_code == 202, started.text
    assert started.json()["quote"]["fx"]["rate"]["rate"] == "7.1000"
    other_rate = {**body, "fx_rate": {**rate, "rate": "7.2000"}}
    reused = await api.call(
        "client", "POST", "/v1/refunds", json=other_rate, headers={"Idempotency-Key": "fx-1"}
    )
    assert reused.status_code == 422 and reused.json()["code"] == "idempotency_key_reused"
    assert await api.finish(started.json()["refund_id"]) == "COMPLETED"
    view = await api.call("client", "GET", f"/v1/refunds/{started.json()['refund_id']}")
    [payout] = view.json()["live"]["payouts"]
    assert (payout["payout_currency"], payout["payout_amount"]) == ("CNY", 28400)
