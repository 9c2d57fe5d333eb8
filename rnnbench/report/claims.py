"""Numbers in a README checked against the CSV tables they come from.

A check is an HTML comment placed right after the number it checks (invisible once
rendered)::

    test NLL 9.222 <!-- check tables/chorales-results.csv row=gru col=test_nll_mean -->

- the path is relative to the README's folder;
- ``row=`` picks rows: a bare value matches the ``row`` column (else the first column);
  ``col:value`` pairs joined by ``,`` match other columns, and ``a|b`` allows either value
  (``row=task:co2,cell:peephole,seed:2``); without ``row=`` every row is taken;
- ``col=`` is the column; ``agg=min|max|mean|sum|count`` reduces several rows (without it
  the selection must be one row); ``abs`` takes absolute values first (``agg=max abs``);
- ``minus=X`` subtracts and ``plus=X`` adds a constant (a gap to a published number) or
  another column of the same row (an interval's ends: ``col=diff_mean
  plus=diff_ci_half_width``), before ``agg``; ``times=X`` scales (``times=100`` for a
  percentage, ``times=0.001`` for thousands) and ``over=X`` divides (a change relative to
  a constant: ``minus=0.2971 over=0.2971 times=100``);
- the value is the number printed just before the comment (``−0.19``, ``6·10⁻⁴``,
  ``4.2%``), or ``value=`` where the text says it in words; it must equal the table's at
  the printed number's rounding (``9.222`` holds for 9.2215 to 9.2225).
"""

from __future__ import annotations

import csv
import math
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

CHECK = re.compile(r"<!--\s*check\s+(.*?)-->", re.S)
SUPERSCRIPT = str.maketrans("⁻⁰¹²³⁴⁵⁶⁷⁸⁹", "-0123456789")
NUMBER = re.compile(r"[−+-]?(\d+(?:\.(\d+))?)(?:\s*[·×]\s*10([⁻⁰¹²³⁴⁵⁶⁷⁸⁹]+)|e([-+]?\d+))?")
AGGREGATES = {"min": min, "max": max, "sum": math.fsum, "count": len,
              "mean": lambda v: math.fsum(v) / len(v)}


@dataclass(frozen=True)
class Printed:
    """A number as printed: its value and half a unit of its last digit."""

    value: float
    tolerance: float
    text: str


@dataclass(frozen=True)
class Problem:
    """One check that failed: where and why."""

    readme: Path
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.readme}:{self.line}: {self.message}"


def parse_number(text: str) -> Printed:
    """``'−0.19'``, ``'6·10⁻⁴'``, ``'1e-4'``, ``'4.2'`` as a value and its rounding."""
    m = NUMBER.fullmatch(text.strip().rstrip("%×").strip())
    if not m:
        raise ValueError(f"{text!r} is not a number")
    decimals = len(m.group(2) or "")
    exponent = int((m.group(3) or "").translate(SUPERSCRIPT) or m.group(4) or 0)
    sign = -1.0 if m.group(0)[0] in "−-" else 1.0
    mantissa = float(m.group(1))
    return Printed(sign * mantissa * 10.0 ** exponent, 0.5 * 10.0 ** (exponent - decimals),
                   text.strip())


def number_before(text: str) -> Printed | None:
    """The last number of ``text`` (what a check comment follows), or None."""
    found = list(NUMBER.finditer(text))
    while found:
        m = found.pop()
        start = m.start()
        if start > 0 and (text[start - 1].isalnum() or text[start - 1] in "_."):
            continue  # part of a word (JSB, 10k) or of a path
        return parse_number(m.group(0))
    return None


def _options(body: str) -> tuple[str, dict[str, str], set[str]]:
    words = shlex.split(body)
    if not words:
        raise ValueError("a check names no table")
    options, flags = {}, set()
    for w in words[1:]:
        key, eq, val = w.partition("=")
        if eq:
            options[key] = val
        else:
            flags.add(w)
    unknown = set(options) - {"row", "col", "agg", "minus", "plus", "over", "times",
                             "value"}
    unknown |= flags - {"abs"}
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(sorted(unknown))}")
    if "col" not in options:
        raise ValueError("a check needs col=")
    return words[0], options, flags


def _select(rows: list[dict[str, str]], header: list[str], spec: str | None,
            path: Path) -> list[dict[str, str]]:
    if spec is None:
        return rows
    conditions = []
    for part in spec.split(","):
        col, colon, want = part.partition(":")
        if not colon:
            col, want = ("row" if "row" in header else header[0]), part
        if col not in header:
            raise ValueError(f"{path}: no column {col!r} (row={spec}); it has "
                             + ", ".join(header))
        conditions.append((col, set(want.split("|"))))
    chosen = [r for r in rows if all(r[c] in w for c, w in conditions)]
    if not chosen:
        raise ValueError(f"{path}: no row {spec!r}")
    return chosen


def table_value(path: Path, options: dict[str, str], flags: set[str] = frozenset()) -> float:
    """The number a check names in the CSV at ``path``."""
    if not path.is_file():
        raise ValueError(f"no table {path}")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        header = list(reader.fieldnames or [])
    col = options["col"]
    if col not in header:
        raise ValueError(f"{path}: no column {col!r}; it has " + ", ".join(header))
    chosen = _select(rows, header, options.get("row"), path)
    agg = options.get("agg")
    if agg is None and len(chosen) != 1:
        raise ValueError(f"{path}: row={options.get('row')} matches {len(chosen)} rows; "
                         "name one, or give agg=")
    if agg is not None and agg not in AGGREGATES:
        raise ValueError(f"agg={agg}: use one of " + ", ".join(AGGREGATES))
    def number(row: dict[str, str], name: str) -> float:
        try:
            return float(row[name])
        except ValueError:
            raise ValueError(f"{path}: column {name!r} of row={options.get('row')} is not "
                             "a number") from None

    def term(row: dict[str, str], key: str) -> float:
        given = options.get(key, "0")
        if given in header:
            return number(row, given)
        try:
            return float(given)
        except ValueError:
            raise ValueError(f"{path}: {key}={given} is neither a number nor a column; "
                             "it has " + ", ".join(header)) from None

    if agg == "count":  # how many rows match: their values need not be numbers
        return len(chosen) / float(options.get("over", 1)) * float(options.get("times", 1))
    values = [number(r, col) + term(r, "plus") - term(r, "minus") for r in chosen]
    if "abs" in flags:
        values = [abs(v) for v in values]
    value = AGGREGATES[agg](values) if agg else values[0]
    return value / float(options.get("over", 1)) * float(options.get("times", 1))


def check_text(text: str, readme: Path) -> tuple[int, list[Problem]]:
    """Every check comment of ``text`` (a README at ``readme``): how many, and the failures."""
    problems, count, last_end = [], 0, 0
    for m in CHECK.finditer(text):
        count += 1
        line = text.count("\n", 0, m.start()) + 1
        try:
            name, options, flags = _options(m.group(1))
            if "value" in options:
                printed = parse_number(options["value"])
            else:
                line_start = text.rfind("\n", 0, m.start()) + 1
                printed = number_before(text[max(last_end, line_start):m.start()])
                if printed is None:
                    raise ValueError("no number before this check: put it right after the "
                                     "number, or give value=")
            actual = table_value(readme.parent / name, options, flags)
            if not abs(actual - printed.value) <= printed.tolerance * (1 + 1e-9) + 1e-15:
                raise ValueError(f"printed {printed.text} but the check "
                                 f"'{m.group(1).strip()}' gives {actual:.6g}")
        except ValueError as exc:
            problems.append(Problem(readme, line, str(exc)))
        last_end = m.end()
    return count, problems


def check_readme(readme: Path) -> tuple[int, list[Problem]]:
    """Every check comment of the README at ``readme``: how many, and the failures."""
    return check_text(readme.read_text(encoding="utf-8"), readme)
