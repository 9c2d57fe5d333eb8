"""The Hydra task functions of ``rnnbench`` (one run) and ``rnnbench-tune`` (one sweep).

Both go through :func:`hydra_job`, which does what every job of a multirun needs:
its console into the job's log file, passwords out of Hydra's record, the tracking
environment applied, the config checked, the backend chosen before Keras is imported,
a user-facing error instead of a traceback, and a line in the multirun's summary. A
FAILED job of a multirun, or one whose config a check refused, returns instead of
exiting, so that the other jobs go on; the summary gives its message.

Nothing heavy is imported at module level: the Keras backend is chosen from the
composed config, before Keras is imported.
"""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rnnbench import interrupt, jobs
from rnnbench.jobs import print_error


def interrupted_message(what: str = "run") -> str:
    """What a stop request left behind: the runs it closed as KILLED, or that none was
    open yet."""
    killed = interrupt.killed_runs()
    by = f"interrupted by {interrupt.requested() or 'SIGINT'}"
    if not killed:
        return f"{by} before any MLflow {what} was opened: nothing was recorded."
    return f"{by}: MLflow run(s) {', '.join(killed)} closed as KILLED."


def redact_hydra_record() -> None:
    """Hydra writes the composed config and the overrides to the job's ``.hydra/`` folder
    (and a multirun's to ``multirun.yaml``) before the job starts: hide passwords there."""
    from hydra.core.hydra_config import HydraConfig

    from rnnbench.redaction import redact_files

    hc = HydraConfig.get()
    out = Path(hc.runtime.output_dir)
    redact_files(out / (hc.output_subdir or ".hydra"))
    redact_files(Path(hc.sweep.dir), "multirun.yaml")


def hydra_context(app: str = "rnnbench") -> dict[str, Any]:
    """Overrides, the command that reproduces this job, and the sweep id of a multirun."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    overrides = list(hc.overrides.task)
    multirun = hc.mode == RunMode.MULTIRUN
    # sweep_id: the multirun's folder, absolute so that two projects never share one;
    # sweep_name: the same folder as configured plus the swept keys, for people
    keys = sorted({o.split("=", 1)[0].lstrip("+~") for o in overrides})
    return {
        "overrides": overrides,
        "command": " ".join([app, *overrides]),
        "sweep_id": str(Path(hc.sweep.dir).resolve()) if multirun else None,
        "sweep_name": f"{hc.sweep.dir} ({', '.join(keys)})" if multirun else None,
        "sweep_job": hc.job.num if multirun else None,
        "multirun": multirun,
        "sweeper_direction": sweeper_direction(hc),
    }


def sweeper_direction(hc: Any) -> str | None:
    """The direction of a sweeper that has one (Optuna's ``hydra.sweeper.direction``)."""
    from omegaconf import OmegaConf

    value = OmegaConf.select(hc.sweeper, "direction", default=None)
    if value is not None and not OmegaConf.is_config(value) and hasattr(value, "name"):
        value = value.name  # Optuna's Direction enum
    return value if isinstance(value, str) else None  # a list: several objectives


@dataclass
class Outcome:
    """How a job ended: its line in the multirun summary and the value Hydra gets.

    Args:
        status: ``finished`` or ``skipped`` (``failed`` is the wrapper's own).
        run_id: the MLflow run (for a sweep, its parent run).
        message: a note for the summary.
        value: what the task function returns (a sweeper needs one float).
    """

    status: str
    run_id: str | None
    message: str
    value: Any


def hydra_job(cfg: Any, app: str, work: Callable[[Any, dict[str, Any]], Outcome], *,
              failed: Callable[[Any, dict[str, Any], str], tuple[str | None, Any]],
              interrupted: Callable[[], str]) -> Any:
    """Run ``work(config object, hydra context)`` as a job of ``app``, with the handling
    every job shares (see the module docstring); its console also goes to the job's log.

    Args:
        cfg: the composed config (a DictConfig, still unchecked).
        app: the command name, the first word of the command that reproduces the job.
        work: the job's own body; returns an :class:`Outcome`.
        failed: for a FAILED job of a multirun, ``(run id, value)`` from the config, the
            context and the error message.
        interrupted: the message after Ctrl-C.
    """
    interrupt.install()  # also in a launcher's own process (submitit), not only the CLI's
    with jobs.console_to(jobs.log_file()):
        return _hydra_job(cfg, app, work, failed, interrupted)


def _hydra_job(cfg: Any, app: str, work: Callable[[Any, dict[str, Any]], Outcome],
               failed: Callable[[Any, dict[str, Any], str], tuple[str | None, Any]],
               interrupted: Callable[[], str]) -> Any:
    from rnnbench import config, conventions, hardware
    from rnnbench.errors import ProcessSpent, RnnbenchError, RunFailed

    hc = hydra_context(app)
    outcome = None
    try:
        redact_hydra_record()
        interrupt.raise_if_requested()  # stopped between two jobs: this one never starts
        conventions.apply_environment(cfg, hc["overrides"])
        obj = config.to_object(cfg)
        hardware.select_backend(obj.backend.name)
        outcome = work(obj, hc)
        interrupt.raise_if_requested()  # a stop request whose exception was swallowed
    except RnnbenchError as exc:
        print_error(str(exc))
        if hc["multirun"]:  # a FAILED run, or a config refused by a check
            run_id, value = failed(cfg, hc, str(exc))
            jobs.job_done("failed", run_id, str(exc), hc["command"],
                          exc.exit_code if not isinstance(exc, RunFailed) else 1)
            if isinstance(exc, ProcessSpent) and jobs.stop_multirun(exc.reason):
                # no later job of this process could start either: stop the multirun
                # here (the summary lists the jobs not started) rather than refuse each
                jobs.write_record()
                sys.exit(exc.exit_code)
            return value  # the other jobs of the multirun go on; the summary says why
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _stopped(hc, interrupted, outcome)
    except Exception:
        # a stop request that library code turned into another error (see
        # rnnbench.tracking.runs.start_run): the job was stopped, not broken
        if interrupt.requested() is None:
            raise
        _stopped(hc, interrupted, outcome)
    jobs.job_done(outcome.status, outcome.run_id, outcome.message, hc["command"])
    return outcome.value


def _stopped(hc: dict[str, Any], interrupted: Callable[[], str],
             outcome: Outcome | None) -> None:
    """Say what a stop request left behind, write the job's record in a multirun (Hydra
    writes none for a job that exits), and exit with the stop's status (128 + signal)."""
    with interrupt.deferred():
        signame = interrupt.requested() or "SIGINT"
        if outcome is not None:  # the job's work was done when the stop came
            message = (f"stopped by {signame} after the job's MLflow run {outcome.run_id} "
                       f"was {outcome.status}: its record is complete.")
            run_id = outcome.run_id
        else:
            message = interrupted()
            killed = interrupt.killed_runs()
            run_id = killed[-1] if killed else None
        print_error(message)
        if hc["multirun"]:
            jobs.job_done(outcome.status if outcome else "stopped", run_id,
                          f"stopped by {signame}" + (
                f"; run {run_id} closed as KILLED" if outcome is None and run_id else ""),
                hc["command"])
            jobs.write_record()
    sys.exit(interrupt.exit_code())


# ---- rnnbench: one run ------------------------------------------------------------------

def run_job(cfg: Any) -> float:
    """The body of ``rnnbench``: check the config, then train one run. Returns the run's
    objective (``objective.*``: one float, as Hydra's sweepers need; when the run FAILED,
    the worst value: +inf when minimising, -inf when maximising)."""
    return hydra_job(cfg, "rnnbench", _train, failed=_run_failed,
                     interrupted=interrupted_message)


def _train(obj: Any, hc: dict[str, Any]) -> Outcome:
    from rnnbench.tracking.schema import SweepTags, Tags
    from rnnbench.train import RunContext, run

    ctx = RunContext(overrides=hc["overrides"], sweep_id=hc["sweep_id"],
                     command=hc["command"], sweeper_direction=hc["sweeper_direction"],
                     tags={SweepTags.SWEEP_NAME: hc["sweep_name"], Tags.SWEEP_JOB: hc["sweep_job"]})
    result = run(obj, ctx)
    with interrupt.deferred():  # a stop request now is honoured when the job ends
        print_summary(obj, result)
    return Outcome("skipped" if result.skipped else "finished", result.run_id,
                   result.message, result.objective)


def _run_failed(cfg: Any, hc: dict[str, Any], message: str) -> tuple[str | None, float]:
    # a sweeper gets the worst value (Optuna refuses NaN)
    try:
        direction = hc["sweeper_direction"] or cfg.objective.direction or "minimize"
    except Exception:  # a config refused before its objective could be read
        direction = hc["sweeper_direction"] or "minimize"
    return _failed_run_id(message), math.inf if direction == "minimize" else -math.inf


def _failed_run_id(message: str) -> str | None:
    """The run id a RunFailed message names (``run <32 hex> FAILED``)."""
    m = re.search(r"\brun ([0-9a-f]{32})\b", message)
    return m.group(1) if m else None


def print_summary(cfg: Any, result: Any) -> None:
    from rnnbench import tracking

    if result.skipped:
        return
    line = "=" * 72
    print(line)
    print(f"rnnbench: {cfg.task.name} · {cfg.cell.name} · seed {cfg.seed} · {result.status}")
    width = max((len(k) for k in result.test_metrics), default=4)
    for key, value in result.test_metrics.items():
        base = result.baselines.get(key)
        extra = f"   (baseline {base:.6g})" if base is not None else ""
        print(f"  test {key:<{width}} {value:.6g}{extra}")
    uri = tracking.redact_uri(cfg.tracking.uri)
    print(f"  MLflow run {result.run_id} in experiment "
          f"'{cfg.tracking.experiment or cfg.task.name}' at {uri}")
    print(f"  open it:   {tracking.ui_command(uri)}")
    if result.message:
        print(f"  note: {result.message}")
    print(line, flush=True)


# ---- rnnbench-tune: one sweep -----------------------------------------------------------

def tune_job(cfg: Any) -> Any:
    """The body of ``rnnbench-tune``: check the sweep config, then run the sweep. Returns
    the sweep's id, MLflow run, best trial and its score (None for a FAILED sweep of a
    multirun)."""
    return hydra_job(cfg, "rnnbench-tune", _sweep, failed=lambda cfg, hc, message: (None, None),
                     interrupted=lambda: interrupted_message("sweep run") + " Run the same "
                     "command again to resume the search.")


def _sweep(obj: Any, hc: dict[str, Any]) -> Outcome:
    from rnnbench.tuning.app import run_sweep

    result = run_sweep(obj, hc["overrides"], hc["command"])
    with interrupt.deferred():
        print_sweep(obj, result)
    best = result.best or {}
    value = json.loads(json.dumps({"sweep_id": result.sweep_id, "run_id": result.parent_run_id,
                                   "best_trial": best.get("trial_id"),
                                   obj.tuner.objective: best.get("score")}))
    return Outcome("finished", result.parent_run_id, "", value)


def print_sweep(cfg: Any, result: Any) -> None:
    """The sweep's summary: trials, the best one and the command that repeats it alone."""
    from rnnbench import tracking

    line = "=" * 72
    print(line)
    if result.status == "DONE":
        print(f"rnnbench-tune: worker done; sweep {result.sweep_id} (MLflow run "
              f"{result.parent_run_id}) is finished by its chief")
        print(line, flush=True)
        return
    print(f"rnnbench-tune: {result.sweep_id} · {len(result.trials)} trials: "
          f"{result.completed} finished, {result.failed} FAILED")
    best = result.best
    objective = cfg.tuner.objective
    if best:
        hps = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in best["hyperparameters"].items() if not k.startswith("tuner/"))
        print(f"  best: trial {int(best['trial_id']) + 1}, {objective}={best['score']:.6g}, "
              f"MLflow run {best['run_id']}")
        print(f"        {hps}")
        print(f"  as a single run: {best['command']}")
    else:
        print("  no trial finished: there is no best trial")
    print(f"  MLflow sweep run {result.parent_run_id} in experiment "
          f"'{cfg.tracking.experiment or cfg.task.name}' at "
          f"{tracking.redact_uri(cfg.tracking.uri)}")
    print(f"  open it:   {tracking.ui_command(tracking.redact_uri(cfg.tracking.uri))}  "
          f"(filter: tags.sweep_id = '{result.sweep_id}')")
    print(line, flush=True)
