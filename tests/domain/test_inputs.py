"""Bad input raises a typed error with a stable code (and, being pure, changes nothing)."""

from typing import Any

import pytest

from refundflow.domain.errors import DomainError, InvalidInput, PolicyInvalid
from refundflow.domain.money import Money, exponent, format_minor, from_major, to_major
from refundflow.domain.orders import OrderSnapshot, RefundRequest
from refundflow.domain.policy import DEFAULT_POLICY, Policy
from tests.domain.factories import order, payment


def _request(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "order_id": "o-1",
        "items": [{"line_id": "l1", "quantity": 1}],
        "reason": "DAMAGED",
        "requested_by": "desk",
    }
    data.update(overrides)
    return data


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"items": [{"line_id": "l1", "quantity": -1}]}, "negative_quantity"),
        ({"items": [{"line_id": "l1", "quantity": 0}]}, "negative_quantity"),
        ({"items": [], "goodwill_amount": None}, "empty_request"),
        ({"goodwill_amount": -5, "items": []}, "negative_amount"),
        ({"currency": "XYZ"}, "unknown_currency"),
        (
            {"items": [{"line_id": "l1", "quantity": 1}, {"line_id": "l1", "quantity": 1}]},
            "duplicate_line",
        ),
        ({"destination": {"kind": "BANK_TRANSFER"}}, "destination_incomplete"),
        ({"reason": "BORED"}, "invalid_request"),
        ({"status": "COMPLETED"}, "invalid_request"),  # unknown fields are refused
    ],
)
def test_refund_request_errors_have_stable_codes(overrides: dict[str, Any], code: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        RefundRequest.parse(_request(**overrides))
    assert exc.value.code == code
    assert exc.value.details["errors"]


def test_money_amounts_must_be_integers() -> None:
    with pytest.raises(InvalidInput) as exc:
        RefundRequest.parse(_request(items=[], goodwill_amount=12.5))
    assert exc.value.code == "invalid_request"
    with pytest.raises(InvalidInput):
        RefundRequest.parse(_request(items=[], goodwill_amount="12.50"))


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        (
            {"lines": [{"line_id": "a", "sku": "A", "quantity": -2, "unit_price": 1}]},
            "negative_quantity",
        ),
        (
            {
                "lines": [
                    {"line_id": "a", "sku": "A", "quantity": 1, "unit_price": 1},
                    {"line_id": "a", "sku": "B", "quantity": 1, "unit_price": 1},
                ]
            },
            "duplicate_line",
        ),
        ({"discounts": [{"code": "BIG", "amount": 10001}]}, "discount_exceeds_amount"),
        ({"discounts": [{"code": "X", "amount": 1, "line_ids": ["zz"]}]}, "unknown_line"),
        ({"payments": [payment("p1", "alipay", 100, "ABC")]}, "unknown_currency"),
        ({"payments": [payment("p1", "cash", 100)]}, "invalid_order"),
    ],
)
def test_order_errors_have_stable_codes(overrides: dict[str, Any], code: str) -> None:
    base = order().model_dump(mode="json")
    base.update(overrides)
    with pytest.raises(InvalidInput) as exc:
        OrderSnapshot.parse(base)
    assert exc.value.code == code


@pytest.mark.parametrize(
    "text",
    [
        "limits: {auto_approve_max: '9000', single_approver_max: '100'}",
        "restocking_fee_bps: {CHANGED_MIND: 20000}",
        "return_window_days: {NOT_A_REASON: 3}",
        "shipping_refund: sometimes",
        "unknown_key: 1",
        "- a list\n- not a mapping",
        "limits: [unclosed",
        "approval_sla: {remind_after_hours: 100, escalate_after_hours: 10}",
    ],
)
def test_malformed_policy_is_refused_with_policy_invalid(text: str) -> None:
    with pytest.raises(PolicyInvalid) as exc:
        Policy.from_yaml(text)
    assert exc.value.code == "policy_invalid"


def test_policy_yaml_round_trip_and_partial_documents() -> None:
    assert Policy.from_yaml(DEFAULT_POLICY.to_yaml()) == DEFAULT_POLICY
    assert Policy.from_yaml("") == DEFAULT_POLICY
    custom = Policy.from_yaml(
        "version: 3\nshipping_refund: always\nlimits_by_currency:\n"
        "  JPY: {auto_approve_max: '30000', single_approver_max: '800000'}\n"
    )
    assert custom.version == 3
    assert custom.limit("auto_approve_max", "JPY") == 30000
    assert custom.limit("auto_approve_max", "CNY") == 20000


def test_currency_exponents_come_from_iso_4217() -> None:
    assert (exponent("CNY"), exponent("JPY"), exponent("KWD"), exponent("HUF")) == (2, 0, 3, 2)
    with pytest.raises(DomainError) as exc:
        exponent("XAU")  # gold has no minor unit
    assert exc.value.code == "unknown_currency"
    assert from_major("12.34", "CNY") == 1234
    assert from_major("1.234", "KWD") == 1234
    assert str(to_major(1234, "JPY")) == "1234"
    with pytest.raises(DomainError) as too_fine:
        from_major("1.5", "JPY")
    assert too_fine.value.code == "too_many_decimals"


def test_money_formatting_and_currency_guard() -> None:
    assert format_minor(123456, "CNY", "zh-CN") == "¥1,234.56"
    assert format_minor(1234, "JPY", "en") == "¥1,234"
    assert format_minor(1234, "KWD", "en") == "KWD1.234"
    a = Money(amount=100, currency="cny")
    assert (a + Money(amount=5, currency="CNY")).amount == 105
    with pytest.raises(DomainError) as exc:
        a + Money(amount=5, currency="USD")
    assert exc.value.code == "currency_mismatch"
