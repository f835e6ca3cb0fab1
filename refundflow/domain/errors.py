"""Typed errors with stable codes.

API clients and ops tooling branch on ``code``; the human message may change, the code never does.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError


class DomainError(Exception):
    """A refund rule or an input was violated. ``code`` is stable and machine-readable."""

    code: str = "domain_error"

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.details = details

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class InvalidInput(DomainError):
    """The request, order or policy is malformed. Nothing was computed or written."""

    code = "invalid_input"

    @classmethod
    def from_validation(cls, exc: ValidationError, *, what: str) -> InvalidInput:
        errors = [
            {"loc": ".".join(str(p) for p in err["loc"]), "type": err["type"], "msg": err["msg"]}
            for err in exc.errors(include_url=False, include_context=False, include_input=False)
        ]
        # The first error's own type is the most specific stable code we have
        # (e.g. ``negative_quantity``); generic pydantic types fall back to ``invalid_<what>``.
        first = errors[0]["type"] if errors else ""
        code = first if first in STABLE_VALIDATION_CODES else f"invalid_{what}"
        summary = "; ".join(f"{e['loc']}: {e['msg']}" for e in errors)
        return cls(f"invalid {what}: {summary}", code=code, errors=errors)


class UnknownLine(InvalidInput):
    code = "unknown_line"


class CurrencyMismatch(InvalidInput):
    code = "currency_mismatch"


class PolicyInvalid(InvalidInput):
    code = "policy_invalid"


class OverRefund(DomainError):
    """More would be refunded than was captured (or than remains)."""

    code = "over_refund"


class FxRateMissing(DomainError):
    code = "fx_rate_missing"


# Codes raised from pydantic validators through PydanticCustomError; listed once so the
# API can document them and InvalidInput can prefer them over pydantic's generic types.
STABLE_VALIDATION_CODES = frozenset(
    {
        "negative_quantity",
        "negative_amount",
        "amount_too_large",
        "quantity_too_large",
        "evidence_too_large",
        "unknown_currency",
        "duplicate_line",
        "duplicate_payment",
        "discount_exceeds_amount",
        "destination_incomplete",
        "empty_request",
        "unknown_line",
        "invalid_threshold_order",
    }
)
