"""Money in integer minor units, exact splits and FX conversion.

Exponents come from the ISO 4217 table shipped by the ``iso4217`` package (ISO's own list:
HUF and IDR have 2 minor digits there, while CLDR/Babel display them with 0). Babel is used
only to format amounts for people.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from functools import lru_cache
from typing import Annotated

from babel import Locale
from babel.numbers import format_currency
from iso4217 import Currency
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from refundflow.domain.errors import CurrencyMismatch, DomainError


@lru_cache(maxsize=512)
def exponent(currency: str) -> int:
    """Number of minor-unit digits of an ISO 4217 currency (CNY 2, JPY 0, KWD 3)."""
    try:
        exp = Currency(currency.upper()).exponent
    except ValueError:
        raise DomainError(f"unknown currency {currency!r}", code="unknown_currency") from None
    if exp is None:  # metals, testing codes: not money a shop refunds
        raise DomainError(f"{currency!r} has no minor unit", code="unknown_currency")
    return int(exp)


def _check_currency(value: str) -> str:
    code = value.upper()
    try:
        exponent(code)
    except DomainError:
        raise PydanticCustomError(
            "unknown_currency", "unknown ISO 4217 currency {c}", {"c": value}
        ) from None
    return code


CurrencyCode = Annotated[str, AfterValidator(_check_currency)]
"""An ISO 4217 code with a minor unit, normalised to upper case."""


MAX_MINOR = 10**15
"""The largest amount, in minor units, that any order, request or message may carry: 10^13
yuan or dollars, far past any real refund, yet every sum of such amounts the service forms
(an order's lines, a refund's parts) stays well inside a signed 64-bit ``BIGINT`` column, and
the amount still formats exactly for people and providers (a float-free decimal of 16 digits)."""


def _bounded_amount(value: int) -> int:
    if value < 0:
        raise PydanticCustomError("negative_amount", "amount must not be negative")
    if value > MAX_MINOR:
        raise PydanticCustomError(
            "amount_too_large", "amount must be at most {max} minor units", {"max": MAX_MINOR}
        )
    return value


Minor = Annotated[
    int,
    Field(
        strict=True,
        json_schema_extra={"minimum": 0, "maximum": MAX_MINOR},
        description="An amount in minor units of the currency (10^exponent per major unit:"
        " CNY and USD 2, JPY 0, KWD 3), from 0 to 10^15.",
    ),
    AfterValidator(_bounded_amount),
]
"""A non-negative amount in minor units, at most :data:`MAX_MINOR`. Strict: a float or a
decimal string is refused."""


class Money(BaseModel):
    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    amount: Minor
    currency: CurrencyCode

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(amount=self.amount + other.amount, currency=self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(amount=self.amount - other.amount, currency=self.currency)

    def _same(self, other: Money) -> None:
        if other.currency != self.currency:
            raise CurrencyMismatch(f"cannot combine {self.currency} with {other.currency}")

    def format(self, locale: str = "en") -> str:
        return format_minor(self.amount, self.currency, locale)


def to_major(amount: int, currency: str) -> Decimal:
    return Decimal(amount).scaleb(-exponent(currency))


def from_major(value: Decimal | str | int, currency: str) -> int:
    """Exact conversion of a major-unit amount ("12.34") to minor units; refuses extra digits."""
    dec = Decimal(value)
    scaled = dec.scaleb(exponent(currency))
    if scaled != scaled.to_integral_value():
        raise DomainError(
            f"{value} has more decimals than {currency} allows", code="too_many_decimals"
        )
    return int(scaled)


def format_minor(amount: int, currency: str, locale: str = "en") -> str:
    return format_currency(to_major(amount, currency), currency, locale=_babel_locale(locale))


@lru_cache(maxsize=32)
def _babel_locale(locale: str) -> Locale:
    # Parsed once per process: a run formats amounts in every activity's summary and notice,
    # and parsing the name took as long as the formatting.
    return Locale.parse(locale.replace("-", "_"))


def allocate(total: int, weights: Sequence[int]) -> list[int]:
    """Split ``total`` over ``weights`` by largest remainder; the parts sum to ``total`` exactly.

    Ties in the remainder go to the earlier weight, so the result is deterministic. All-zero
    weights split evenly. Negative totals are split as the mirror of the positive total.
    """
    if not weights:
        raise ValueError("allocate needs at least one weight")
    if any(w < 0 for w in weights):
        raise ValueError("weights must not be negative")
    if total < 0:
        return [-p for p in allocate(-total, weights)]
    weight_sum = sum(weights)
    if weight_sum == 0:
        weights = [1] * len(weights)
        weight_sum = len(weights)
    floors = [total * w // weight_sum for w in weights]
    remainders = [total * w % weight_sum for w in weights]
    short = total - sum(floors)
    order = sorted(range(len(weights)), key=lambda i: (-remainders[i], i))
    for i in order[:short]:
        floors[i] += 1
    return floors


def cumulative_share(total: int, parts: int, upto: int) -> int:
    """Sum of the first ``upto`` parts of ``allocate(total, [1] * parts)``, in O(1).

    Refunds of units ``p+1..p+k`` of a line are ``cumulative_share(k+p) - cumulative_share(p)``,
    so any sequence of partial refunds telescopes to exactly the amount of one full refund.
    """
    if not 0 <= upto <= parts:
        raise ValueError("upto must lie between 0 and parts")
    if parts == 0:
        return 0
    base, extra = divmod(total, parts)
    return base * upto + min(upto, extra)


def apply_bps(amount: int, bps: int) -> int:
    """``amount * bps / 10000`` rounded half up, in integers (basis points: 150 = 1.5%)."""
    return int((Decimal(amount) * bps / 10000).quantize(Decimal(1), rounding=ROUND_HALF_UP))


class FxRate(BaseModel):
    """1 unit of ``base`` buys ``rate`` units of ``quote``; recorded with where it came from."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    base: CurrencyCode
    """The currency bought from (ISO 4217)."""
    quote: CurrencyCode
    """The currency bought (ISO 4217)."""
    rate: Decimal = Field(gt=0)
    """Units of ``quote`` for one unit of ``base`` (a decimal, never a float)."""
    source: str = Field(min_length=1)
    """Where the rate came from."""
    as_of: datetime
    """When the rate was taken."""


def convert(amount: int, rate: FxRate, *, from_currency: str) -> int:
    """Convert minor units with a recorded rate, banker's rounding to the target minor unit."""
    if from_currency == rate.base:
        target, factor = rate.quote, rate.rate
    elif from_currency == rate.quote:
        target, factor = rate.base, 1 / rate.rate
    else:
        raise CurrencyMismatch(f"rate {rate.base}/{rate.quote} cannot convert {from_currency}")
    major = to_major(amount, from_currency) * factor
    return int(major.scaleb(exponent(target)).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def _load_locale_data() -> None:
    # Babel reads its CLDR files on first use. Reading them once here, at import, means
    # formatting never touches the file system later, where the workflow sandbox forbids it.
    for locale in ("en", "zh_CN"):
        format_currency(Decimal("1.00"), "CNY", locale=locale)


_load_locale_data()
