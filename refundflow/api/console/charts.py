"""The reports' charts, drawn on the server as SVG by pygal (no script, no CDN: ``js=[]``), with
their words in the reader's language and a size that prints on A4 (the SVG scales to the
page's width; its fonts include CJK ones so zh-CN reads as well as en)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any
from xml.etree import ElementTree

import pygal
from markupsafe import Markup
from pygal.style import Style

from refundflow.api.console.i18n import Words
from refundflow.api.console.reports import Row

_STYLE = Style(
    background="white",
    plot_background="white",
    foreground="#1f2933",
    foreground_strong="#1f2933",
    foreground_subtle="#52606d",
    font_family=(
        "'Noto Sans CJK SC', 'PingFang SC', 'Microsoft YaHei', 'WenQuanYi Micro Hei', sans-serif"
    ),
    label_font_size=13,
    major_label_font_size=13,
    legend_font_size=13,
    title_font_size=16,
    value_font_size=12,
    no_data_font_size=20,
    # Dark enough against white for text-sized marks (WCAG AA), told apart by hue.
    colors=("#1d4ed8", "#b45309", "#047857", "#b91c1c", "#6d28d9", "#0e7490", "#4d7c0f"),
)


def _chart(kind: type[Any], words: Words, title: str, **config: Any) -> Any:
    return kind(
        js=[],
        style=_STYLE,
        width=760,
        height=360,
        title=title,
        disable_xml_declaration=True,
        explicit_size=False,
        legend_at_bottom=True,
        no_data_text=words("reports.no_data"),
        print_zeroes=False,
        **config,
    )


def _whole_numbers(chart: Any, series: list[list[int | None]]) -> None:
    """A count's axis in whole steps (pygal would mark 0.1, 0.2, ... for small counts)."""
    if not series:
        return  # pygal draws its "no data" text, with no axis to mark
    top = max(sum(v or 0 for v in column) for column in zip(*series, strict=True))
    step = max(1, -(-top // 8))
    chart.y_labels = list(range(0, top + step + 1, step))


def _svg(chart: Any) -> Markup:
    """The chart's SVG without pygal's inline config script (inert without its JS, and a page
    with a strict Content-Security-Policy runs no inline script anyway)."""
    tree = chart.render_tree()
    for parent in tree.iter():
        for child in list(parent):
            if isinstance(child.tag, str) and child.tag.endswith("script"):
                parent.remove(child)
    # ElementTree escapes every label and value; the markup is pygal's own.
    return Markup(ElementTree.tostring(tree, encoding="unicode"))


def refunds_by_day(rows: list[Row], words: Words) -> Markup:
    days = sorted({r["day"] for r in rows})
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in rows:
        counts[r["status"]][r["day"]] += r["refunds"]
    chart = _chart(pygal.StackedBar, words, words("reports.by_day"), x_label_rotation=30)
    chart.x_labels = days
    series = [[counts[status].get(d) or None for d in days] for status in sorted(counts)]
    for status, values in zip(sorted(counts), series, strict=True):
        chart.add(words.status(status), values)
    _whole_numbers(chart, series)
    return _svg(chart)


def amount_by_day(rows: list[Row], words: Words) -> list[Markup]:
    """One chart per currency: amounts of different currencies never share an axis."""
    charts = []
    for currency in sorted({r["currency"] for r in rows}):
        mine = [r for r in rows if r["currency"] == currency]
        days = sorted({r["day"] for r in mine})
        amounts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for r in mine:
            amounts[r["status"]][r["day"]] += r["amount_minor"]
        chart = _chart(
            pygal.StackedBar,
            words,
            f"{words('reports.amount_by_day')} ({currency})",
            x_label_rotation=30,
            value_formatter=lambda v, c=currency: words.money(int(v), c),
        )
        chart.x_labels = days
        for status in sorted(amounts):
            chart.add(words.status(status), [amounts[status].get(d) or None for d in days])
        charts.append(_svg(chart))
    return charts


def rates(rows: list[Row], words: Words, *, label: str, title_key: str) -> Markup:
    chart = _chart(
        pygal.HorizontalBar,
        words,
        words(title_key),
        show_legend=False,
        value_formatter=lambda v: words.percent(v),
    )
    names = [words.reason(r[label]) if label == "reason" else r[label] for r in rows]
    chart.x_labels = names
    chart.add(words("reports.rate"), [float(r["rate"]) for r in rows])
    return _svg(chart)


def durations(rows: list[Row], words: Words, *, label: str, title_key: str) -> Markup:
    chart = _chart(
        pygal.Bar,
        words,
        words(title_key),
        value_formatter=lambda v: words.duration(v * 3600),
        y_title=words("reports.hours"),
    )
    chart.x_labels = [r[label] for r in rows]
    chart.add(words("reports.median"), [r["median_seconds"] / 3600 for r in rows])
    chart.add(words("reports.p90"), [r["p90_seconds"] / 3600 for r in rows])
    return _svg(chart)


def failures(rows: list[Row], words: Words) -> Markup:
    providers = sorted({r["provider"] for r in rows})
    by_code: dict[str, dict[str, int]] = defaultdict(dict)
    for r in rows:
        by_code[r["code"]][r["provider"]] = r["failures"]
    chart = _chart(pygal.StackedBar, words, words("reports.failures"))
    chart.x_labels = providers
    series = [[by_code[code].get(p) for p in providers] for code in sorted(by_code)]
    for code, values in zip(sorted(by_code), series, strict=True):
        chart.add(code, values)
    _whole_numbers(chart, series)
    return _svg(chart)
