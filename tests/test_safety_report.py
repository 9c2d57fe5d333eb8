"""The report is safe to open and fails cleanly: values from MLflow (run names, tags)
cannot inject HTML or script into report.md, nor formulas into tables/*.csv; a bad or
full --out folder, a long title and Ctrl-C each end in one clear message, with nothing
half-written left looking complete."""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import cli_env, fill_disk
from rnnbench.report import writers
from rnnbench.report.document import Code, Document, Para, Table, code

EVIL_NAME = '<img src=x onerror="alert(1)">'
EVIL_COMMAND = "rnnbench seed=1\n```\n<script>alert(2)</script>\n````\n<b>bold</b>"


def rendered_html(md: str) -> str:
    """report.md as a CommonMark renderer (raw HTML allowed, GFM tables) shows it."""
    markdown_it = pytest.importorskip("markdown_it")
    return markdown_it.MarkdownIt("commonmark").enable("table").render(md)


def assert_no_markup(page: str) -> None:
    for tag in ("<img", "<script", "<b>", "onerror=\"", "<i>"):
        assert tag not in page, (tag, page)


# ---- injection: the writers ----------------------------------------------------------

def test_markdown_shows_values_as_text_and_keeps_code_blocks_closed():
    doc = Document("t")
    doc.add(Para(f"run {EVIL_NAME} with **bold** and {code('a`b ``c')} and [x](javascript:y)"),
            Code(EVIL_COMMAND),
            Table("t", ["run", "cell"], [[EVIL_NAME, "<i>x</i> | y"]], ["run"], [[EVIL_NAME]]))
    md = writers.markdown(doc)
    page = rendered_html(md)
    assert_no_markup(page)
    assert "<strong>bold</strong>" in page and "<code>a`b ``c</code>" in page
    assert '<a href="javascript' not in page
    # the whole command is one code block, shown verbatim
    assert "<pre><code>" + EVIL_COMMAND.replace("<", "&lt;").replace(">", "&gt;") in page
    assert page.count("<pre>") == 1
    assert "&lt;img src=x" in page and "&lt;i&gt;x&lt;/i&gt; | y" in page


def test_csv_neutralises_formulas_and_keeps_numbers():
    rows = [["=HYPERLINK(\"http://x\",\"y\")", -0.5, "-3", "+cmd|' /C calc'!A0", "@SUM(A1)",
             "-", "\tx", "-1e-05", "lstm", 7, float("nan"), "=1+1"]]
    table = Table("t", [], [], ["=a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"],
                  rows)
    got = list(csv.reader(io.StringIO(writers.csv_text(table))))
    assert got[0][0] == "'=a"
    assert got[1] == ["'=HYPERLINK(\"http://x\",\"y\")", "-0.5", "-3", "'+cmd|' /C calc'!A0",
                      "'@SUM(A1)", "'-", "'\tx", "-1e-05", "lstm", "7", "", "'=1+1"]
    assert float(got[1][1]) == -0.5  # a real negative number stays a number


# ---- a store with hostile values, and the report made from it ------------------------

@pytest.fixture(scope="module")
def hostile_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile-store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    from rnnbench import tracking

    tracking.configure(uri)
    for cell in ("lstm", "=HYPERLINK(\"http://evil\",\"x\")"):
        for seed in (0, 1, 2):
            tags = {"task": "co2", "cell": cell, "seed": seed, "run_kind": "run",
                    "primary_metric": "mse", "primary_mode": "min", "command": EVIL_COMMAND}
            with tracking.start_run("co2", EVIL_NAME, tags) as run:
                run.log_metrics({"test_mse": -0.5 - seed / 10 - (cell == "lstm") * seed**2 / 7})
    return root, uri


def report(uri: str, out: Path, *extra: str) -> int:
    from rnnbench.report.cli import main as report_main

    return report_main(["--tracking-uri", uri, "--out", str(out), *extra])


@pytest.mark.slow
def test_report_md_and_csv_hold_no_markup_and_no_formula(hostile_store, tmp_path):
    _, uri = hostile_store
    out = tmp_path / "r"
    assert report(uri, out) == 0
    md = (out / "report.md").read_text()
    assert EVIL_NAME not in md and "&lt;img src=x" in md
    page = rendered_html(md)
    assert_no_markup(page)
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in page  # shown, inside its code block
    with (out / "tables" / "runs.csv").open(newline="") as fh:
        runs = list(csv.DictReader(fh))
    assert len(runs) == 6
    for r in runs:
        assert r["run_name"] == "'" + EVIL_NAME if EVIL_NAME[0] in "=+-@" else EVIL_NAME
        assert r["cell"] in ("lstm", "'=HYPERLINK(\"http://evil\",\"x\")")
        assert float(r["value"]) < 0  # negative metrics stay numbers
    for path in (out / "tables").glob("*.csv"):
        for row in csv.reader(path.open(newline="")):
            for cell in row:
                assert not cell.startswith(("=", "+", "@")), (path.name, cell)


# ---- faults of --out -----------------------------------------------------------------

def assert_one_clear_message(err: str, *words: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("rnnbench-report: error: --out"), err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_out_on_a_symlink_loop_or_a_file(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'no-store.db'}"  # --out is checked before the store
    loop = tmp_path / "loop"
    loop.symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(loop)
    afile = tmp_path / "afile"
    afile.write_text("mine")
    cases = [(loop, "loop of symbolic links"), (loop / "sub", "loop of symbolic links"),
             (afile, "must be a folder"), (afile / "sub", "is a file")]
    for out, words in cases:
        assert report(uri, out) == 2
        assert_one_clear_message(capsys.readouterr().err, str(out), words)
    assert afile.read_text() == "mine"


def test_out_under_a_folder_that_cannot_be_written(tmp_path, capsys, request):
    uri = f"sqlite:///{tmp_path / 'no-store.db'}"
    if os.geteuid() == 0:  # root writes through permissions: a read-only file system
        ro = request.getfixturevalue("small_disk")(64)
        done = subprocess.run(["mount", "-o", "remount,ro", str(ro)], capture_output=True)
        if done.returncode != 0:
            pytest.skip("cannot remount the small disk read-only here")
        words = "read-only"
    else:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        words = "permission denied"
    assert report(uri, ro / "a" / "b") == 2
    assert_one_clear_message(capsys.readouterr().err, str(ro / "a" / "b"), words)


@pytest.mark.slow
def test_a_300_character_title_gives_a_short_folder_name(hostile_store, tmp_path, monkeypatch,
                                                         capsys):
    from rnnbench.report.cli import main as report_main

    _, uri = hostile_store
    monkeypatch.chdir(tmp_path)
    title = "A very long title " * 17  # 306 characters
    assert report_main(["--tracking-uri", uri, "--title", title]) == 0
    (folder,) = (tmp_path / "reports").iterdir()
    assert len(folder.name) <= 80 and folder.name.startswith("a-very-long-title")
    assert (folder / "report.md").read_text().startswith("# A very long title")
    other = "A very long title " * 16 + "different ending"
    assert report_main(["--tracking-uri", uri, "--title", other]) == 0
    assert len(list((tmp_path / "reports").iterdir())) == 2  # a distinct name


def report_files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != ".filler"}


@pytest.mark.slow
def test_a_full_disk_leaves_no_partial_report(hostile_store, tmp_path, small_disk, capsys):
    _, uri = hostile_store
    disk = small_disk(512)
    out = disk / "r"
    fill_disk(disk, leave=12 * 1024)  # room for the Markdown, not for the HTML too
    assert report(uri, out) == 2
    assert_one_clear_message(capsys.readouterr().err, "the disk is full")
    assert not out.exists()  # no 0-byte or partial file, no empty folder

    (disk / ".filler").unlink()
    assert report(uri, out) == 0
    before = report_files(out)
    assert "report.html" in before and ".rnnbench-report" in before
    capsys.readouterr()
    fill_disk(disk, leave=4 * 1024)
    assert report(uri, out, "--title", "a new title") == 2
    assert_one_clear_message(capsys.readouterr().err, "the disk is full")
    assert report_files(out) == before  # the earlier report, whole and alone


INTERRUPT = """
import os, signal, sys
from rnnbench.report import analysis, writers
where = sys.argv.pop(1)
if where == "reading":
    real = analysis.analyse
    def analyse(*a, **k):
        os.kill(os.getpid(), signal.SIGINT)
        return real(*a, **k)
    analysis.analyse = analyse
else:
    real = writers._stage
    def stage(path, data, staged):
        real(path, data, staged)
        if path.name == "report.md":
            os.kill(os.getpid(), signal.SIGINT)
    writers._stage = stage
from rnnbench.cli import report_main
report_main()
"""


@pytest.mark.slow
@pytest.mark.parametrize("where", ["reading", "writing"])
def test_ctrl_c_ends_the_report_with_one_line(hostile_store, tmp_path, where):
    """A real SIGINT to the real command, while it reads the store or writes the files:
    exit 130, one line, and the folder as it was (here: an earlier report, unchanged)."""
    _, uri = hostile_store
    out = tmp_path / "r"
    assert report(uri, out) == 0
    before = report_files(out)
    proc = subprocess.run([sys.executable, "-c", INTERRUPT, where, "--tracking-uri", uri,
                           "--out", str(out), "--title", "new"],
                          capture_output=True, text=True, timeout=300, env=cli_env())
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    ours = [line for line in proc.stderr.splitlines() if line.startswith("rnnbench")]
    assert ours == ["rnnbench-report: interrupted: no report was written (the --out folder "
                    "holds what it held before)."], proc.stderr[-3000:]
    assert report_files(out) == before
    assert not [p for p in out.rglob("*partial*")]
