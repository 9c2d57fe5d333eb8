"""``rnnbench-report`` on sweeps and on tasks with different metrics.

The store is made with MLflow's own client and carries rnnbench's record schema (tags,
flattened params, per-epoch metrics, sweep parents with nested trials), with values
chosen so the expected statistics are known.
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
import math
import random
from pathlib import Path

import mlflow
import pytest
from mlflow.entities import Metric, Param, RunTag
from scipy import stats as sps

from rnnbench.report.cli import main as report_main

pytestmark = pytest.mark.slow  # the store takes ~10 s to build on a busy 2-core machine

T0 = 1_790_000_000_000  # fixed start times: the report shows times from the data only


def fast_dir(tmp_path_factory, name: str) -> Path:
    """A fresh folder, in memory (/dev/shm) when there is room: SQLite's syncs are slow on a
    shared disk. The caller removes it."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 1 << 30:
        return Path(tempfile.mkdtemp(prefix=f"rnnbench-{name}-", dir=shm))
    return tmp_path_factory.mktemp(name)


def schema_tags(task: str, family: str, cell: str, seed: int, kind: str, primary: str,
                mode: str, command: str, sweep_id: str | None) -> dict[str, str]:
    tags = {"task": task, "task_family": family, "cell": cell, "impl": "builtin",
            "seed": str(seed), "hardware": "cpu", "backend": "tensorflow",
            "device": "/device:CPU:0", "cudnn": "false", "cudnn_eligible": "true",
            "xla": "on", "precision": "float32", "deterministic": "false",
            "git_commit": "0123456789abcdef0123456789abcdef01234567",
            "config_hash": f"{abs(hash((task, cell, seed, command))) % 16**16:016x}",
            "run_kind": kind, "primary_metric": primary, "primary_mode": mode,
            "command": command, "rnnbench_version": "0.1.0", "python_version": "3.11.7",
            "tensorflow_version": "2.21.0", "keras_version": "3.15.1"}
    if sweep_id:
        tags["sweep_id"] = sweep_id
    return tags


class Store:
    def __init__(self, path: Path) -> None:
        self.uri = f"sqlite:///{path}"
        self.client = mlflow.MlflowClient(tracking_uri=self.uri)
        self.clock = T0

    def run(self, experiment: str, name: str, tags: dict[str, str], params: dict[str, str],
            metrics: dict[str, float], history: dict[str, list[float]] | None = None,
            status: str = "FINISHED") -> str:
        exp = self.client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp else self.client.create_experiment(experiment)
        self.clock += 60_000
        run = self.client.create_run(exp_id, start_time=self.clock, tags=tags, run_name=name)
        rid = run.info.run_id
        items = [Metric(k, float(v), self.clock, 0) for k, v in metrics.items()]
        for key, values in (history or {}).items():
            items += [Metric(key, float(v), self.clock + i, i + 1) for i, v in enumerate(values)]
        self.client.log_batch(rid, metrics=items,
                              params=[Param(k, str(v)) for k, v in params.items()],
                              tags=[RunTag("mlflow.runName", name)])
        self.client.set_terminated(rid, status, end_time=self.clock + 30_000)
        return rid


def trial_value(lr: float, cell: str) -> float:
    return (math.log10(lr) + 2.5) ** 2 + (0.2 if cell == "rnn" else 0.05)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Two keras-tuner sweeps on `adding` (mse, min) and a seeded comparison on `copy`
    (accuracy, max), with FAILED and KILLED runs and one run that is not rnnbench's."""
    home = fast_dir(tmp_path_factory, "sweeps")
    s = Store(home / "mlflow.db")
    rng = random.Random(0)
    expected: dict = {"trials": {}, "parents": {}}
    for cell, n_trials in (("lstm", 22), ("rnn", 6)):
        sweep_id = f"adding-{cell}-random-0001"
        command = f"rnnbench-tune task=adding cell={cell} tuner.max_trials={n_trials}"
        ptags = {"run_kind": "sweep", "sweep_id": sweep_id, "task": "adding", "cell": cell,
                 "objective": "val_loss", "direction": "min", "command": command}
        parent = s.run("probes", f"sweep-{sweep_id}", ptags, {"tuner.objective": "val_loss"}, {})
        expected["parents"][cell] = parent
        trials = []
        for i in range(n_trials):
            lr = 10 ** rng.uniform(-4, -1)
            units = rng.choice([16, 32, 64, 128])
            tags = schema_tags("adding", "probe", cell, 0, "trial", "mse", "min", command,
                               sweep_id)
            tags.update({"mlflow.parentRunId": parent, "trial_id": str(i)})
            params = {"cell.name": cell, "seed": "0", "optimizer.lr": repr(lr),
                      "model.units": str(units), "task.length": "100",
                      # the tuner also logs its own names for the same values
                      "hp/lr": repr(lr), "hp/units": str(units)}
            if i in (3, 5):  # two trials diverge
                tags["failure_reason"] = "non-finite loss at epoch 1 step 2"
                s.run("probes", f"trial-{i}", tags, params, {}, {"val_loss": [5.0]},
                      status="FAILED")
                continue
            v = trial_value(lr, cell)
            test = 1.1 * v + 0.01 * units / 128
            s.run("probes", f"trial-{i}", tags, params,
                  {"test_mse": test, "params_count": 4 * units * (units + 2),
                   "baseline_mse": 0.167},
                  {"val_loss": [v + 0.3, v, v + 0.01], "epoch_time_s": [2.0, 0.5, 0.7],
                   "throughput_samples_per_s": [100.0, 400.0, 300.0]})
            trials.append((v, test))
        expected["trials"][cell] = trials
    acc = {"lstm": [0.50, 0.52, 0.51], "gru": [0.90, 0.91, 0.92]}
    for cell, values in acc.items():
        for seed, value in enumerate(values):
            command = f"rnnbench task=copy cell={cell} seed={seed}"
            s.run("probes", f"copy-{cell}-s{seed}",
                  schema_tags("copy", "probe", cell, seed, "run", "accuracy", "max", command,
                              "multirun/2026-01-01/00-00-00"),
                  {"cell.name": cell, "seed": str(seed), "task.length": "50"},
                  {"test_accuracy": value, "test_loss": 1 - value, "params_count": 1000,
                   "baseline_accuracy": 0.125},
                  {"val_loss": [1.0, 0.8 - value / 2], "epoch_time_s": [1.0, 0.2]})
    killed = schema_tags("copy", "probe", "gru", 3, "run", "accuracy", "max",
                         "rnnbench task=copy cell=gru seed=3", None)
    killed["failure_reason"] = "interrupted (Ctrl-C or SIGTERM)"
    expected["killed"] = s.run("probes", "copy-gru-s3", killed,
                               {"cell.name": "gru", "seed": "3", "task.length": "50"}, {},
                               status="KILLED")
    expected["foreign"] = s.run("probes", "someone-elses-run", {}, {"alpha": "1"}, {"rmse": 2.0})
    expected["acc"] = acc
    yield s, expected
    if str(home).startswith("/dev/shm/"):
        shutil.rmtree(home, ignore_errors=True)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def report(store, tmp_path_factory):
    s, expected = store
    out = tmp_path_factory.mktemp("report") / "r"
    assert report_main(["--tracking-uri", s.uri, "--experiment", "probes",
                        "--out", str(out)]) == 0
    return out


def test_each_task_gets_its_own_table_and_metric(report):
    summary = {r["task"]: r for r in read_csv(report / "tables" / "summary.csv")}
    assert set(summary) == {"adding (sweep trials)", "copy"}
    assert (summary["adding (sweep trials)"]["metric"], summary["copy"]["metric"]) == \
        ("mse", "accuracy")
    assert summary["copy"]["mode"] == "max" and summary["copy"]["best_cell"] == "gru"
    copy_rows = read_csv(report / "tables" / "copy-results.csv")
    assert [(r["rank"], r["row"]) for r in copy_rows] == [("1", "gru"), ("2", "lstm")]
    assert "test_accuracy_mean" in copy_rows[0] and "test_mse_mean" not in copy_rows[0]
    assert float(copy_rows[0]["test_accuracy_mean"]) == pytest.approx(0.91)
    iv = sps.t.ppf(0.975, 2) * 0.01 / math.sqrt(3)  # sd of 0.90, 0.91, 0.92 is 0.01
    assert float(copy_rows[0]["test_accuracy_ci_half_width"]) == pytest.approx(iv)
    md = (report / "report.md").read_text()
    assert "test_accuracy (mean ± 95% CI)" in md and "test_mse (mean ± 95% CI)" in md


def test_significance_direction_follows_the_metric(store, report):
    s, expected = store
    sig = read_csv(report / "tables" / "copy-significance.csv")
    assert [(x["row"], x["baseline"]) for x in sig] == [("gru", "lstm")]
    p = sps.ttest_ind(expected["acc"]["gru"], expected["acc"]["lstm"], equal_var=False).pvalue
    assert float(sig[0]["p"]) == pytest.approx(p) and p < 0.05
    assert sig[0]["significant"] == "true" and sig[0]["verdict"] == "better (significant)"


def test_killed_failed_and_foreign_runs_are_listed_not_averaged(store, report):
    s, expected = store
    copy_out = read_csv(report / "tables" / "copy-not-averaged.csv")
    assert [(x["run_id"], x["status"]) for x in copy_out] == [(expected["killed"], "KILLED")]
    assert "interrupted" in copy_out[0]["reason"]
    rows = {r["row"]: r for r in read_csv(report / "tables" / "copy-results.csv")}
    assert rows["gru"]["n"] == "3"
    adding_out = read_csv(report / "tables" / "adding-sweep-trials-not-averaged.csv")
    assert len(adding_out) == 4 and {x["status"] for x in adding_out} == {"FAILED"}
    assert float(read_csv(report / "tables" / "summary.csv")[0]["runs_not_averaged"]) == 4
    assert all("non-finite loss" in x["reason"] for x in adding_out)
    md = (report / "report.md").read_text()
    assert expected["foreign"] in md.split("## Runs", 1)[1]  # listed as ignored


def test_sweep_rows_average_the_best_tenth_of_trials(store, report):
    s, expected = store
    rows = {r["row"]: r for r in read_csv(report / "tables" / "adding-sweep-trials-results.csv")}
    for cell, finished, k in (("lstm", 20, 2), ("rnn", 4, 1)):  # k = ceil(10% of finished)
        trials = sorted(expected["trials"][cell])  # by val_loss (best epoch), lowest first
        assert len(trials) == finished
        best = [test for _, test in trials[:k]]
        assert rows[cell]["n"] == str(k)
        assert rows[cell]["over"] == f"best {k} of {finished} trials by val_loss"
        assert float(rows[cell]["test_mse_mean"]) == pytest.approx(sum(best) / k, rel=1e-12)
        # time per epoch: the median over epochs 2..3 (0.5, 0.7), throughput (400, 300)
        assert float(rows[cell]["seconds_per_epoch"]) == pytest.approx(0.6)
        assert float(rows[cell]["samples_per_second"]) == pytest.approx(350.0)
    assert rows["rnn"]["test_mse_ci_half_width"] == ""  # one value: no interval
    sig = read_csv(report / "tables" / "adding-sweep-trials-significance.csv")
    assert [(x["row"], x["significant"], x["verdict"]) for x in sig] == [
        ("rnn", "", "n/a (fewer than 2 values)")]


def test_trial_fraction_option_sets_how_many_trials_enter(store, tmp_path):
    s, expected = store
    out = tmp_path / "r"
    assert report_main(["--tracking-uri", s.uri, "--experiment", "probes",
                        "--trial-fraction", "0.5", "--out", str(out)]) == 0
    rows = {r["row"]: r for r in read_csv(out / "tables" / "adding-sweep-trials-results.csv")}
    for cell, finished in (("lstm", 20), ("rnn", 4)):
        k = finished // 2
        best = [test for _, test in sorted(expected["trials"][cell])[:k]]
        assert rows[cell]["over"] == f"best {k} of {finished} trials by val_loss"
        assert float(rows[cell]["test_mse_mean"]) == pytest.approx(sum(best) / k, rel=1e-12)
    assert "--trial-fraction 0.5" in (out / "report.md").read_text()  # how to remake it


@pytest.mark.parametrize("value", ["0", "1.5", "-0.1"])
def test_trial_fraction_out_of_range_is_refused(store, tmp_path, capsys, value):
    s, _ = store
    assert report_main(["--tracking-uri", s.uri, "--trial-fraction", value,
                        "--out", str(tmp_path / "r")]) == 2
    assert "--trial-fraction" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_fanova_importance_of_the_sweeps(report):
    imp = read_csv(report / "tables" / "adding-sweep-trials-importance.csv")
    names = [r["hyperparameter"] for r in imp]
    assert names[0] == "optimizer.lr" and float(imp[0]["importance"]) > 0.5
    assert set(names) == {"optimizer.lr", "model.units", "cell.name"}
    assert sum(float(r["importance"]) for r in imp) == pytest.approx(1.0)
    assert (report / "figures" / "adding-sweep-trials-importance.png").is_file()


def test_parent_run_id_selects_that_sweep(store, tmp_path):
    s, expected = store
    out = tmp_path / "r"
    assert report_main(["--tracking-uri", s.uri, "--sweep", expected["parents"]["rnn"],
                        "--baseline", "rnn", "--out", str(out)]) == 0
    runs = read_csv(out / "tables" / "runs.csv")
    assert len(runs) == 6 and {r["cell"] for r in runs} == {"rnn"}
    commands = read_csv(out / "tables" / "commands.csv")
    assert [c["command"] for c in commands] == [
        "rnnbench-tune task=adding cell=rnn tuner.max_trials=6"]


def test_report_with_sweeps_is_deterministic(store, report, tmp_path):
    s, expected = store
    out = tmp_path / "again"
    assert report_main(["--tracking-uri", s.uri, "--experiment", "probes",
                        "--out", str(out)]) == 0
    names = sorted(p.relative_to(report) for p in report.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    for rel in names:
        assert (report / rel).read_bytes() == (out / rel).read_bytes(), rel


def test_runs_that_are_not_rnnbench_runs_make_no_report(store, tmp_path, capsys):
    s, expected = store
    out = tmp_path / "r"
    assert report_main(["--tracking-uri", s.uri, "--filter",
                        "attributes.run_name = 'someone-elses-run'", "--out", str(out)]) == 2
    assert "are not rnnbench runs" in capsys.readouterr().err
    assert not out.exists()


def test_trials_filtered_without_their_parent_still_rank_by_its_objective(store, tmp_path):
    s, expected = store
    out = tmp_path / "r"
    assert report_main(["--tracking-uri", s.uri, "--filter",
                        "tags.run_kind = 'trial' and tags.cell = 'lstm'",
                        "--out", str(out)]) == 0
    rows = read_csv(out / "tables" / "adding-sweep-trials-results.csv")
    assert [(r["row"], r["over"]) for r in rows] == [("lstm", "best 2 of 20 trials by val_loss")]
    commands = read_csv(out / "tables" / "commands.csv")  # the parent's command
    assert {c["command"] for c in commands} == {
        "rnnbench-tune task=adding cell=lstm tuner.max_trials=22"}
