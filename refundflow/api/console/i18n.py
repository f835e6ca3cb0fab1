"""The console's languages: which one a request gets (``?lang=``, then the cookie the switch
sets, then Accept-Language), its words (:mod:`refundflow.api.console.texts`), and Babel for
dates, durations and amounts in that locale."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from babel import negotiate_locale
from babel.dates import format_datetime, format_timedelta
from babel.numbers import format_decimal, format_percent
from fastapi import Request

from refundflow.api.console.texts import TEXTS
from refundflow.domain.money import format_minor

LOCALES = ("en", "zh-CN")
DEFAULT = "en"
LANG_COOKIE = "rf_lang"


def negotiate(request: Request) -> str:
    asked = request.query_params.get("lang") or request.cookies.get(LANG_COOKIE)
    if asked in LOCALES:
        return asked
    header = request.headers.get("accept-language", "")
    wanted = [part.split(";")[0].strip().replace("-", "_") for part in header.split(",")]
    found = negotiate_locale([w for w in wanted if w], ["en", "zh_CN"])
    return found.replace("_", "-") if found else DEFAULT


@dataclass(frozen=True)
class Words:
    """What a template calls to say things in the request's language."""

    locale: str

    @property
    def babel(self) -> str:
        return self.locale.replace("-", "_")

    def __call__(self, key: str, **values: object) -> str:
        entry = TEXTS.get(key)
        if entry is None:
            return key  # an unknown key shows itself, so a missing text is seen, not hidden
        text = entry.get(self.locale) or entry[DEFAULT]
        return text.format(**values) if values else text

    def status(self, status: str) -> str:
        return self(f"status.{status}") if f"status.{status}" in TEXTS else status

    def reason(self, reason: str) -> str:
        return self(f"reason.{reason}") if f"reason.{reason}" in TEXTS else reason

    def money(self, amount: int, currency: str) -> str:
        return format_minor(amount, currency, self.locale)

    def when(self, moment: datetime | None) -> str:
        if moment is None:
            return ""
        aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        return format_datetime(aware, format="medium", tzinfo=UTC, locale=self.babel) + " UTC"

    def age(self, since: datetime, now: datetime) -> str:
        aware = since if since.tzinfo else since.replace(tzinfo=UTC)
        # A moment another machine's clock put a little ahead of ours is "just now", not the
        # future (Babel would print the distance either way).
        return format_timedelta(max(now - aware, timedelta(0)), threshold=1.5, locale=self.babel)

    def duration(self, seconds: float) -> str:
        return format_timedelta(timedelta(seconds=seconds), threshold=1.5, locale=self.babel)

    def number(self, value: float) -> str:
        return format_decimal(value, locale=self.babel)

    def percent(self, value: float) -> str:
        return format_percent(value, format="#,##0.0%", locale=self.babel)
