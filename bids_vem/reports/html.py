"""Small HTML building blocks for the reports: every text goes through :func:`esc`.

Pages are self-contained (inline CSS, no scripts, no external URLs); figures are linked
by paths relative to the page.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["esc", "fmt", "table", "figure", "section", "page", "relative_link"]

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0; color: #222; }
header { background: #1f3a5f; color: #fff; padding: 1em 2em; }
header h1 { margin: 0; font-size: 1.6em; }
nav { background: #e8edf3; padding: 0.5em 2em; }
nav a { margin-right: 1.2em; color: #1f3a5f; text-decoration: none; }
main { padding: 0 2em 2em 2em; max-width: 1200px; }
section { margin-top: 1.5em; }
h2 { border-bottom: 2px solid #1f3a5f; padding-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccd; padding: 0.25em 0.6em; text-align: left; }
th { background: #eef1f6; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #555; }
.error { color: #a40000; }
.ok { color: #2d6a2d; }
pre { background: #f6f8fa; padding: 0.8em; white-space: pre-wrap; font-size: 0.9em; }
code { background: #f2f2f2; padding: 0 0.2em; }
.strip { display: flex; flex-wrap: wrap; gap: 0.8em; }
.strip figure { width: 170px; margin: 0; }
.generated { color: #7a4b00; font-style: italic; }
iframe { border: 1px solid #ddd; }
"""


def esc(value: Any) -> str:
    """HTML-escaped text of ``value`` (quotes included)."""
    return html.escape("" if value is None else str(value), quote=True)


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: numbers rounded, None/NaN as ``n/a``; escaped."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return esc(value)
    if isinstance(value, int):
        return esc(value)
    if isinstance(value, float) or hasattr(value, "__float__") and not isinstance(value, str):
        number = float(value)
        if not math.isfinite(number):
            return "n/a"
        if number.is_integer() and abs(number) < 1e15:
            return esc(int(number))
        return esc(
            f"{number:.{digits}g}"
            if abs(number) >= 1e4 or abs(number) < 1e-3
            else f"{number:.{digits}f}"
        )
    return esc(value)


def table(
    headers: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[bool] | None = None
) -> str:
    """An HTML table; cells go through :func:`fmt`."""
    rows = list(rows)
    numeric = list(numeric) if numeric is not None else [False] * len(headers)
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{fmt(cell)}</td>' if is_num else f"<td>{fmt(cell)}</td>"
            for cell, is_num in zip(
                row, numeric + [False] * (len(row) - len(numeric)), strict=False
            )
        )
        body.append(f"<tr>{cells}</tr>")
    thead = f"<thead><tr>{head}</tr></thead>" if any(headers) else ""  # key/value tables need none
    return f"<table>{thead}<tbody>{''.join(body)}</tbody></table>"


def relative_link(target: Path | str, page_dir: Path | str) -> str:
    """POSIX path of ``target`` relative to the folder of the page (for ``src``/``href``)."""
    return Path(os.path.relpath(Path(target), Path(page_dir))).as_posix()


def figure(src: str, caption: str, alt: str | None = None) -> str:
    """An ``<figure>`` with a relative image link and an escaped caption."""
    return (
        f'<figure><img src="{esc(src)}" alt="{esc(alt or caption)}">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def section(anchor: str, title: str, body: str) -> str:
    """A ``<section id=anchor>`` with an ``<h2>`` title; ``body`` is already HTML."""
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{body}</section>'


def page(title: str, sections: Sequence[tuple[str, str, str]], nav_extra: str = "") -> str:
    """A whole HTML page from ``(anchor, title, body_html)`` sections, with a navigation bar
    (``nav_extra``: more of it, after the sections' links)."""
    nav = "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t, _ in sections) + nav_extra
    body = "".join(section(a, t, b) for a, t, b in sections)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{_CSS}</style></head>"
        f"<body><header><h1>{esc(title)}</h1></header><nav>{nav}</nav><main>{body}</main></body></html>\n"
    )


def _inline(text: str, numbers: dict[str, int]) -> str:
    """Escaped text with ``code`` spans and ``[@key; @key]`` citations as numbered links."""
    import re

    out = []
    for i, part in enumerate(esc(text).split("`")):
        out.append(f"<code>{part}</code>" if i % 2 else part)
    joined = "".join(out)

    def cite(match: re.Match) -> str:
        keys = re.findall(r"@([A-Za-z0-9]+)", match.group(1))
        links = [
            f'<a href="#ref-{key}">{numbers[key]}</a>' if key in numbers else esc(key)
            for key in keys
        ]
        return f"[{', '.join(links)}]"

    return re.sub(r"\[(@[^\]]+)\]", cite, joined)


def markdown_methods(markdown: str) -> str:
    """The methods text (``logs/CITATION.md``) as HTML: paragraphs, lists, code spans, and
    citations numbered and linked to the bibliography, which its References list becomes."""
    import re

    body, _, references = markdown.partition("## References")
    refs = re.findall(r"^- \[@([A-Za-z0-9]+)\] (.+)$", references, flags=re.MULTILINE)
    numbers = {key: i for i, (key, _) in enumerate(refs, start=1)}
    blocks, items, paragraph = [], [], []

    def flush() -> None:
        if paragraph:
            blocks.append(f"<p>{_inline(' '.join(paragraph), numbers)}</p>")
            paragraph.clear()
        if items:
            blocks.append(
                "<ul>" + "".join(f"<li>{_inline(i, numbers)}</li>" for i in items) + "</ul>"
            )
            items.clear()

    for line in body.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            flush()  # the page gives the heading
        elif stripped.startswith("- "):
            if paragraph:
                flush()
            items.append(stripped[2:])
        elif not stripped:
            flush()
        else:
            if items:
                flush()
            paragraph.append(stripped)
    flush()
    if refs:
        blocks.append(
            '<h3>References</h3><ol class="references">'
            + "".join(f'<li id="ref-{key}">{esc(text)}</li>' for key, text in refs)
            + "</ol>"
        )
    return "".join(blocks)
