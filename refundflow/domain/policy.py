"""A merchant's refund policy: versioned, validated, with a built-in default.

Amount limits are written in major units of the refund's currency (``"500.00"``), with optional
per-currency overrides, so one document reads naturally for a CNY shop and still works for JPY
(0 decimals) or KWD (3 decimals).
"""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal
from enum import StrEnum
from typing import Annotated, Any, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from refundflow.domain.errors import PolicyInvalid
from refundflow.domain.money import exponent, from_major
from refundflow.domain.orders import OrderStatus, PaymentMethod, RefundReason


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


Days = Annotated[int, Field(ge=0, le=3650)]
Bps = Annotated[int, Field(ge=0, le=10_000)]
"""Basis points: 100 = 1%."""
MajorAmount = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]


class ChargeRule(StrEnum):
    """When shipping (or an extra fee) is refunded."""

    ALWAYS = "always"
    MERCHANT_FAULT_ONLY = "merchant_fault_only"
    NEVER = "never"


class Bearer(StrEnum):
    MERCHANT = "merchant"
    CUSTOMER = "customer"


class FallbackAction(StrEnum):
    BALANCE = "balance"
    BANK_TRANSFER = "bank_transfer"
    ESCALATE = "escalate"


class Limits(_Frozen):
    """Money thresholds in major units of the refund currency."""

    auto_approve_max: MajorAmount = Decimal("200")
    single_approver_max: MajorAmount = Decimal("5000")
    """Above this a refund is "large": two different approvers."""
    installment_threshold: MajorAmount = Decimal("20000")
    installment_max_tranche: MajorAmount = Decimal("10000")
    customer_confirmation_above: MajorAmount = Decimal("5000")

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.auto_approve_max > self.single_approver_max:
            raise PydanticCustomError(
                "invalid_threshold_order", "auto_approve_max must not exceed single_approver_max"
            )
        if self.installment_max_tranche <= 0:
            raise PydanticCustomError(
                "invalid_threshold_order", "installment_max_tranche must be positive"
            )
        return self

    def minor(self, field: str, currency: str) -> int:
        """A limit in minor units; rounds down to the currency's precision."""
        value: Decimal = getattr(self, field)
        step = Decimal(1).scaleb(-exponent(currency))
        return from_major(value.quantize(step, rounding=ROUND_DOWN), currency)


class Installments(_Frozen):
    enabled: bool = True
    count: Annotated[int, Field(ge=2, le=24)] | None = None
    """Fixed number of tranches; when unset, as many as ``installment_max_tranche`` requires."""
    interval_days: Annotated[int, Field(ge=1, le=90)] = 7


class ReturnRules(_Frozen):
    required_for: list[RefundReason] = [
        RefundReason.NOT_AS_DESCRIBED,
        RefundReason.DAMAGED,
        RefundReason.WRONG_ITEM,
        RefundReason.CHANGED_MIND,
    ]
    """Reasons for which delivered goods must come back before money goes out."""
    deadline_days: Days = 14


class PresaleRules(_Frozen):
    free_cancel_before_production: bool = True
    supplier_response_hours: Annotated[int, Field(ge=1, le=24 * 30)] = 48
    default_cancellation_fee_bps: Bps = 1000
    """Fee kept once production started, unless the supplier reports its own figure."""


class InternationalRules(_Frozen):
    fx_rate_source: str = "manual"
    cross_border_fee_bps: Bps = 150
    cross_border_fee_bearer: Bearer = Bearer.MERCHANT


class ArrivalDays(_Frozen):
    min: Days
    max: Days

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.min > self.max:
            raise PydanticCustomError("invalid_threshold_order", "min must not exceed max")
        return self


def _arrival_default() -> dict[PaymentMethod, ArrivalDays]:
    d = ArrivalDays
    return {
        PaymentMethod.ALIPAY: d(min=1, max=3),
        PaymentMethod.WECHAT: d(min=1, max=3),
        PaymentMethod.CARD: d(min=3, max=7),
        PaymentMethod.STRIPE: d(min=3, max=7),
        PaymentMethod.PAYPAL: d(min=1, max=3),
        PaymentMethod.BANK_TRANSFER: d(min=1, max=3),
        PaymentMethod.BALANCE: d(min=0, max=0),
    }


class FollowUp(_Frozen):
    first_poll_minutes: Annotated[int, Field(ge=1)] = 30
    backoff_factor: Annotated[int, Field(ge=1, le=10)] = 2
    max_poll_interval_hours: Annotated[int, Field(ge=1)] = 24
    max_polls: Annotated[int, Field(ge=1, le=1000)] = 40
    final_escalation_days: Days = 30


class ApprovalSla(_Frozen):
    remind_after_hours: Annotated[int, Field(ge=1)] = 24
    escalate_after_hours: Annotated[int, Field(ge=1)] = 72

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.remind_after_hours > self.escalate_after_hours:
            raise PydanticCustomError(
                "invalid_threshold_order", "reminder must come before escalation"
            )
        return self


class CustomerConfirmation(_Frozen):
    enabled: bool = True
    deadline_days: Days = 7


def _windows_default() -> dict[RefundReason, int]:
    r = RefundReason
    return {
        r.CHANGED_MIND: 7,
        r.NOT_AS_DESCRIBED: 15,
        r.DAMAGED: 15,
        r.WRONG_ITEM: 15,
        r.NOT_RECEIVED: 60,
        r.LATE_DELIVERY: 30,
        r.DUPLICATE_PAYMENT: 180,
        r.PRESALE_CANCEL: 180,
        r.OTHER: 15,
    }


class Policy(_Frozen):
    """Everything a merchant decides about refunds. Every refund records ``version``."""

    version: Annotated[int, Field(ge=1)] = 1
    return_window_days: dict[RefundReason, Days] = Field(default_factory=_windows_default)
    """Days after delivery (or payment when not delivered) a request is accepted, by reason."""
    refundable_statuses: list[OrderStatus] = [
        OrderStatus.PAID,
        OrderStatus.DELIVERED,
        OrderStatus.COMPLETED,
    ]
    status_exceptions: dict[RefundReason, list[OrderStatus]] = {
        RefundReason.NOT_RECEIVED: [OrderStatus.SHIPPED],
        RefundReason.LATE_DELIVERY: [OrderStatus.SHIPPED],
        RefundReason.DUPLICATE_PAYMENT: [OrderStatus.SHIPPED, OrderStatus.CANCELLED],
    }
    """Order statuses that are refundable only for these reasons (e.g. in transit, not received)."""
    merchant_fault_reasons: list[RefundReason] = [
        RefundReason.NOT_AS_DESCRIBED,
        RefundReason.DAMAGED,
        RefundReason.WRONG_ITEM,
        RefundReason.NOT_RECEIVED,
        RefundReason.LATE_DELIVERY,
        RefundReason.DUPLICATE_PAYMENT,
    ]
    shipping_refund: ChargeRule = ChargeRule.MERCHANT_FAULT_ONLY
    fee_refund: ChargeRule = ChargeRule.MERCHANT_FAULT_ONLY
    """Payment and other order fees."""
    restocking_fee_bps: dict[RefundReason, Bps] = {RefundReason.CHANGED_MIND: 1000}
    returns: ReturnRules = ReturnRules()
    limits: Limits = Limits()
    limits_by_currency: dict[str, Limits] = {}
    installments: Installments = Installments()
    customer_confirmation: CustomerConfirmation = CustomerConfirmation()
    presale: PresaleRules = PresaleRules()
    international: InternationalRules = InternationalRules()
    arrival_business_days: dict[PaymentMethod, ArrivalDays] = Field(
        default_factory=_arrival_default
    )
    holiday_country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")] | None = None
    """Calendar for business days; the order's country when unset."""
    follow_up: FollowUp = FollowUp()
    approval_sla: ApprovalSla = ApprovalSla()
    max_refunds_per_customer_30d: Annotated[int, Field(ge=1)] = 10
    on_permanent_failure: list[FallbackAction] = [FallbackAction.BALANCE]
    """Tried in order when the original route fails for good; escalation when the list runs out."""

    def limits_for(self, currency: str) -> Limits:
        return self.limits_by_currency.get(currency.upper(), self.limits)

    def limit(self, field: str, currency: str) -> int:
        return self.limits_for(currency).minor(field, currency)

    def window_days(self, reason: RefundReason) -> int:
        return self.return_window_days.get(
            reason, self.return_window_days.get(RefundReason.OTHER, 0)
        )

    def is_merchant_fault(self, reason: RefundReason) -> bool:
        return reason in self.merchant_fault_reasons

    def refunds_charge(self, rule: ChargeRule, reason: RefundReason) -> bool:
        if rule is ChargeRule.ALWAYS:
            return True
        return rule is ChargeRule.MERCHANT_FAULT_ONLY and self.is_merchant_fault(reason)

    def arrival(self, method: PaymentMethod) -> ArrivalDays:
        return self.arrival_business_days.get(method, ArrivalDays(min=1, max=7))

    @classmethod
    def parse(cls, data: Any) -> Policy:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            errors = [
                {"loc": ".".join(str(p) for p in e["loc"]), "type": e["type"], "msg": e["msg"]}
                for e in exc.errors(include_url=False, include_context=False, include_input=False)
            ]
            summary = "; ".join(f"{e['loc']}: {e['msg']}" for e in errors)
            raise PolicyInvalid(f"invalid policy: {summary}", errors=errors) from None

    @classmethod
    def from_yaml(cls, text: str) -> Policy:
        """Load a policy document; YAML syntax and schema errors both raise PolicyInvalid."""
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise PolicyInvalid(f"policy is not valid YAML: {exc}") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise PolicyInvalid("a policy document must be a mapping at the top level")
        return cls.parse(data)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


DEFAULT_POLICY = Policy()
"""Built in, so a fresh install works without any policy document."""
