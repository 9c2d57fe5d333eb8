"""The layout rules of docs/architecture.md, checked on the source (no import runs).

- no module of ``rnnbench`` imports another in a cycle (data flows one way);
- no file is over 500 lines;
- every module or folder the architecture page names exists;
- MLflow is imported by the tracking package (and the MLflow-model wrapper) only.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "rnnbench"
MAX_LINES = 500


def module_files(package: Path = PACKAGE) -> dict[str, Path]:
    """``rnnbench.x.y`` → its file, for every module of the package."""
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    """The module ``name`` lives in: itself, or the longest prefix that is a module
    (``rnnbench.tracking.Tags`` → ``rnnbench.tracking``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Each module's imports of other rnnbench modules, from its source, function-level
    imports included (a deferred import still ties the two modules together)."""
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                deps.update(_owner(a.name, modules) for a in node.names if a.name.startswith("rnnbench"))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                if not source.startswith("rnnbench"):
                    continue
                for alias in node.names:
                    # ``from rnnbench import tracking`` imports the module rnnbench.tracking;
                    # ``from rnnbench.tracking import Tags`` imports rnnbench.tracking.
                    sub = _owner(f"{source}.{alias.name}", modules)
                    deps.add(sub if sub == f"{source}.{alias.name}" else _owner(source, modules))
        deps.discard(None)
        deps.discard(name)
        graph[name] = {d for d in deps if d is not None}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle(tmp_path):
    """The check below can fail: two modules importing each other are reported."""
    pkg = tmp_path / "rnnbench"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from rnnbench.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from .. import a\n")
    (pkg / "c.py").write_text("from rnnbench.a import f\n")
    assert cycles(import_graph(module_files(pkg))) == [["rnnbench.a", "rnnbench.sub.b"]]


def test_no_module_imports_another_in_a_cycle():
    found = cycles(import_graph(module_files()))
    assert not found, "import cycles: " + "; ".join(" ⇄ ".join(c) for c in found)


def test_no_file_is_over_500_lines():
    long = {str(p.relative_to(ROOT)): n for p in module_files().values()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines: {long}"


ARCHITECTURE = ROOT / "docs" / "architecture.md"


def _named_in_architecture() -> list[tuple[str, str]]:
    """``("path", "rnnbench/cells/")`` and ``("dotted", "rnnbench.tracking.Tags")``."""
    text = ARCHITECTURE.read_text()
    paths = {("path", p) for p in re.findall(r"`(rnnbench/[\w/.]*?)(?:::\w+)?`", text)}
    dotted = {("dotted", m) for m in re.findall(r"`(rnnbench(?:\.\w+)+)`", text)}
    return sorted(paths | dotted)


def _exists(kind: str, name: str) -> bool:
    if kind == "path":
        target = ROOT / name.rstrip("/")
        return target.exists() or target.with_suffix(".py").exists()
    modules = module_files()
    # a dotted name is a module, or an attribute of one: rnnbench.tracking.Tags
    return name in modules or name.rpartition(".")[0] in modules


@pytest.mark.parametrize(("kind", "name"), _named_in_architecture())
def test_every_module_the_architecture_page_names_exists(kind, name):
    assert _exists(kind, name), f"docs/architecture.md names {name}, which does not exist"


def test_the_existence_check_can_fail():
    assert not _exists("path", "rnnbench/cli.py")  # the CLI is a package now
    assert not _exists("dotted", "rnnbench.nowhere.thing")
    assert _exists("path", "rnnbench/cli/") and _exists("dotted", "rnnbench.tracking.Tags")


def _named_files() -> set[str]:
    """The files the page names: by path (`rnnbench/train.py`), or by file name in the
    row of their folder (`base.py` in the row of `rnnbench/cells/`)."""
    named = set()
    for line in ARCHITECTURE.read_text().splitlines():
        named.update(re.findall(r"`(rnnbench/[\w/]+\.py)`", line))
        folders = re.findall(r"`(rnnbench/[\w/]+/)`", line)
        for folder in folders:
            named.add(folder + "__init__.py")
            named.update(folder + f for f in re.findall(r"`(\w+\.py)`", line))
    return named


def test_the_architecture_page_names_every_module():
    """So a new module can't be added without saying where it fits."""
    named = _named_files()
    missing = sorted(str(p.relative_to(ROOT)) for p in module_files().values()
                     if str(p.relative_to(ROOT)) not in named and p.name != "__main__.py")
    assert not missing, f"modules docs/architecture.md does not name: {missing}"


def test_only_the_tracking_package_imports_mlflow():
    allowed = {"rnnbench.tracking", "rnnbench.mlflow_model"}
    importers = set()
    for name, path in module_files().items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                     else [])
            if any(n == "mlflow" or n.startswith("mlflow.") for n in names):
                importers.add(name)
    assert importers, "the check found no importer at all: it is looking in the wrong place"
    outside = {m for m in importers if not any(m == a or m.startswith(a + ".") for a in allowed)}
    assert not outside, f"modules outside tracking that import mlflow: {sorted(outside)}"


if __name__ == "__main__":
    # python tests/test_architecture.py [checkout]: the import cycles and the long files
    # of any checkout (e.g. an older commit in a git worktree), for before/after comparisons.
    import sys

    checkout = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT).resolve()
    modules = module_files(checkout / "rnnbench")
    for component in cycles(import_graph(modules)):
        print("cycle:", " ⇄ ".join(component))
    for path in modules.values():
        if (n := len(path.read_text().splitlines())) > MAX_LINES:
            print(f"over {MAX_LINES} lines: {path.relative_to(checkout)} ({n})")
    print(f"{len(modules)} modules")
