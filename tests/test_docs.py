"""The README and the guide: every relative link reaches a file, and every #anchor a
heading of it, so that moving a section cannot silently break a link to it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers import ROOT

# the project's pages only: not the README pytest writes in .pytest_cache/
PAGES = sorted(p for p in [ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("*/README.md"),
                           *ROOT.glob("experiments/*/README.md")]
               if not any(part.startswith(".") for part in p.relative_to(ROOT).parts))
LINK = re.compile(r"!?\[[^\]]*\]\(([^()\s]+)\)")
FENCE = re.compile(r"^\s*```")


def prose(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def anchors(page: Path) -> set[str]:
    """The anchors GitHub gives the headings of ``page``: lower case, punctuation dropped
    (hyphens and underscores kept), spaces to hyphens, ``-1``, ``-2`` … on repeats."""
    seen: dict[str, int] = {}
    for line in prose(page.read_text()):
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        if n:
            seen[f"{slug}-{n}"] = 1
    return set(seen)


def links(page: Path) -> list[str]:
    text = "\n".join(re.sub(r"`[^`]*`", "", line) for line in prose(page.read_text()))
    return [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def test_the_pages_are_found():
    names = {p.relative_to(ROOT).as_posix() for p in PAGES}
    assert {"README.md", "docs/index.md", "docs/record.md", "benchmarks/README.md",
            "experiments/README.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(page):
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with that anchor in {dest.name}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_readme_stays_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


def test_anchor_rules_match_github():
    page = ROOT / "docs" / "diagnostics.md"
    assert {"gradient-flow-through-time-grad_flow", "explosion",
            "which-weights-the-logged-values-describe"} <= anchors(page)


# `rnnbench/conf` is where pyproject.toml maps conf/ inside an installed wheel
NOT_IN_THE_TREE = {"rnnbench/conf"}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_path_the_page_names_exists(page):
    """A file or module named in backticks (`rnnbench/tracking.py`,
    `tests/test_cli.py::test_x`) is in the tree, so a module that moves cannot leave
    the guide, or docs/architecture.md's table, pointing at nothing."""
    named = re.findall(r"`((?:rnnbench|tests|benchmarks|conf|docker|experiments)/[^`\s]*)`",
                       page.read_text())
    missing = [p for p in named
               if (base := p.split("::")[0].rstrip("/")) not in NOT_IN_THE_TREE
               and not (list(ROOT.glob(base)) if "*" in base else (ROOT / base).exists())]
    assert not missing, f"{page.relative_to(ROOT)} names paths that do not exist: {missing}"


def test_ci_runs_the_readme_test_command_verbatim():
    """CI (.ci/run) ends with the README's second command, as the README gives it."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("```bash", 1)[1].split("```", 1)[0]
    commands = [line for line in block.splitlines() if line and not line.startswith("#")]
    assert len(commands) == 2, commands
    ci = [line for line in (ROOT / ".ci/run").read_text().splitlines()
          if line and not line.lstrip().startswith("#")]
    assert ci[-1] == commands[1]
