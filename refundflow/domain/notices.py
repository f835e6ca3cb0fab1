"""What the customer receives at each step of a refund, in zh-CN and en (docs/architecture.md,
"Notifications").

``render_notice(template, locale, params)`` turns an outbox row's template and params (plain
JSON: amounts in minor units, ISO dates, route names) into an email subject, a text body, an
HTML body and a short SMS text. Amounts and dates are formatted for the locale with Babel, the
way :mod:`refundflow.domain.messages` formats review messages (its formatter is extended here).

A body paragraph is left out when a value it names is missing or empty (a payout without a
trace reference simply has no reference line); a tuple of paragraphs offers alternatives, the
first one whose values are all present is used.
"""

from __future__ import annotations

import html
import string
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from babel.dates import format_date

from refundflow.domain.messages import EN, ZH_CN, _Formatter, resolve_locale
from refundflow.domain.money import Money
from refundflow.domain.notice_texts import (
    FOOTER,
    GREETING,
    ITEMS_JOIN,
    LANGUAGE_NAMES,
    NOTE_LANGUAGE,
    OTHER_REASON,
    REASONS,
    ROUTES,
    SMS_JOIN,
    STAFF_NOTE,
    TEMPLATES,
    UNKNOWN_LANGUAGE,
    Paragraph,
)


@dataclass(frozen=True)
class Notice:
    subject: str
    text: str
    html: str | None = None
    sms: str = ""
    """A short variant for SMS: one or two sentences, no greeting."""


CUSTOMER_TEMPLATES: frozenset[str] = frozenset(TEMPLATES)

_DATES = ("deadline", "expected_from", "expected_by")


class _NoticeFormatter(_Formatter):
    """The review-message formatter, with dates written the way people of the locale do."""

    def format_field(self, value: Any, format_spec: str) -> str:
        if isinstance(value, date):
            return format_date(value, "long", locale=self.locale.replace("-", "_"))
        return super().format_field(value, format_spec)


def render_notice(template: str, locale: str, params: Mapping[str, Any]) -> Notice:
    """The notice ``template`` in ``locale`` (English for a locale without a catalog)."""
    try:
        texts = TEMPLATES[template]
    except KeyError:
        known = ", ".join(sorted(TEMPLATES))
        raise KeyError(f"no customer notice template {template!r} (known: {known})") from None
    loc = resolve_locale(locale)
    tpl = texts[loc]
    values = _values(params, loc)
    fmt = _NoticeFormatter(loc)
    paragraphs = [GREETING[loc], *_pick(fmt, tpl.body, values), fmt.format(FOOTER[loc], **values)]
    body = "\n\n".join(paragraphs)
    page = "".join(f"<p>{html.escape(p)}</p>\n" for p in paragraphs)
    return Notice(
        subject=fmt.format(tpl.subject, **values),
        text=body + "\n",
        html=f'<!DOCTYPE html>\n<html lang="{loc}"><head><meta charset="utf-8"></head><body>\n'
        f"{page}</body></html>\n",
        sms=SMS_JOIN[loc].join(_pick(fmt, tpl.sms, values)),
    )


def _values(params: Mapping[str, Any], loc: str) -> dict[str, Any]:
    """Raw JSON params as the values the formatter knows how to write for ``loc``."""
    values = dict(params)
    if values.get("amount") is not None:
        values["amount"] = Money(amount=values["amount"], currency=values["currency"])
    for key in _DATES:
        raw = values.get(key)
        if not isinstance(raw, date):
            values[key] = date.fromisoformat(raw[:10]) if isinstance(raw, str) and raw else None
    if values["expected_from"] is not None and values["expected_from"] == values["expected_by"]:
        values["expected_from"] = None  # "between 8 Oct and 8 Oct" reads as a mistake
    if values.get("route"):
        values["route"] = ROUTES[loc].get(values["route"], values["route"])
    if "reasons" in values:
        labels = [REASONS[loc].get(code, OTHER_REASON[loc]) for code in values["reasons"]]
        values["reasons"] = ITEMS_JOIN[loc].join(dict.fromkeys(labels))
    text = values.get("text")
    if isinstance(text, Mapping):  # {locale: text}, as review decisions carry
        values["text"] = text.get(loc, "")
    elif isinstance(text, str):
        # Free text is an approver's note to the customer only when an approver rejected;
        # otherwise it was written for ops (amounts in minor units, payment ids) and the
        # reasons already say it in the customer's language.
        person = PERSON_REASON in params.get("reasons", ())
        values["text"] = _staff_note(text, loc) if person and text.strip() else ""
    if "trace_refs" in values:
        values["trace_refs"] = ITEMS_JOIN[loc].join(ref for ref in values["trace_refs"] if ref)
    return values


PERSON_REASON = "APPROVER_REJECTED"


def _staff_note(note: str, loc: str) -> str:
    written = written_in(note)
    if written == loc:
        language = ""
    elif written is None:
        language = UNKNOWN_LANGUAGE[loc]
    else:
        language = NOTE_LANGUAGE[loc].format(name=LANGUAGE_NAMES[loc][written])
    return STAFF_NOTE[loc].format(language=language, note=note.strip())


def written_in(text: str) -> str | None:
    """The notice locale ``text`` is written in, told by its script: Chinese characters make
    it zh-CN, letters that are all ASCII make it en; ``None`` for any other script."""
    if any("\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf" for ch in text):
        return ZH_CN
    letters = [ch for ch in text if ch.isalpha()]
    return EN if letters and all(ch.isascii() for ch in letters) else None


def _pick(
    fmt: _NoticeFormatter, paragraphs: tuple[Paragraph, ...], values: dict[str, Any]
) -> list[str]:
    chosen = []
    for paragraph in paragraphs:
        options = (paragraph,) if isinstance(paragraph, str) else paragraph
        usable = next((o for o in options if _filled(o, values)), None)
        if usable is not None:
            chosen.append(fmt.format(usable, **values))
    return chosen


def _filled(text: str, values: dict[str, Any]) -> bool:
    names = {name for _, name, _, _ in string.Formatter().parse(text) if name}
    return all(values.get(name) not in (None, "") for name in names)


def _load_locale_data() -> None:
    # Babel reads its CLDR files on first use; reading them at import keeps rendering free of
    # file access later (the workflow sandbox forbids it), as domain/money.py does.
    for locale in ("en", "zh_CN"):
        format_date(date(2000, 1, 1), "long", locale=locale)


_load_locale_data()
