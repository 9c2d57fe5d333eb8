"""The study READMEs say what their tables say: every check comment in
``experiments/*/README.md`` holds against its ``tables/*.csv`` (rnnbench.report.claims)."""

from __future__ import annotations

from pathlib import Path

import csv

import pytest

from rnnbench.report.claims import check_readme, check_text, parse_number

ROOT = Path(__file__).resolve().parent.parent
STUDIES = ("greff", "shootout", "chorales_shootout", "long_range")
TABLE = "row,mean,sd\ngru,9.22178,0.0189\nlstm,9.40916,0.093\nrnn,9.46212,0.0178\n"


@pytest.fixture()
def study(tmp_path):
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "r.csv").write_text(TABLE)
    return tmp_path / "README.md"


def problems(readme: Path, text: str) -> list[str]:
    count, found = check_text(text, readme)
    assert count >= 1
    return [str(p) for p in found]


@pytest.mark.parametrize("name", STUDIES)
def test_every_check_of_a_study_readme_holds_against_its_tables(name):
    count, found = check_readme(ROOT / "experiments" / name / "README.md")
    assert count >= 5, f"{name}: its numbers are not checked"
    assert not found, "\n".join(map(str, found))


def test_a_printed_value_holds_at_its_own_rounding(study):
    check = "<!-- check tables/r.csv row=gru col=mean -->"
    assert problems(study, f"gru 9.222 {check}") == []
    assert problems(study, f"gru 9.2 {check}") == []
    assert problems(study, f"gru 9.22178 {check}") == []
    bad = problems(study, f"gru\n9.223 {check}")
    assert len(bad) == 1 and ":2:" in bad[0] and "9.223" in bad[0] and "9.22178" in bad[0]
    assert problems(study, f"gru 9.3 {check}")


def test_aggregates_offsets_scales_and_words(study):
    t = "tables/r.csv"
    assert problems(study, f"0.68 above <!-- check {t} row=gru col=mean minus=8.54 -->") == []
    assert problems(study, f"0.69 <!-- check {t} row=gru col=mean minus=8.54 -->")
    assert problems(study, f"sd 1.9% <!-- check {t} row=gru col=sd times=100 -->") == []
    assert problems(study, f"+8% <!-- check {t} row=gru col=mean minus=8.54 over=8.54 times=100 -->"
                    ) == []
    assert problems(study, f"9.22–9.46 <!-- check {t} agg=max col=mean -->") == []
    assert problems(study, f"2 of them <!-- check {t} row=gru|rnn agg=count col=mean -->"
                    ) == []
    assert problems(study, f"a sixth <!-- check {t} row=lstm col=sd value=0.09 -->") == []
    assert problems(study, f"9.24 <!-- check {t} row=gru col=mean plus=sd -->") == []
    assert problems(study, f"9.24 <!-- check {t} row=gru col=mean plus=ci -->")  # no column
    assert problems(study, f"9.4 <!-- check {t} col=mean -->")  # three rows, no agg
    assert problems(study, f"−0.019 <!-- check {t} row=gru col=sd -->")  # sign counts


def test_printed_forms():
    assert parse_number("6·10⁻⁴").value == pytest.approx(6e-4)
    assert parse_number("6·10⁻⁴").tolerance == pytest.approx(0.5e-4)
    assert parse_number("−0.19").value == pytest.approx(-0.19)
    assert parse_number("1e-4").value == pytest.approx(1e-4)
    assert parse_number("409").tolerance == 0.5


@pytest.mark.parametrize("check, name", [
    ("tables/missing.csv row=gru col=mean", "missing.csv"),
    ("tables/r.csv row=gur col=mean", "'gur'"),
    ("tables/r.csv row=gru col=median", "'median'"),
    ("tables/r.csv row=cell:gru col=mean", "'cell'"),
])
def test_a_check_naming_what_does_not_exist_fails_with_the_path_and_the_name(study, check,
                                                                            name):
    found = problems(study, f"9.222 <!-- check {check} -->")
    assert len(found) == 1 and name in found[0] and str(study) in found[0]
    if "missing" not in check:
        assert "r.csv" in found[0]


@pytest.mark.parametrize("name, table", [("shootout", "first-shootout.csv"),
                                         ("long_range", "first-run.csv")])
def test_a_comparison_with_a_first_run_holds_the_rerun_s_own_test_metrics(name, table):
    folder = ROOT / "experiments" / name
    with (folder / "tables" / "runs.csv").open(newline="") as f:
        runs = {(r["task"], r["cell"], r["seed"]): float(r["value"])
                for r in csv.DictReader(f) if r["status"] == "FINISHED"}
    with (folder / table).open(newline="") as f:
        rows = list(csv.DictReader(f))

    def key(r):  # long_range's tables name a task and its length together
        task = f"{r['task']} · task.length={r['length']}" if "length" in r else r["task"]
        return task, r["cell"], r["seed"]

    assert {key(r) for r in rows} == set(runs)
    for r in rows:
        assert float(r["rerun"]) == runs[key(r)], key(r)
        change = 100 * (float(r["rerun"]) / float(r["first"]) - 1)
        assert float(r["change_pct"]) == pytest.approx(change, abs=1e-12), key(r)


def test_the_fgr_weight_counts_are_the_cells_own_at_the_points_both_trained():
    """fgr-weights.csv: the weights of `peephole` and `fgr` (recurrent layer and output
    layer) at each point both were trained at, from the units in tables/runs.csv and the
    cells' own parameter counts; the report's params_count ranges end at two of them."""
    import importlib.util

    folder = ROOT / "experiments" / "greff"
    spec = importlib.util.spec_from_file_location("fgr_weights", folder / "fgr_weights.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    points = script.points(folder / "tables" / "runs.csv")
    weights = script.weights
    sizes = script.SIZES
    with (folder / "fgr-weights.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))

    for task in sizes:
        shared = points[(task, "fgr")] & points[(task, "peephole")]
        assert {(int(r["units"]), r["lr"]) for r in rows if r["task"] == task} == shared
        for cell in ("peephole", "fgr"):
            name = task.replace("_", "-")
            with (folder / "tables" / f"{name}-sweep-trials-results.csv").open() as f:
                span = next(r for r in csv.DictReader(f) if r["row"] == cell)["params_count"]
            counts = {weights(cell, task, u) for u, _ in points[(task, cell)]}
            assert {int(x) for x in span.split("–")} <= counts, (task, cell, span)
    for r in rows:
        a, b = weights("peephole", r["task"], int(r["units"])), weights("fgr", r["task"],
                                                                      int(r["units"]))
        assert (int(r["peephole_weights"]), int(r["fgr_weights"])) == (a, b)
        assert float(r["ratio"]) == pytest.approx(b / a, rel=1e-12)


def test_rnnbench_report_check_readme_exits_1_on_a_wrong_number(study, capsys):
    from rnnbench.report.cli import main

    study.write_text("gru 9.222 <!-- check tables/r.csv row=gru col=mean -->\n")
    assert main(["--check-readme", str(study)]) == 0
    assert "1 of 1 checks hold" in capsys.readouterr().out
    study.write_text("gru\n9.3 <!-- check tables/r.csv row=gru col=mean -->\n")
    assert main(["--check-readme", str(study)]) == 1
    out = capsys.readouterr().out
    assert f"{study}:2: printed 9.3" in out and "0 of 1 checks hold" in out
    assert main(["--check-readme", str(study.parent / "none.md")]) == 2
    assert "none.md" in capsys.readouterr().err


REPORTS = ("greff", "shootout", "chorales_shootout", "chorales_shootout/lr", "long_range")


@pytest.mark.parametrize("folder", REPORTS)
def test_each_committed_report_rests_on_runs_of_one_commit(folder):
    """Every run a committed report counts names one and the same full commit, and the
    report's code-version table names no other (the reports are made with
    --require-clean from a clean worktree of that commit)."""
    tables = ROOT / "experiments" / folder / "tables"
    with (tables / "runs.csv").open(newline="") as f:
        commits = {row["git_commit"] for row in csv.DictReader(f)}
    assert len(commits) == 1, (folder, commits)
    (commit,) = commits
    assert len(commit) == 40 and all(c in "0123456789abcdef" for c in commit), commit
    with (tables / "environment.csv").open(newline="") as f:
        named = {row["value"] for row in csv.DictReader(f) if row["tag"] == "git_commit"}
    assert named <= {commit}, (folder, named)


def test_the_modern_study_refuses_an_environment_that_runs_another_checkout_s_code(tmp_path):
    """study.sh runs in a worktree of one commit; the rnnbench on PATH must be that
    worktree's, or every run would carry another tree's commit. Here the script lies in a
    copy whose environment is this tree's: it stops before it makes a log or a store."""
    import os
    import shutil
    import subprocess
    import sys

    script = tmp_path / "experiments" / "modern" / "study.sh"
    script.parent.mkdir(parents=True)
    shutil.copy(ROOT / "experiments" / "modern" / "study.sh", script)
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "rnnbench").exists():
        pytest.skip("the rnnbench command is not installed next to this interpreter")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    out = subprocess.run(["bash", str(script), "A"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2, out.stderr
    assert str(ROOT) in out.stderr and str(tmp_path.resolve()) in out.stderr
    assert "environment of its own" in out.stderr
    assert not (tmp_path / "logs").exists() and not (tmp_path / "mlflow.db").exists()
