"""What a sweep costs beyond training, Hyperband against random search, and how many
trials per hour the Greff study's budget gets on this machine.

    python benchmarks/tuning.py [--part overhead|compare|throughput|both] [--trials N]
                                [--max-epochs E] [--steps-per-epoch S] [--seed S]
                                [--task T] [--workdir DIR]

Part 1, overhead: a random-search sweep over the default search space (LSTM, 20 to 200
units) on the smoke budget (``debug=smoke``: 2 epochs of 5 steps, co2 capped at 256
windows; XLA, diagnostics and model saving as a smoke run has them). Every trial's wall time is split, exclusively, into: building
the model, ``model.compile``, the first epoch's extra time (graph tracing and XLA
compilation: epoch 1 minus the mean of the later epochs), training, evaluation on the
test split, data preparation, the gradient diagnostics' callbacks, the learning-curve
plots, MLflow tracking (every call into ``rnnbench.tracking``, also those made from
callbacks during training), and the rest (seeding, hardware set-up, the oracle).
Overhead = build + compile + trace/XLA + tracking, as a fraction of the trial.

Part 2, compare: Hyperband (``max_epochs=E``, factor 3, warm starts) and random search
(``max_epochs=E``) on co2 at an equal number of training epochs: random search gets as
many trials as Hyperband's schedule has epochs, divided by E. Early stopping is off
(``train.patience`` large) so that every trial trains the epochs it was given. Reported:
the best validation loss, that trial's test MSE (original units), epochs trained, and
wall time.

Part 3, throughput (not part of ``both``): the Greff study's budget
(``experiment=greff``: 600 updates at most per trial, early stopping, diagnostics, model
saved) on ``--task`` (default chorales), ``--trials`` trials for each of two variants
(peephole, np), run through the real ``rnnbench-tune`` command in two layouts measured
in the same sitting: one process that runs both sweeps with TensorFlow's default thread
pools (every core), and two processes side by side, one sweep each, with one thread
each (``hardware.threads=1``). Reported: trials per hour of each layout (wall clock,
imports and start-up included), their ratio, and the load average around each.

Parts 1 and 2 run the real ``rnnbench-tune`` code path (``run_sweep``) in this process, with
their own MLflow store and search state under ``--workdir`` (a fresh temporary folder
by default).
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=["overhead", "compare", "throughput", "both"],
                   default="both")
    p.add_argument("--task", default="chorales", help="throughput: the Greff study's task")
    p.add_argument("--trials", type=int, default=4, help="trials of the overhead sweep")
    p.add_argument("--max-epochs", type=int, default=9, help="compare: epochs per trial")
    p.add_argument("--steps-per-epoch", type=int, default=10, help="compare: steps per epoch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=None)
    return p.parse_args(argv)


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from rnnbench.cli.schema import register_configs
    from rnnbench.config import to_object

    register_configs()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return to_object(hydra_compose("tune", overrides=overrides))


class PhaseClock:
    """Attributes wall time to the innermost phase being timed (exclusive times)."""

    def __init__(self) -> None:
        self.stack = ["other"]
        self.totals: dict[str, float] = {}
        self.last = time.perf_counter()

    def _tick(self) -> None:
        now = time.perf_counter()
        self.totals[self.stack[-1]] = self.totals.get(self.stack[-1], 0.0) + now - self.last
        self.last = now

    def wrap(self, owner, name: str, phase: str) -> None:
        fn = getattr(owner, name)
        clock = self

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            clock._tick()
            clock.stack.append(phase)
            try:
                return fn(*args, **kwargs)
            finally:
                clock._tick()
                clock.stack.pop()

        setattr(owner, name, timed)

    def take(self) -> dict[str, float]:
        self._tick()
        out, self.totals = self.totals, {}
        return out


def instrument(clock: PhaseClock) -> None:
    import keras

    from rnnbench import model, tracking
    from rnnbench.tasks import timeseries

    from rnnbench import callbacks
    from rnnbench.diagnostics import DiagnosticsCallback

    clock.wrap(model, "build_model", "build")
    clock.wrap(callbacks, "log_learning_curves", "plots")
    for name in ("on_train_begin", "on_epoch_begin", "on_epoch_end", "on_train_end"):
        clock.wrap(DiagnosticsCallback, name, "diagnostics")
    clock.wrap(keras.Model, "compile", "compile")
    clock.wrap(keras.Model, "fit", "train")
    clock.wrap(timeseries.SeriesTask, "evaluate", "evaluate")
    clock.wrap(timeseries.SeriesTask, "prepare", "data")
    for name in ("log_params", "log_metrics", "set_tags", "log_artifact", "log_dataset", "end"):
        clock.wrap(tracking.Run, name, "tracking")
    # each where it is defined, which is where the package's own modules call it
    from rnnbench.tracking import reading, runs, store

    for owner, names in ((store, ("configure", "ensure_experiment", "_create_run")),
                         (reading, ("run_status", "search_runs", "close_run", "get_run",
                                    "child_runs", "metric_history")),
                         (runs, ("reopen_run", "open_run"))):
        for name in names:
            clock.wrap(owner, name, "tracking")
            if not name.startswith("_"):  # and the facade, which the rest of rnnbench calls
                setattr(tracking, name, getattr(owner, name))


def overhead(args, workdir: Path) -> None:
    from rnnbench import hardware

    hardware.select_backend("tensorflow")
    from rnnbench import tracking
    from rnnbench.tuning import tuner as tuner_module
    from rnnbench.tuning.app import run_sweep

    clock = PhaseClock()
    instrument(clock)
    per_trial: list[dict[str, float]] = []
    run_trial = tuner_module.SweepTuner.run_trial

    def timed_trial(self, trial, *a, **k):
        clock.take()
        t0 = time.perf_counter()
        try:
            return run_trial(self, trial, *a, **k)
        finally:
            phases = clock.take()
            phases["trial"] = time.perf_counter() - t0
            phases["trial_id"] = trial.trial_id
            per_trial.append(phases)

    tuner_module.SweepTuner.run_trial = timed_trial
    folder = workdir / "overhead"
    folder.mkdir(parents=True, exist_ok=True)
    overrides = ["debug=smoke", f"tuner.max_trials={args.trials}", "tuner.max_epochs=2",
                 f"seed={args.seed}", f"tracking.uri=sqlite:///{folder / 'mlflow.db'}",
                 f"tuner.directory={folder / 'tuning'}", "train.verbose=0"]
    cfg = compose(overrides)
    run_sweep(cfg, overrides)
    tuner_module.SweepTuner.run_trial = run_trial

    # the first epoch's extra time (tracing, XLA) from the per-epoch times MLflow holds
    runs = {r.data.tags["trial_id"]: r for r in tracking.search_runs(
        ["co2"], "tags.run_kind = 'trial'")}
    print()
    print(f"Per-trial overhead on the smoke budget ({args.trials} trials, random search, "
          f"{cfg.hardware.name}, xla={cfg.hardware.xla}, diagnostics "
          f"{'on' if cfg.diagnostics.enabled else 'off'}, log_model={cfg.tracking.log_model})")
    cols = ["build", "compile", "trace/XLA", "train", "diagnostics", "evaluate", "data",
            "plots", "tracking", "other"]
    print(f"{'trial':>5} {'total s':>8} " + " ".join(f"{c:>11}" for c in cols)
          + f" {'overhead':>9}")
    fractions = []
    for phases in per_trial:
        run = runs.get(phases["trial_id"])
        epochs = [v for _, v in tracking.metric_history(run.info.run_id, "epoch_time_s")] \
            if run else []
        first_extra = 0.0
        if len(epochs) >= 2:
            first_extra = max(0.0, epochs[0] - statistics.mean(epochs[1:]))
        first_extra = min(first_extra, phases.get("train", 0.0))
        row = {
            "build": phases.get("build", 0.0), "compile": phases.get("compile", 0.0),
            "trace/XLA": first_extra, "train": phases.get("train", 0.0) - first_extra,
            "diagnostics": phases.get("diagnostics", 0.0),
            "evaluate": phases.get("evaluate", 0.0), "data": phases.get("data", 0.0),
            "plots": phases.get("plots", 0.0),
            "tracking": phases.get("tracking", 0.0), "other": phases.get("other", 0.0),
        }
        total = phases["trial"]
        over = (row["build"] + row["compile"] + row["trace/XLA"] + row["tracking"]) / total
        fractions.append(over)
        print(f"{int(phases['trial_id']) + 1:>5} {total:8.2f} "
              + " ".join(f"{row[c] / total:11.1%}" for c in cols) + f" {over:9.1%}")
    print(f"mean overhead (build + compile + trace/XLA + tracking): "
          f"{statistics.mean(fractions):.1%} of trial time")


def compare(args, workdir: Path) -> None:
    from rnnbench import hardware

    hardware.select_backend("tensorflow")
    from rnnbench import tracking
    from rnnbench.tuning.app import run_sweep
    from rnnbench.tuning.plan import SweepPlan
    from rnnbench.tuning.tuner import make_oracle, planned_trials

    E = args.max_epochs
    base = ["hardware.xla=off", "diagnostics.enabled=false", "tracking.log_model=false",
            "train.verbose=0", f"train.steps_per_epoch={args.steps_per_epoch}",
            "train.patience=1000", f"tuner.max_epochs={E}", f"seed={args.seed}"]
    hb_cfg = compose([*base, "tuner=hyperband"])
    hb_oracle = make_oracle(SweepPlan.create(hb_cfg))
    n_hb = planned_trials(SweepPlan.create(hb_cfg), hb_oracle)
    results = {}
    for name in ("hyperband", "random"):
        folder = workdir / name
        folder.mkdir(parents=True, exist_ok=True)
        extra = ["tuner=hyperband"] if name == "hyperband" else [
            "tuner=random", f"tuner.max_trials={results['hyperband']['budget'] // E}"]
        overrides = [*base, *extra, f"tracking.uri=sqlite:///{folder / 'mlflow.db'}",
                     f"tuner.directory={folder / 'tuning'}"]
        t0 = time.perf_counter()
        result = run_sweep(compose(overrides), overrides)
        wall = time.perf_counter() - t0
        trained, budget = 0, 0
        for t in result.trials:
            hp = t["hyperparameters"]
            budget += int(hp.get("tuner/epochs", E)) - int(hp.get("tuner/initial_epoch", 0))
        for run in tracking.search_runs(["co2"], "tags.run_kind = 'trial'"):
            trained += int(run.data.metrics.get("epochs_run", 0))
        best = result.best
        test = None
        if best and best.get("run_id"):
            test = tracking.get_run(best["run_id"]).data.metrics.get("test_mse")
        results[name] = {"trials": len(result.trials), "budget": budget, "trained": trained,
                         "best": best["score"] if best else math.nan,
                         "test_mse": test if test is not None else math.nan, "wall": wall}
    print()
    print(f"Hyperband vs random search on co2 at equal epochs (max_epochs={E}, "
          f"{args.steps_per_epoch} steps per epoch, Hyperband schedule: {n_hb} trials, "
          f"seed {args.seed})")
    print(f"{'tuner':>10} {'trials':>6} {'epochs':>7} {'best val_loss':>14} "
          f"{'its test_mse':>13} {'wall s':>8}")
    for name, r in results.items():
        print(f"{name:>10} {r['trials']:>6} {r['trained']:>7} {r['best']:>14.5f} "
              f"{r['test_mse']:>13.5f} {r['wall']:>8.1f}")


def _tune(args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.Popen(
        [sys.executable, "-c", "from rnnbench.cli import tune_main; tune_main()", *args],
        cwd=cwd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def _finished_trials(folder: Path) -> int:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    exps = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(exps, "tags.run_kind = 'trial'", max_results=10000)
    return sum(1 for r in runs if r.info.status == "FINISHED")


def throughput(args, workdir: Path) -> None:
    cells = ("peephole", "np")
    common = ["-m", "experiment=greff", f"task={args.task}", f"tuner.max_trials={args.trials}",
              f"seed={args.seed}", "train.verbose=0"]
    layouts = {
        "1 process, default threads": [[f"cell={','.join(cells)}", "hardware.threads=0"]],
        "2 processes x 1 thread": [[f"cell={c}", "hardware.threads=1"] for c in cells],
    }
    results = {}
    for name, jobs in layouts.items():
        folder = workdir / name.replace(" ", "_").replace(",", "")
        folder.mkdir(parents=True, exist_ok=True)
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        procs = [_tune([*common, *extra, f"tuner.directory={folder / 'tuning'}",
                        f"hydra.sweep.dir={folder / 'multirun' / str(i)}"],
                       folder, folder / f"job{i}.log") for i, extra in enumerate(jobs)]
        codes = [p.wait() for p in procs]
        wall = time.perf_counter() - t0
        if any(codes):
            raise SystemExit(f"{name}: rnnbench-tune exited {codes}; see {folder}/job*.log")
        done = _finished_trials(folder)
        results[name] = (done, wall, load0, os.getloadavg()[0])
    print()
    print(f"Trials per hour of the Greff budget on {args.task} ({args.trials} trials each of "
          f"{', '.join(cells)}; {os.cpu_count()} CPUs)")
    print(f"{'layout':>28} {'trials':>6} {'wall s':>8} {'trials/hour':>12} {'load before/after':>18}")
    rates = {}
    for name, (done, wall, l0, l1) in results.items():
        rates[name] = done / wall * 3600
        print(f"{name:>28} {done:>6} {wall:>8.1f} {rates[name]:>12.1f} {l0:>8.2f}/{l1:<8.2f}")
    a, b = rates.values()
    print(f"ratio (2 processes x 1 thread) / (1 process): {b / a:.2f}")


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from rnnbench.cli.startup import quiet_tensorflow

    quiet_tensorflow()  # without TensorFlow's start-up lines
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="rnnbench-tuning-bench-"))
    print(f"work folder: {workdir}")
    if args.part in ("overhead", "both"):
        overhead(args, workdir)
    if args.part in ("compare", "both"):
        compare(args, workdir)
    if args.part == "throughput":
        throughput(args, workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
