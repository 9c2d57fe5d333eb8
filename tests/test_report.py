"""``rnnbench-report`` on a store made by real ``rnnbench`` runs (co2, debug=smoke): the
numbers against the store, the files, determinism, failed runs, bad input, no TensorFlow."""

from __future__ import annotations

import base64
import csv
import os
import shutil
import tempfile
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from helpers import cli_env, run_cli
from rnnbench.report.cli import main as report_main

pytestmark = pytest.mark.slow


def fast_dir(tmp_path_factory, name: str) -> Path:
    """A fresh folder, in memory (/dev/shm) when there is room: SQLite's syncs are slow on a
    shared disk. The caller removes it."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 1 << 30:
        return Path(tempfile.mkdtemp(prefix=f"rnnbench-{name}-", dir=shm))
    return tmp_path_factory.mktemp(name)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A multirun of rnn and lstm over two seeds (with diagnostics, for the gradient-flow
    figure), plus one lstm run that diverges (FAILED)."""
    cwd = fast_dir(tmp_path_factory, "report-store")
    try:
        multi = run_cli(["-m", "cell=rnn,lstm", "seed=0,1", "debug=smoke", "hardware.xla=off",
                         "tracking.log_model=false"], cwd)
        assert multi.returncode == 0, multi.stdout[-2000:] + multi.stderr[-3000:]
        bad = run_cli(["cell=lstm", "seed=7", "debug=smoke", "optimizer.lr=1e30",
                       "optimizer.clipnorm=null", "diagnostics.enabled=false",
                       "hardware.xla=off", "tracking.log_model=false"], cwd)
        assert bad.returncode == 1, bad.stdout[-2000:] + bad.stderr[-3000:]
        uri = f"sqlite:///{cwd / 'mlflow.db'}"
        client = mlflow.MlflowClient(tracking_uri=uri)
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        assert sorted(r.info.status for r in runs) == ["FAILED"] + ["FINISHED"] * 4
        yield cwd, uri, runs
    finally:
        if str(cwd).startswith("/dev/shm/"):
            shutil.rmtree(cwd, ignore_errors=True)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def make(uri: str, out: Path, *extra: str) -> int:
    return report_main(["--tracking-uri", uri, "--out", str(out), *extra])


def test_table_numbers_match_the_store(store, tmp_path, capsys):
    cwd, uri, runs = store
    assert make(uri, tmp_path / "r", "--experiment", "co2") == 0
    printed = capsys.readouterr().out
    assert "co2: test_mse (lower is better)" in printed
    assert str(tmp_path / "r" / "report.md") in printed

    rows = {r["row"]: r for r in read_csv(tmp_path / "r" / "tables" / "co2-results.csv")}
    assert set(rows) == {"rnn", "lstm"}
    for cell in ("rnn", "lstm"):
        mine = [r for r in runs if r.data.tags["cell"] == cell and r.info.status == "FINISHED"]
        values = [r.data.metrics["test_mse"] for r in mine]
        assert len(values) == 2  # the FAILED lstm run is not averaged in
        mean = sum(values) / 2
        row = rows[cell]
        assert int(row["n"]) == 2
        assert float(row["test_mse_mean"]) == pytest.approx(mean, rel=1e-12)
        assert row["test_mse_ci_half_width"] == ""  # two values: no interval is meaningful
        assert int(row["params_count"]) == int(mine[0].data.metrics["params_count"])
        assert set(row["run_ids"].split()) == {r.info.run_id for r in mine}
        assert row["impl"] == mine[0].data.tags["impl"]
        epoch_times = [m.value for m in mlflow.MlflowClient(uri).get_metric_history(
            mine[0].info.run_id, "epoch_time_s")]
        assert len(epoch_times) == 2 and float(row["seconds_per_epoch"]) > 0
    ranked = sorted(rows.values(), key=lambda r: float(r["test_mse_mean"]))
    assert [r["rank"] for r in ranked] == ["1", "2"]

    # the multirun's cells share seeds 0 and 1: paired by seed, but two pairs allow no test
    sig = read_csv(tmp_path / "r" / "tables" / "co2-paired.csv")
    assert [(s["row"], s["baseline"], s["points"]) for s in sig] == [
        ("rnn", "lstm", "seed=0 | seed=1")]
    by_seed = {(r.data.tags["cell"], r.data.tags["seed"]): r.data.metrics["test_mse"]
               for r in runs if r.info.status == "FINISHED"}
    diffs = [by_seed[("rnn", s)] - by_seed[("lstm", s)] for s in ("0", "1")]
    assert float(sig[0]["diff_mean"]) == pytest.approx(sum(diffs) / 2, rel=1e-9)
    assert sig[0]["p_t"] == "" and sig[0]["verdict"] == "n/a (fewer than 3 shared points)"
    assert "n=2: no CI" in printed and "n/a (fewer than 3 shared points)" in printed


def test_failed_run_is_listed_with_its_reason_not_averaged(store, tmp_path):
    cwd, uri, runs = store
    assert make(uri, tmp_path / "r") == 0
    failed = next(r for r in runs if r.info.status == "FAILED")
    listed = read_csv(tmp_path / "r" / "tables" / "co2-not-averaged.csv")
    assert [x["run_id"] for x in listed] == [failed.info.run_id]
    assert listed[0]["status"] == "FAILED" and "non-finite loss" in listed[0]["reason"]
    md = (tmp_path / "r" / "report.md").read_text()
    section = md.split("### Runs not averaged in", 1)[1].split("##", 1)[0]
    assert failed.info.run_id[:8] in section and "non-finite loss" in section


def test_files_html_is_self_contained_and_every_table_has_its_csv(store, tmp_path):
    cwd, uri, runs = store
    assert make(uri, tmp_path / "r", "--title", "Smoke comparison") == 0
    out = tmp_path / "r"
    md = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    assert md.startswith("# Smoke comparison\n")
    for name in re.findall(r"\(tables/([^)]+\.csv)\)", md):
        rows = list(csv.reader((out / "tables" / name).open()))
        assert rows and rows[0], name
    for name in ("summary", "co2-results", "co2-paired", "co2-not-averaged",
                 "environment", "commands", "runs", "co2-learning-curves"):
        assert (out / "tables" / f"{name}.csv").is_file(), name
    assert not re.search(r"""(src|href)=["']?(https?:|//|figures/)""", page)
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    pngs = sorted(p.read_bytes() for p in (out / "figures").glob("*.png"))
    assert len(images) == len(pngs) >= 2  # learning curves and gradient flow
    assert sorted(base64.b64decode(i) for i in images) == pngs
    assert all(p.startswith(b"\x89PNG\r\n\x1a\n") for p in pngs)
    # the environment and the commands that reproduce the numbers, from the tags
    env = {r["tag"]: r["value"] for r in read_csv(out / "tables" / "environment.csv")}
    assert env["tensorflow_version"] == runs[0].data.tags["tensorflow_version"]
    assert env["xla"] in ("on", "off") and "git_commit" in env
    commands = {r["command"] for r in read_csv(out / "tables" / "commands.csv")}
    assert commands == {r.data.tags["command"] for r in runs}
    assert "rnnbench cell=lstm seed=7 debug=smoke optimizer.lr=1e30" in md
    # gradient flow from the diagnostics artifact, one panel per cell
    assert "gradient flow" in page.lower() and "co2-gradient-flow-profiles.csv" in md


def test_same_store_gives_byte_identical_reports(store, tmp_path):
    cwd, uri, runs = store
    assert make(uri, tmp_path / "a", "--experiment", "co2") == 0
    assert make(uri, tmp_path / "b", "--experiment", "co2") == 0
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*")
                     if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*")
                     if p.is_file())
    assert files_a == files_b and Path("report.md") in files_a
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_sweep_id_selects_the_multirun_only(store, tmp_path):
    cwd, uri, runs = store
    sweep = next(r.data.tags["sweep_id"] for r in runs if r.data.tags.get("sweep_id"))
    assert make(uri, tmp_path / "r", "--sweep", sweep) == 0
    listed = read_csv(tmp_path / "r" / "tables" / "runs.csv")
    assert len(listed) == 4 and {r["sweep_id"] for r in listed} == {sweep}
    assert not (tmp_path / "r" / "tables" / "co2-not-averaged.csv").exists()


def test_metric_override_ranks_by_another_test_metric(store, tmp_path):
    cwd, uri, runs = store
    assert make(uri, tmp_path / "r", "--metric", "mae", "--baseline", "rnn") == 0
    rows = read_csv(tmp_path / "r" / "tables" / "co2-results.csv")
    assert "test_mae_mean" in rows[0]
    sig = read_csv(tmp_path / "r" / "tables" / "co2-paired.csv")
    assert [(s["row"], s["baseline"]) for s in sig] == [("lstm", "rnn")]


@pytest.mark.parametrize("args, message", [
    (["--filter", "tags.cell = 'nosuchcell'"], "no runs match"),
    (["--filter", "tags.cell = lstm"], "is not a valid MLflow filter"),
    (["--experiment", "nosuchexperiment"], "no such experiment"),
    (["--sweep", "multirun/1999-01-01/00-00-00"], "no runs match"),
    (["--metric", "nosuchmetric"], "no finished run has test_nosuchmetric"),
])
def test_bad_selection_is_a_clear_error_and_writes_nothing(store, tmp_path, capsys, args,
                                                           message):
    cwd, uri, runs = store
    out = tmp_path / "r"
    assert make(uri, out, *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("rnnbench-report: error: ") and message in err
    assert "Traceback" not in err
    assert not out.exists()


def test_missing_store_is_refused_without_creating_one(tmp_path, capsys):
    assert report_main(["--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}",
                        "--out", str(tmp_path / "r")]) == 2
    assert "there is no MLflow store" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists() and not (tmp_path / "r").exists()


def test_cli_never_imports_tensorflow(store, tmp_path):
    cwd, uri, runs = store
    code = (
        "import sys\n"
        "from rnnbench.report.cli import parser\n"
        "parser().parse_args([])\n"
        "assert 'mlflow' not in sys.modules, 'parsing arguments must stay light'\n"
        "from rnnbench.report.cli import main\n"
        f"rc = main(['--tracking-uri', {uri!r}, '--out', {str(tmp_path / 'r')!r}])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('tensorflow', 'keras', 'torch', 'jax'))\n"
        "print('RC', rc, 'HEAVY', heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=cli_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RC 0 HEAVY []" in proc.stdout
    assert (tmp_path / "r" / "report.md").is_file()


def test_help_names_the_options(tmp_path):
    proc = run_cli(["--help"], tmp_path, module="report_main")
    assert proc.returncode == 0 and "--tracking-uri" in proc.stdout and "--sweep" in proc.stdout
