"""Every word the console shows, in English and Simplified Chinese, from ``texts.tsv`` (one
line per text: key, en, zh-CN; a file translators can edit without touching code). A key
missing there shows itself on the page, so a forgotten text is seen; a test checks every key
the templates use is there in both languages."""

from __future__ import annotations

from pathlib import Path

SOURCE = Path(__file__).with_name("texts.tsv")


def _load(path: Path) -> dict[str, dict[str, str]]:
    texts: dict[str, dict[str, str]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 3 or parts[0] in texts:
            raise ValueError(f"{path.name} line {number}: want a new key, en and zh-CN")
        key, en, zh = parts
        texts[key] = {"en": en, "zh-CN": zh}
    return texts


TEXTS = _load(SOURCE)
