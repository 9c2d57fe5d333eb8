"""One training run: seed → data → model → fit → test → MLflow record.

Everything that can be refused (config, data files, the tracking store) is checked
before the MLflow run opens, so a bad input leaves nothing half-done in the store.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

from omegaconf import OmegaConf

from rnnbench import conventions, hardware, interrupt, objective, tracking
from rnnbench.config import flatten
from rnnbench.errors import HardwareError, RunFailed
from rnnbench.provenance import config_hash, git_commit, version_tags
from rnnbench.tracking import Artifacts, EnvTags, Metrics, RunKind, Tags


@dataclass
class RunContext:
    """Where a run was started from: the Hydra overrides and multirun membership."""

    overrides: list[str] = field(default_factory=list)
    sweep_id: str | None = None
    command: str = "rnnbench"
    parent_run_id: str | None = None
    run_kind: str = RunKind.RUN
    # set by sweeps (rnnbench.tuning) and multiruns: extra tags and params, the run's
    # name, and a warm start (weights file, first epoch) / where to save the weights
    tags: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    run_name: str | None = None
    initial_epoch: int = 0
    init_weights: str | None = None
    save_weights: str | None = None
    # the running Hydra sweeper's direction (minimize/maximize), checked against the objective
    sweeper_direction: str | None = None


@dataclass
class RunResult:
    run_id: str | None
    status: str
    test_metrics: dict[str, float] = field(default_factory=dict)
    baselines: dict[str, float] = field(default_factory=dict)
    skipped: bool = False
    message: str = ""
    history: dict[str, list[float]] = field(default_factory=dict)  # per-epoch Keras logs
    objective: float = math.nan  # the number a Hydra sweeper gets (rnnbench.objective)


@contextmanager
def out_of_memory(cfg: Any, doing: str) -> Iterator[None]:
    """An allocation that fails (host or device memory) becomes a HardwareError that
    names the sizes to lower, instead of a TensorFlow traceback."""
    try:
        yield
    except Exception as exc:
        text = str(exc)[:2000].lower()
        if not (isinstance(exc, MemoryError) or type(exc).__name__ in (
                "ResourceExhaustedError", "OutOfMemoryError") or "out of memory" in text
                or "oom when allocating" in text):
            raise
        raise HardwareError(
            f"out of memory while {doing} the model (model.units={cfg.model.units}, "
            f"model.layers={cfg.model.layers}, train.batch_size={cfg.train.batch_size}, "
            f"hardware={cfg.hardware.name}): {type(exc).__name__}. Lower model.units, "
            f"model.layers or train.batch_size, or run on a device with more memory."
        ) from None


def data_extremes(data: Any, max_batches: int = 200) -> tuple[int, float]:
    """``(non-finite values, largest magnitude)`` of the training inputs and targets (and
    sample weights: a batch is ``(x, y)`` or ``(x, y, w)``)."""
    import numpy as np

    bad, top = 0, 0.0
    for batch in data.train.take(max_batches):
        for part in (batch if isinstance(batch, (tuple, list)) else (batch,)):
            for arr in (part if isinstance(part, (tuple, list)) else (part,)):
                a = np.asarray(arr)
                if not np.issubdtype(a.dtype, np.number):
                    continue
                a = a.astype("float64")
                finite = np.isfinite(a)
                bad += int(a.size - finite.sum())
                if finite.any():
                    top = max(top, float(np.abs(a[finite]).max()))
    return bad, top


def _refuse_a_known_divergence(experiment: str, chash: str, ctx: RunContext) -> None:
    """A multirun run again (a resume, more seeds) would repeat a run that FAILED on a
    non-finite loss or gradient: the same config and seed fail the same way, and a
    second try that happened to pass would keep only the seeds that survived. The job
    fails again at once, naming the run; ``tracking.retry_failed=true`` runs it anyway."""
    diverged = [r for r in tracking.find_by_config(experiment, chash, "FAILED")
                if r.data.tags.get(Tags.RUN_KIND, RunKind.RUN) == ctx.run_kind
                and r.data.tags.get(Tags.FAILURE_WHAT)]
    if diverged:
        run = diverged[-1]
        tracking.link_to_sweep(run.info.run_id, ctx.sweep_id)
        raise RunFailed(
            f"run {run.info.run_id} FAILED with this exact config before "
            f"({run.data.tags.get(Tags.FAILURE_REASON, 'a non-finite value')}); not run "
            "again: the same seed diverges the same way. tracking.retry_failed=true runs "
            "it again.")


def nonfinite_advice(cfg: Any, data: Any) -> str:
    """What to change after a NaN: the data when it holds non-finite or extreme values,
    else the optimizer."""
    bad, top = data_extremes(data)
    optimizer = (f"a smaller optimizer.lr (now {cfg.optimizer.lr:g}) or optimizer.clipnorm "
                 f"(now {cfg.optimizer.clipnorm})")
    if bad or top > 1e4:
        found = (f"{bad} non-finite value(s)" if bad else "") + (" and " if bad and top > 1e4
                                                                  else "")
        found += f"values as large as {top:.3g}" if top > 1e4 else ""
        return (f"The training data holds {found}: fix or scale the data first (e.g. "
                f"normalisation in the task config, or clean the input file); a smaller "
                f"learning rate will not cure it. Then try {optimizer} if it still fails.")
    return f"The data looks sane (largest value {top:.3g}); try {optimizer}."


def run(cfg: Any, ctx: RunContext) -> RunResult:
    """Train and evaluate ``cfg`` (a :class:`rnnbench.config.RunConfig`), logging to MLflow."""
    hw = hardware.setup(cfg.hardware, cfg.backend.name, cfg.seed)
    if ctx.sweeper_direction and ctx.run_kind == RunKind.RUN:  # a Hydra study's (Optuna) trial
        ctx = replace(ctx, run_kind=RunKind.TRIAL, tags={
            Tags.SWEEPER_DIRECTION: ctx.sweeper_direction, **ctx.tags})

    import keras

    from rnnbench import callbacks
    from rnnbench.model import (build_model, check_compatible, describe_model,
                                make_optimizer, sizing_params)
    from rnnbench.tasks import get_task

    task = get_task(cfg.task)
    check_compatible(cfg, task)
    experiment = cfg.tracking.experiment or task.name
    tracking.configure(cfg.tracking.uri, cfg.tracking.timeout_s)
    chash = config_hash(cfg)
    if ctx.sweep_id and cfg.tracking.skip_finished:
        done = [r for r in tracking.find_by_config(experiment, chash)
                if r.data.tags.get(Tags.RUN_KIND, RunKind.RUN) == ctx.run_kind]
        if done:
            run_id = done[-1].info.run_id
            tracking.link_to_sweep(run_id, ctx.sweep_id)
            msg = f"skipped: this exact config already FINISHED as run {run_id}"
            print(msg, flush=True)
            goal = objective.resolve(cfg.objective, task, None, ctx.sweeper_direction)
            return RunResult(run_id, "FINISHED", skipped=True, message=msg,
                             test_metrics={k.removeprefix(Metrics.TEST_PREFIX): v
                                           for k, v in done[-1].data.metrics.items()
                                           if k.startswith(Metrics.TEST_PREFIX)},
                             objective=objective.value_of(goal, done[-1].data.metrics))
        if not cfg.tracking.retry_failed:
            _refuse_a_known_divergence(experiment, chash, ctx)

    data = task.prepare(cfg.train.batch_size, cfg.seed)
    with out_of_memory(cfg, "building"), hw.scope():
        model = build_model(cfg, task, data)
        model.compile(optimizer=make_optimizer(cfg.optimizer, hw.lr_scale), loss=task.loss(),
                      metrics=task.compile_metrics(), jit_compile=hw.jit_compile)
        if ctx.init_weights:  # warm start: weights and optimizer state of an earlier run
            model.optimizer.build(model.trainable_variables)
            model.load_weights(ctx.init_weights)
    what = describe_model(model)
    goal = objective.resolve(cfg.objective, task, lambda: task.evaluate(model, data,
                                                                         cfg.objective.split),
                             ctx.sweeper_direction)

    commit = git_commit()
    tags = {
        Tags.TASK: task.name, Tags.TASK_FAMILY: task.family, Tags.CELL: cfg.cell.name,
        Tags.IMPL: what["impl"], EnvTags.CUDNN_ELIGIBLE: str(what["cudnn_eligible"]).lower(),
        Tags.GRADIENT: what["gradient"],
        Tags.SEED: cfg.seed, EnvTags.HARDWARE: cfg.hardware.name, Tags.CONFIG_HASH: chash,
        Tags.SWEEP_ID: ctx.sweep_id, Tags.RUN_KIND: ctx.run_kind, Tags.GIT_COMMIT: commit,
        Tags.SWEEP_IDS: tracking.sweeps_tag(ctx.sweep_id) if ctx.sweep_id else None,
        Tags.PRIMARY_METRIC: task.primary_metric, Tags.PRIMARY_MODE: task.primary_mode,
        Tags.COMMAND: ctx.command, **goal.tags(), **version_tags(),
        **conventions.system_tags(ctx.command, commit),
        **hardware.what_ran(model, hw, what, cfg.train.batch_size), **ctx.tags,
    }
    run_name = ctx.run_name or f"{task.name}-{cfg.cell.name}-s{cfg.seed}"
    with tracking.start_run(experiment, run_name, tags, ctx.parent_run_id) as mlrun:
        mlrun.log_params({**flatten(cfg), **conventions.plain_params(cfg, task.name),
                          **sizing_params(what), **ctx.params})
        mlrun.log_metrics({Metrics.PARAMS_COUNT: what["params_count"],
                           Metrics.RECURRENT_PARAMS: what["recurrent_params"]})
        mlrun.log_json(what, Artifacts.WHAT_RAN)
        mlrun.log_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)), Artifacts.CONFIG)
        mlrun.log_text(OmegaConf.to_yaml(OmegaConf.create(list(ctx.overrides))),
                       Artifacts.OVERRIDES)
        for info in data.datasets:
            mlrun.log_dataset(info.name, info.source, info.digest, "train",
                              {"license": info.license, "size": info.size, **info.extra})

        guard = callbacks.NonFiniteGuard()
        stopping = keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.train.patience,
                                                 restore_best_weights=True)
        cbs = [
            callbacks.InterruptCheck(),
            guard,
            callbacks.EpochLogger(mlrun, cfg.train.batch_size),
            *_live_tensorboard(cfg, experiment, run_name, mlrun),
            stopping,  # before the diagnostics: they probe the weights it restores
        ]
        cbs += callbacks.diagnostics_callbacks(cfg, task, data, model, mlrun, stopping)
        cbs += task.callbacks(data)
        train_ds = data.train.repeat() if cfg.train.steps_per_epoch else data.train
        t0 = time.perf_counter()
        with out_of_memory(cfg, "training"), hw.guard():
            history = model.fit(train_ds, validation_data=data.val, epochs=cfg.train.epochs,
                                steps_per_epoch=cfg.train.steps_per_epoch, callbacks=cbs,
                                verbose=cfg.train.verbose, shuffle=False,
                                initial_epoch=ctx.initial_epoch)
        fit_s = time.perf_counter() - t0
        interrupt.raise_if_requested()  # a stop request swallowed after the last epoch
        units = task.metric_units(data)
        if units:  # factor and unit of the per-epoch metrics, for figures (the report's too)
            mlrun.set_tags({Tags.METRIC_UNITS: json.dumps(units, sort_keys=True)})
        callbacks.log_learning_curves(mlrun, history.history, task.name, cfg.cell.name, units)

        if guard.failure is not None:
            f = guard.failure
            reason = (f"non-finite {f['what']} at epoch {f['epoch']} step {f['step']}")
            mlrun.set_tags({Tags.FAILURE_REASON: reason, Tags.FAILURE_WHAT: f["what"],
                            Tags.FAILURE_EPOCH: f["epoch"], Tags.FAILURE_STEP: f["step"]})
            if cfg.tracking.tensorboard:
                _keep_going(mlrun, "TensorBoard logs", _tensorboard, cfg, experiment,
                            run_name, mlrun)
            mlrun.end("FAILED")
            raise RunFailed(f"run {mlrun.run_id} FAILED: {reason}. "
                            + nonfinite_advice(cfg, data))

        test = task.evaluate(model, data, "test")
        base = task.baselines(data)
        mlrun.log_metrics({Metrics.TEST_PREFIX + k: v for k, v in test.items()})
        final = {"test": test}
        for split in {"val", goal.split} - {"test"}:  # exact, with the weights kept
            final[split] = task.evaluate(model, data, split)
            mlrun.log_metrics({objective.split_key(split, k): v
                               for k, v in final[split].items()})
        goal_value = objective.value_of(goal, {objective.split_key(s, k): v
                                               for s, m in final.items() for k, v in m.items()})
        mlrun.log_metrics({Metrics.OBJECTIVE: goal_value})
        mlrun.log_metrics({Metrics.BASELINE_PREFIX + k: v for k, v in base.items()})
        mlrun.log_metrics({Metrics.FIT_TIME_S: fit_s, Metrics.EPOCHS_RUN: len(history.epoch)})
        if ctx.save_weights:
            model.save_weights(ctx.save_weights)
        if cfg.tracking.log_model:
            with tempfile.TemporaryDirectory() as tmp:  # the bare Keras file, as always
                path = Path(tmp) / "model.keras"
                model.save(path)
                mlrun.log_artifact(path, Artifacts.MODEL_DIR)
            _keep_going(mlrun, "MLflow model", tracking.log_model, mlrun, model,
                        Artifacts.MODEL_DIR, task, data)
        if cfg.tracking.tensorboard:
            _keep_going(mlrun, "TensorBoard logs", _tensorboard, cfg, experiment, run_name,
                        mlrun)
        run_id = mlrun.run_id
    bad = [k for k, v in test.items() if not math.isfinite(v)]
    msg = f"non-finite test metrics: {bad}" if bad else ""
    return RunResult(run_id, "FINISHED", test, base, message=msg,
                     history={k: [float(x) for x in v] for k, v in history.history.items()},
                     objective=goal_value)


def _live_tensorboard(cfg: Any, experiment: str, run_name: str, mlrun: Any) -> list:
    """Keras's TensorBoard callback, with ``tracking.tensorboard=true`` (TensorFlow)."""
    if not cfg.tracking.tensorboard:
        return []
    from rnnbench import tensorboard_log

    folder = tensorboard_log.logdir(cfg.tracking.uri, experiment, run_name, mlrun.run_id)
    live = tensorboard_log.live_callback(folder)
    return [live] if live is not None else []


def _tensorboard(cfg: Any, experiment: str, run_name: str, mlrun: Any) -> None:
    from rnnbench import tensorboard_log

    folder = tensorboard_log.logdir(cfg.tracking.uri, experiment, run_name, mlrun.run_id)
    tensorboard_log.export(mlrun, folder)
    print(f"TensorBoard logs: tensorboard --logdir {folder.parent.parent}", flush=True)


def _keep_going(mlrun: Any, what: str, fn: Any, *args: Any) -> None:
    """Run an extra of a finished run (its MLflow model, TensorBoard logs); a failure there
    is reported and tagged but does not lose the run (``model/model.keras`` is logged)."""
    try:
        fn(*args)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"[:2000]
        print(f"rnnbench: warning: the run's {what} could not be written: {reason}", flush=True)
        mlrun.set_tags({Tags.NOT_LOGGED_PREFIX + what.split()[0].lower(): reason})
