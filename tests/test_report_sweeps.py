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
    points: list = []  # the lstm sweep's finished points
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
            if cell == "lstm":
                points.append((lr, units, test))
        expected["trials"][cell] = trials
    # a gru sweep with the lstm sweep's oracle seed: the same first 10 hyperparameter
    # points, a little worse at every one (a paired design)
    sweep_id = "adding-gru-random-0001"
    command = "rnnbench-tune task=adding cell=gru tuner.max_trials=10"
    parent = s.run("probes", f"sweep-{sweep_id}",
                   {"run_kind": "sweep", "sweep_id": sweep_id, "task": "adding", "cell": "gru",
                    "objective": "val_loss", "direction": "min", "command": command},
                   {"tuner.objective": "val_loss"}, {})
    pairs = []
    for i, (lr, units, lstm_test) in enumerate(points[:10]):
        tags = schema_tags("adding", "probe", "gru", 0, "trial", "mse", "min", command,
                           sweep_id)
        tags.update({"mlflow.parentRunId": parent, "trial_id": str(i)})
        test = lstm_test + 0.05 + 0.01 * rng.uniform(-1, 1)
        v = trial_value(lr, "gru")
        s.run("probes", f"trial-{i}", tags,
              {"cell.name": "gru", "seed": "0", "optimizer.lr": repr(lr),
               "model.units": str(units), "task.length": "100", "hp/lr": repr(lr),
               "hp/units": str(units)},
              {"test_mse": test, "params_count": 3 * units * (units + 2)},
              {"val_loss": [v + 0.3, v]})
        pairs.append((test, lstm_test))
    expected["pairs"] = pairs
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
    # the copy runs share their seeds 0, 1, 2: compared seed by seed
    sig = read_csv(report / "tables" / "copy-paired.csv")
    assert [(x["row"], x["baseline"], x["points"]) for x in sig] == [
        ("gru", "lstm", "seed=0 | seed=1 | seed=2")]
    p = sps.ttest_rel(expected["acc"]["gru"], expected["acc"]["lstm"]).pvalue
    assert float(sig[0]["p_t"]) == pytest.approx(p) and p < 0.05
    assert sig[0]["significant"] == "true" and sig[0]["verdict"] == "better (significant)"


def test_unpaired_design_keeps_welch(store, tmp_path):
    s, expected = store
    out = tmp_path / "r"
    assert report_main(["--tracking-uri", s.uri, "--experiment", "probes", "--design",
                        "unpaired", "--out", str(out)]) == 0
    sig = read_csv(out / "tables" / "copy-significance.csv")
    p = sps.ttest_ind(expected["acc"]["gru"], expected["acc"]["lstm"], equal_var=False).pvalue
    assert float(sig[0]["p"]) == pytest.approx(p)
    assert not (out / "tables" / "copy-paired.csv").exists()
    assert "--design unpaired" in (out / "report.md").read_text()


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
        ("gru", "", "n/a (fewer than 3 values a side)"),
        ("rnn", "", "n/a (fewer than 3 values a side)")]


def test_sweeps_with_shared_points_are_compared_pair_by_pair(store, report):
    s, expected = store
    paired = read_csv(report / "tables" / "adding-sweep-trials-paired.csv")
    assert [x["row"] for x in paired] == ["gru"]  # rnn's sweep shares no point with lstm's
    row = paired[0]
    gru, lstm = zip(*expected["pairs"])
    t = sps.ttest_rel(gru, lstm)
    w = sps.wilcoxon([a - b for a, b in expected["pairs"]])
    assert int(row["pairs"]) == 10 and row["n_diff_positive"] == "10"
    assert float(row["diff_mean"]) == pytest.approx(sum(gru) / 10 - sum(lstm) / 10)
    assert float(row["p_t"]) == pytest.approx(t.pvalue, rel=1e-9)
    assert float(row["p_wilcoxon"]) == pytest.approx(w.pvalue, rel=1e-9)
    assert float(row["p_t_holm"]) == pytest.approx(t.pvalue, rel=1e-9)  # one test
    assert row["verdict"] == "worse (significant)"
    md = (report / "report.md").read_text()
    assert "Best-tuned comparison against lstm (Greff et al.'s protocol)" in md
    assert "across the search space" in md and "Not paired (fewer than 2 shared points): `rnn` (0 shared)" in md


def test_a_paired_report_on_unpaired_sweeps_says_why(store, tmp_path, capsys):
    s, _ = store
    out = tmp_path / "r"
    assert report_main(["--tracking-uri", s.uri, "--experiment", "probes", "--design",
                        "paired", "--filter", "tags.cell != 'gru'", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "`rnn` and `lstm` share 0 of their hyperparameter points" in err
    assert "same seed" in err and not out.exists()


def test_a_paired_test_across_task_settings_is_refused(tmp_path_factory, tmp_path, capsys):
    home = fast_dir(tmp_path_factory, "mixed")
    s = Store(home / "mlflow.db")
    for length in ("50", "100"):
        for cell, extra in (("lstm", 0.0), ("gru", 0.1)):
            for i, lr in enumerate((0.001, 0.003, 0.01)):
                tags = schema_tags("adding", "probe", cell, 0, "trial", "mse", "min",
                                   "rnnbench-tune", f"sweep-{cell}-{length}")
                s.run("mixed", f"t{i}", tags, {"cell.name": cell, "hp/lr": repr(lr),
                                              "task.length": length},
                      {"test_mse": lr + extra + float(length) / 1e4})
    out = tmp_path / "r"
    assert report_main(["--tracking-uri", s.uri, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "differ in task.length" in err and "--filter" in err and not out.exists()
    assert report_main(["--tracking-uri", s.uri, "--filter", "params.`task.length` = '50'",
                        "--out", str(out)]) == 0
    shutil.rmtree(home, ignore_errors=True)


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
    assert names[0] == "optimizer.lr" and float(imp[0]["main_effect_share"]) > 0.5
    assert set(names) == {"optimizer.lr", "model.units", "cell.name", "(interactions)"}
    # main effects plus what is left to interactions make the whole variance
    assert sum(float(r["main_effect_share"]) for r in imp) == pytest.approx(1.0)
    assert float(imp[-1]["main_effect_share"]) > 0  # not normalised away
    md = (report / "report.md").read_text()
    assert "not normalised" in md and "distinct hyperparameter points" in md
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


def test_mixed_code_versions_are_flagged_and_can_be_refused(tmp_path_factory, tmp_path,
                                                            capsys, monkeypatch):
    monkeypatch.setattr("rnnbench.provenance.git_commit", lambda: "c" * 40)  # this rnnbench
    home = fast_dir(tmp_path_factory, "commits")
    s = Store(home / "mlflow.db")
    commits = {0: "a" * 40, 1: "a" * 40, 2: "b" * 40 + "-dirty"}
    for cell in ("lstm", "gru"):
        for seed, commit in commits.items():
            tags = schema_tags("copy", "probe", cell, seed, "run", "accuracy", "max",
                               f"rnnbench cell={cell} seed={seed}", "multirun/x")
            tags["git_commit"] = commit
            s.run("mix", f"{cell}-{seed}", tags, {"cell.name": cell, "seed": str(seed)},
                  {"test_accuracy": 0.5 + seed / 10 + (cell == "gru") / 20})
    out = tmp_path / "r"
    assert report_main(["--tracking-uri", s.uri, "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "2 code versions" in printed.err and "from a tree with uncommitted" in printed.err
    md = (out / "report.md").read_text()
    assert "Warning: mixed code versions" in md and f"`{'b' * 40}-dirty` (2 runs)" in md
    runs = read_csv(out / "tables" / "runs.csv")
    assert {r["git_commit"] for r in runs} == set(commits.values())

    assert report_main(["--tracking-uri", s.uri, "--require-clean", "--out",
                        str(tmp_path / "clean")]) == 2
    err = capsys.readouterr().err
    assert "--require-clean" in err and f"{'b' * 40}-dirty: 2 runs: lstm-2 (" in err, err
    assert not (tmp_path / "clean").exists()
    # one clean commit passes, and the report says which
    assert report_main(["--tracking-uri", s.uri, "--require-clean", "--filter",
                        f"tags.git_commit = '{'a' * 40}'", "--out", str(out)]) == 0
    assert f"every run comes from commit `{'a' * 40}` (4 runs), a clean tree" in \
        (out / "report.md").read_text()
    from rnnbench import __version__  # the report records what made it

    assert f"# made by rnnbench {__version__}, commit {'c' * 40}\n" in \
        (out / "report.md").read_text()
    shutil.rmtree(home, ignore_errors=True)
