"""A report as a document: headings, paragraphs, tables, figures and code as plain data,
with the fixed rules every number in it is formatted by. The writers
(:mod:`rnnbench.report.writers`) turn it into files; :mod:`rnnbench.report.render`
builds it from an analysis.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any


@dataclass
class Heading:
    """A heading of ``level`` 1–3."""

    level: int
    text: str


@dataclass
class Para:
    """A paragraph; `code` and **bold** are its only markup (see :func:`inline`): the
    rest is text, escaped by each writer."""

    text: str


@dataclass
class Bullets:
    """A bulleted list."""

    items: list[str]


@dataclass
class Code:
    """A block of commands, shown verbatim."""

    text: str


@dataclass
class Table:
    """A table as shown (``columns``/``rows`` of text) and as saved (``csv_columns``/
    ``csv_rows`` with full-precision values) under ``tables/<name>.csv``."""

    name: str
    columns: list[str]
    rows: list[list[str]]
    csv_columns: list[str]
    csv_rows: list[list[Any]]


@dataclass
class Figure:
    """A PNG figure: ``figures/<name>.png`` next to the Markdown, embedded in the HTML."""

    name: str
    png: bytes
    caption: str


@dataclass
class Document:
    """A report: its title and its blocks, in order."""

    title: str
    blocks: list[Any] = field(default_factory=list)
    _names: set[tuple[str, str]] = field(default_factory=set, repr=False)

    def add(self, *blocks: Any) -> None:
        self.blocks.extend(blocks)

    def unique(self, name: str, kind: str = "table") -> str:
        """A file name not used yet by a table (``tables/``) or a figure (``figures/``)."""
        base, i = name, 2
        while (kind, name) in self._names:
            name, i = f"{base}-{i}", i + 1
        self._names.add((kind, name))
        return name

    @property
    def tables(self) -> list[Table]:
        return [b for b in self.blocks if isinstance(b, Table)]

    @property
    def figures(self) -> list[Figure]:
        return [b for b in self.blocks if isinstance(b, Figure)]


# ---- number formatting --------------------------------------------------------------

def fmt(x: float | None, digits: int = 4) -> str:
    """``digits`` significant digits; an em dash for a missing value."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    text = f"{x:.{digits}g}"
    return "0" if text == "-0" else text


def fmt_ci(mean: float, half: float) -> str:
    """``mean ± half``, both rounded to the decimal place of the half-width's second
    significant digit."""
    if math.isnan(mean):
        return "—"
    if math.isnan(half):
        return fmt(mean)
    if half == 0:
        return f"{fmt(mean)} ± 0"
    decimals = max(0, min(10, 1 - math.floor(math.log10(abs(half)))))
    return f"{mean:.{decimals}f} ± {half:.{decimals}f}"


def fmt_interval(iv: Any) -> str:
    """A row's mean ± half-width, or the mean alone with the reason when fewer than 3
    values make any interval meaningless."""
    if iv.n and iv.n < 3 and not math.isnan(iv.mean):
        return f"{fmt(iv.mean)} (n={iv.n}: no CI)"
    return fmt_ci(iv.mean, iv.half_width)


def fmt_p(p: float) -> str:
    if math.isnan(p):
        return "—"
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def fmt_pct(x: float) -> str:
    return "—" if math.isnan(x) else f"{x * 100:+.1f}%"


def utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


SLUG_MAX = 80  # a file name stays far below the 255 bytes every file system allows


def slug(text: str) -> str:
    """``text`` as a file name: lower-case letters, digits and ``-``; a long one is cut to
    :data:`SLUG_MAX` characters ending in a digest of the whole, so names stay distinct."""
    out = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if len(out) > SLUG_MAX:
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:10]
        out = out[:SLUG_MAX - 11].rstrip("-") + "-" + digest
    return out or "report"


# ---- inline markup ------------------------------------------------------------------
# A code span opens and closes with the same number of backticks (as in CommonMark), so
# that text holding backticks can be shown as code; **bold** holds no code.
_INLINE = re.compile(r"(?<!`)(?P<fence>`+)(?!`)(?P<code>.+?)(?<!`)(?P=fence)(?!`)"
                     r"|\*\*(?P<bold>[^*]+?)\*\*", re.DOTALL)


def longest_run(text: str, char: str = "`") -> int:
    """The length of the longest run of ``char`` in ``text``."""
    return max((len(m) for m in re.findall(re.escape(char) + "+", text)), default=0)


def code(text: Any) -> str:
    """``text`` as an inline code span whatever backticks it holds: the fence is one
    backtick longer than its longest run, with a space inside where it starts or ends
    with one."""
    text = " ".join(str(text).split("\n"))
    fence = "`" * (longest_run(text) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def inline(text: str) -> list[tuple[str, str]]:
    """``text`` as ``(kind, content)`` parts, kind ``text``, ``code`` or ``bold``."""
    parts, pos = [], 0
    for m in _INLINE.finditer(text):
        if m.start() > pos:
            parts.append(("text", text[pos:m.start()]))
        if m["code"] is not None:
            body = m["code"]
            if len(body) > 2 and body[0] == body[-1] == " " and body.strip():
                body = body[1:-1]
            parts.append(("code", body))
        else:
            parts.append(("bold", m["bold"]))
        pos = m.end()
    if pos < len(text):
        parts.append(("text", text[pos:]))
    return parts


def raw(x: Any) -> Any:
    """A CSV value: floats in full precision (repr), NaN as empty."""
    if isinstance(x, float):
        return "" if math.isnan(x) else repr(x)
    return "" if x is None else x
