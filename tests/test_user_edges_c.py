"""Issue 28, part C: what users meet on long work and in its record.

- a trial goes by one number everywhere (console, MLflow run name, tags);
- every tag and metric name the code writes is a constant of ``tracking/schema.py``;
- a multirun says "job k of N" and the time left at the start of each job;
- TensorBoard logs are written while a run trains, not only after it ends;
- a Hydra-Optuna study is reported as a sweep, ranked by the metric it optimised.
"""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest

from helpers import FAST, ROOT, compose_tune
from rnnbench.cli.schema import register_configs

register_configs()

# ---- record names: only in tracking/schema.py ----------------------------------------

# calls that write a record, and the dicts of names they take
WRITERS = {"set_tag", "set_tags", "log_metric", "log_metrics", "start_run", "open_run",
           "open_parent", "close_run"}
NAME_DICTS = {"tags", "metrics"}
# MLflow's own system tags (``mlflow.*``) are set by conventions.py, as documented
EXEMPT = {"rnnbench/tracking/schema.py", "rnnbench/conventions.py"}


def _is_literal(node: ast.AST) -> bool:
    return isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant)
                                               and isinstance(node.value, str))


def literal_record_names(source: str) -> list[int]:
    """Line numbers where ``source`` writes a tag or metric under a literal name: a string
    key of a dict given to a writer (or assigned to ``tags``/``metrics``), a string
    subscript of ``tags``/``metrics``, or a string first argument of set_tag/log_metric."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        dicts: list[ast.Dict] = []
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if name in WRITERS:
                dicts += [a for a in node.args if isinstance(a, ast.Dict)]
                if name in ("set_tag", "log_metric") and node.args and _is_literal(node.args[0]):
                    lines.append(node.lineno)
            dicts += [k.value for k in node.keywords
                      if k.arg in NAME_DICTS and isinstance(k.value, ast.Dict)]
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Name) and t.id in NAME_DICTS and isinstance(node.value,
                                                                                 ast.Dict):
                    dicts.append(node.value)
                if (isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name)
                        and t.value.id in NAME_DICTS and _is_literal(t.slice)):
                    lines.append(node.lineno)
        lines += [k.lineno for d in dicts for k in d.keys if k is not None and _is_literal(k)]
    return sorted(set(lines))


def test_the_scan_finds_literal_tag_and_metric_names():
    bad = ('run.set_tags({"tuner": 1})\n'
           'tags = {Tags.TASK: 1, "gradient": 2}\n'
           'metrics["epoch_time_s"] = 3\n'
           'run.log_metric(f"best_{x}", 1)\n'
           'ctx = RunContext(tags={"tuner_id": 1})\n')
    assert literal_record_names(bad) == [1, 2, 3, 4, 5]
    good = 'run.set_tags({Tags.TASK: 1})\nmetrics[Metrics.EPOCH_TIME_S] = 3\nx = {"a": 1}\n'
    assert literal_record_names(good) == []


def test_no_tag_or_metric_is_written_under_a_name_outside_the_schema():
    found = []
    for path in sorted((ROOT / "rnnbench").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel in EXEMPT:
            continue
        text = path.read_text()
        found += [f"{rel}:{n}: {text.splitlines()[n - 1].strip()}"
                  for n in literal_record_names(text)]
    assert not found, "names to move into rnnbench/tracking/schema.py:\n" + "\n".join(found)


def test_every_schema_tag_and_metric_is_listed_in_record_md():
    from rnnbench.tracking import schema

    doc = (ROOT / "docs" / "record.md").read_text()
    missing = []
    for group in (schema.Tags, schema.EnvTags, schema.SweepTags, schema.Metrics,
                  schema.SweepMetrics):
        for key, value in vars(group).items():
            if key.isupper() and isinstance(value, str) and value not in doc:
                missing.append(f"{group.__name__}.{key} = {value!r}")
    assert not missing, missing


# ---- one trial numbering -------------------------------------------------------------

@pytest.mark.slow
def test_a_trial_has_one_number_on_the_console_its_run_name_and_tags(tmp_path, monkeypatch,
                                                                     capsys):
    """keras-tuner's ids are "00", "01", ...; the console, the run name, the tags and
    the sweep's best trial all say 1, 2, ... (no training: the run is replaced)."""
    import mlflow

    import rnnbench.train as train
    from rnnbench.tracking import SweepTags
    from rnnbench.tuning.app import run_sweep
    from rnnbench.tuning.tuner import trial_number

    seen = []
    scores = iter([0.5, 0.2, 0.9])

    def fake_run(cfg, ctx):
        seen.append(ctx)
        return train.RunResult(None, "FINISHED", history={"val_loss": [next(scores)]})

    monkeypatch.setattr(train, "run", fake_run)
    overrides = [*FAST, f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
                 f"tuner.directory={tmp_path / 'tuning'}", "tuner.max_trials=3"]
    result = run_sweep(compose_tune(overrides), overrides)
    out = capsys.readouterr().out

    assert trial_number("00") == 1 and trial_number("11") == 12
    ids = [c.tags[SweepTags.TRIAL_ID] for c in seen]  # "0".."2" here; "00".. for 10+
    assert [int(i) for i in ids] == [0, 1, 2]
    assert [c.run_name for c in seen] == ["trial-1", "trial-2", "trial-3"]
    assert [c.tags[SweepTags.TRIAL_NUMBER] for c in seen] == [1, 2, 3]
    assert "trial 2 of 3 finished" in out and "(trial 2)" in out, out
    assert result.best["trial"] == 2 and result.best["trial_id"] == ids[1]
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (parent,) = client.search_runs(
        [e.experiment_id for e in client.search_experiments()])
    assert parent.data.tags[SweepTags.BEST_TRIAL_NUMBER] == "2"
    steps = client.get_metric_history(parent.info.run_id, "trial_val_loss")
    assert sorted(m.step for m in steps) == [1, 2, 3]
    assert math.isclose(min(m.value for m in steps), 0.2)


# ---- multirun progress ---------------------------------------------------------------

def test_each_job_of_a_multirun_says_k_of_n_and_the_time_left(tmp_path, monkeypatch, capsys):
    """The Hydra callback's hooks as the basic launcher calls them, in one process: N from
    the basic sweeper's job list, the time left from the mean of the finished jobs."""
    from omegaconf import OmegaConf

    from rnnbench import jobs

    now = [1000.0]
    monkeypatch.setattr(jobs.time, "time", lambda: now[0])
    monkeypatch.setattr(jobs, "write_record", lambda failure=None: None)
    monkeypatch.setattr(jobs, "_multirun", {})
    base = {"hydra": {"sweeper": {"_target_": jobs.BASIC_SWEEPER, "params": None},
                      "overrides": {"task": ["seed=0,1,2,3", "cell=lstm"]},
                      "sweep": {"dir": str(tmp_path)}, "job": {"num": 0}}}
    cb = jobs.MultirunSummary()
    cb.on_multirun_start(OmegaConf.create(base))
    done = type("R", (), {"status": None, "_return_value": None})()
    lines = []
    for num, seconds in enumerate([40.0, 60.0, 10.0]):
        cfg = OmegaConf.merge(base, {"hydra": {"job": {"num": num}}})
        cb.on_job_start(cfg)
        lines.append(capsys.readouterr().out.strip())
        now[0] += seconds
        cb.on_job_end(cfg, done)
    assert lines[0] == "rnnbench: job 1 of 4 (time left: known after the first job ends)"
    # job 1 took 40 s: 3 jobs left of 40 s each
    assert lines[1] == "rnnbench: job 2 of 4, about 2m00s left (1 done, 40s per job)"
    # jobs took 40 s and 60 s: 2 jobs left of 50 s each
    assert lines[2] == "rnnbench: job 3 of 4, about 1m40s left (2 done, 50s per job)"


def test_an_optuna_study_counts_its_trials_and_a_single_run_prints_no_progress():
    from omegaconf import OmegaConf

    from rnnbench import jobs

    cfg = OmegaConf.create({"hydra": {"sweeper": {"_target_": "hydra_plugins.x.OptunaSweeper",
                                                  "n_trials": 12},
                                      "overrides": {"task": []}, "job": {"num": 0}}})
    assert jobs.planned_total(cfg) == 12
    assert jobs.duration(3725) == "1h02m" and jobs.duration(65) == "1m05s"
    saved = dict(jobs._multirun)
    jobs._multirun.clear()
    try:
        assert jobs.progress_line(cfg) is None  # no multirun in this process
    finally:
        jobs._multirun.update(saved)


# ---- live TensorBoard ----------------------------------------------------------------

@pytest.mark.slow
def test_tensorboard_shows_the_first_epoch_while_the_run_still_trains(tmp_path, monkeypatch):
    """A real (smoke-sized) run with ``tracking.tensorboard=true``: a callback after epoch 1
    reads the run's TensorBoard folder as ``tensorboard --logdir`` would."""
    import keras
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import rnnbench.callbacks as callbacks
    from helpers import compose_run
    from rnnbench.train import RunContext, run

    seen: dict[str, dict[str, list[int]]] = {}

    class Probe(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch != 0:
                return
            for split in ("train", "validation"):
                (folder,) = (tmp_path / "tensorboard").glob(f"co2/*/{split}")
                acc = EventAccumulator(str(folder), size_guidance={"tensors": 0})
                acc.Reload()
                seen[split] = {t: [e.step for e in acc.Tensors(t)]
                               for t in acc.Tags()["tensors"]}

    monkeypatch.setattr(callbacks, "diagnostics_callbacks", lambda *a, **k: [Probe()])
    cfg = compose_run(["debug=smoke", "train.epochs=2", "hardware.xla=off",
                       "tracking.log_model=false", "tracking.tensorboard=true",
                       f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"])
    result = run(cfg, RunContext(command="test"))
    assert result.status == "FINISHED"
    assert seen["train"].get("epoch_loss") == [1], seen  # epoch 1 only: still training
    assert seen["validation"].get("epoch_loss") == [1], seen
    assert "epoch_mae" in seen["validation"], seen


# ---- docs that disagreed with the code -----------------------------------------------

def _documented_refusals() -> dict[str, str]:
    rows = {}
    for line in (ROOT / "docs" / "hardware.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0].startswith("`hardware=multi_gpu"):
            rows[cells[0]] = cells[1].strip("`").split("…")[0].strip()
    return rows


@pytest.mark.parametrize("row, overrides", [
    ("`hardware=multi_gpu` without a GPU", ["hardware=multi_gpu"]),
    ("`hardware=multi_gpu hardware.device=cpu` (or `hardware.fallback=cpu` without a GPU) "
     "with one CPU device", ["hardware=multi_gpu", "hardware.device=cpu"]),
])
def test_hardware_md_quotes_the_multi_gpu_refusals_as_they_are(row, overrides):
    """In-process, on a machine without a GPU (the case the rows describe)."""
    import tensorflow as tf

    from helpers import compose_run
    from rnnbench.errors import HardwareError
    from rnnbench.hardware.devices import setup

    if tf.config.list_physical_devices("GPU") or len(tf.config.list_logical_devices("CPU")) > 1:
        pytest.skip("the rows describe a machine with no GPU and one CPU device")
    expected = _documented_refusals()[row]
    cfg = compose_run(overrides)
    with pytest.raises(HardwareError) as info:
        setup(cfg.hardware, "tensorflow", 0)
    assert str(info.value).startswith(expected), (str(info.value), expected)


def test_the_docs_say_where_a_sweeps_logs_go():
    """``rnnbench-tune`` writes its Hydra folders under outputs/tune and multirun/tune."""
    import yaml

    hydra = yaml.safe_load((ROOT / "conf" / "tune.yaml").read_text())["hydra"]
    run_dir = hydra["run"]["dir"].split("/${")[0]
    sweep_dir = hydra["sweep"]["dir"].split("/${")[0]
    assert (run_dir, sweep_dir) == ("outputs/tune", "multirun/tune")
    for doc in ("README.md", "docs/ecosystem.md"):
        text = (ROOT / doc).read_text()
        assert f"`{run_dir}/<date>/<time>/" in text and f"`{sweep_dir}/<date>/<time>/" in text, doc
    assert f"{hydra['job']['name']}.log" in (ROOT / "docs" / "ecosystem.md").read_text()


# ---- a Hydra-Optuna study is a sweep in the report ------------------------------------

class _NoHistory:
    """The report's History without a store: no run logged per-epoch values."""

    def metric(self, run_id, key):
        return []

    def gradient_flow(self, run_id):
        return None


def _optuna_study(n: int = 12) -> list:
    """The jobs of ``rnnbench -m hydra/sweeper=optuna objective.metric=mae`` as the report
    reads them: trials without a parent, tagged with the study's objective; test_mse
    ranks them the other way round from final_val_mae."""
    import random

    from rnnbench.report.collect import RunRecord

    rng = random.Random(0)
    runs = []
    for job in range(n):
        lr = 10 ** rng.uniform(-4, -1)
        units = rng.choice([8, 16, 32, 64])
        mae = abs(math.log10(lr) + 2.5) + 0.01 * units / 64  # lr decides it
        runs.append(RunRecord(
            run_id=f"{job:032x}", name="co2-lstm-s0", experiment="co2", status="FINISHED",
            start_ms=1_790_000_000_000 + 1000 * job, end_ms=None,
            tags={"task": "co2", "task_family": "timeseries", "cell": "lstm", "seed": "0",
                  "run_kind": "trial", "primary_metric": "mse", "primary_mode": "min",
                  "objective": "final_val_mae", "objective_direction": "minimize",
                  "sweeper_direction": "minimize", "sweep_id": "/w/multirun/x",
                  "sweep_job": str(job)},
            params={"cell.name": "lstm", "seed": "0", "optimizer.lr": repr(lr),
                    "model.units": str(units)},
            metrics={"final_val_mae": mae, "test_mse": 10.0 - mae}))
    return runs


def test_a_hydra_optuna_study_is_ranked_by_the_metric_it_optimised():
    from rnnbench.report.analysis import analyse
    from rnnbench.report.collect import Selection
    from rnnbench.report.content import ReportOptions
    from rnnbench.report.sweeps import study_objective, trial_objective

    runs = _optuna_study()
    selection = Selection(runs, "the study")
    assert trial_objective(runs, selection) == ("final_val_mae", "min")
    assert study_objective([]) is None
    (section,) = analyse(selection, ReportOptions(), _NoHistory()).sections
    assert section.kind == "trial"
    assert "`final_val_mae` (lowest first)" in section.selection_note
    # the best quarter by final_val_mae, not by test_mse
    (row,) = section.rows
    n = len(row.used)
    assert 0 < n < len(runs)
    best = sorted(runs, key=lambda r: r.metrics["final_val_mae"])[:n]
    assert sorted(r.run_id for r in row.used) == sorted(r.run_id for r in best)
    imp = section.importance
    assert imp.objective == "final_val_mae" and imp.n_trials == 12
    assert imp.values and imp.values[0][0] == "optimizer.lr", imp.values


def test_a_study_has_an_optimisation_history_figure():
    from rnnbench.report.importance import history_figure
    from rnnbench.report.sweeps import history_points

    runs = _optuna_study(6)
    runs[2].status = "FAILED"
    points = history_points(runs, ("final_val_mae", "min"), _NoHistory())
    values = {r.tags["sweep_job"]: r.metrics["final_val_mae"] for r in runs}
    assert [k for k, _, _ in points] == [1, 2, 4, 5, 6]  # job k+1; the FAILED one left out
    assert [v for _, v, _ in points] == [values[str(k - 1)] for k, _, _ in points]
    bests = [b for _, _, b in points]
    assert bests == [min(v for _, v, _ in points[:i + 1]) for i in range(len(points))]
    png = history_figure(points, "co2 (trials)", "final_val_mae", "min")
    assert png.startswith(b"\x89PNG") and history_figure([], "t", "m", "min") is None


@pytest.mark.slow
def test_a_job_of_an_optimising_hydra_sweeper_is_recorded_as_a_trial(tmp_path, monkeypatch):
    """What ``train.run`` tags a job of ``hydra/sweeper=optuna`` with (the run is stopped
    at the point it opens its MLflow run)."""
    import rnnbench.tracking as tracking
    from helpers import compose_run
    from rnnbench.train import RunContext, run

    seen = {}

    class Opened(Exception):
        pass

    def start_run(experiment, name, tags, parent=None):
        seen.update(tags)
        raise Opened

    monkeypatch.setattr(tracking, "start_run", start_run)
    cfg = compose_run(["debug=smoke", "hardware.xla=off", "objective.metric=mae",
                       f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"])
    with pytest.raises(Opened):
        run(cfg, RunContext(sweep_id="/w/multirun/x", sweeper_direction="minimize"))
    assert seen["run_kind"] == "trial" and seen["sweeper_direction"] == "minimize"
    assert seen["objective"] == "final_val_mae"
    seen.clear()
    with pytest.raises(Opened):
        run(cfg, RunContext(sweep_id="/w/multirun/x"))  # the basic sweeper: plain runs
    assert seen["run_kind"] == "run" and "sweeper_direction" not in seen


def test_the_report_of_a_study_draws_its_optimisation_history():
    """The report itself (not only the figure function): a study's section has the
    optimisation-history figure, of the objective the study optimised."""
    from rnnbench.report import render
    from rnnbench.report.analysis import analyse
    from rnnbench.report.collect import Selection
    from rnnbench.report.content import ReportOptions

    runs = _optuna_study(6)
    result = analyse(Selection(runs, "the study"), ReportOptions(), _NoHistory())
    (section,) = result.sections
    assert [k for k, _, _ in section.history] == [1, 2, 3, 4, 5, 6]
    doc = render.build(result, "a study", "rnnbench-report")
    (figure,) = [f for f in doc.figures if "history" in f.name]
    assert figure.png.startswith(b"\x89PNG") and "final_val_mae" in figure.caption
