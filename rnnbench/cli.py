"""Command-line entry points.

- ``rnnbench [overrides]``: one training run; ``rnnbench -m ...``: a Hydra multirun.
- ``rnnbench cells [--d D] [--n N]``: every cell with its equations and parameter count.
- ``rnnbench-tune [overrides]``: a keras-tuner sweep (see ``rnnbench.tuning``).
- ``rnnbench-report [options]``: a benchmark report from MLflow (see ``rnnbench.report``).

Nothing heavy is imported at module level: the Keras backend is chosen from the
composed config, before Keras is imported.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any

from rnnbench import interrupt, jobs
from rnnbench.redaction import take_secrets

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def _conf_dir() -> str:
    """The Hydra configs: ``rnnbench/conf`` in an installed wheel, ``conf/`` at the top
    of a source checkout (editable install or PYTHONPATH)."""
    here = Path(__file__).resolve().parent
    packaged = here / "conf"
    return str(packaged if (packaged / "config.yaml").is_file() else here.parent / "conf")


CONF_DIR = _conf_dir()


def _print_error(message: str) -> None:
    from rnnbench.redaction import redact

    print(f"rnnbench: error: {redact(message)}", file=sys.stderr, flush=True)


def interrupted_message(what: str = "run") -> str:
    """What Ctrl-C left behind: the runs it closed as KILLED, or that none was open yet."""
    killed = interrupt.killed_runs()
    if not killed:
        return (f"interrupted before any MLflow {what} was opened: nothing was recorded.")
    return (f"interrupted: MLflow run(s) {', '.join(killed)} closed as KILLED.")


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


def run_job(cfg: Any) -> float:
    """The body of ``rnnbench``: check the config, then train one run. Returns the run's
    objective (``objective.*``: one float, as Hydra's sweepers need; when the run FAILED,
    the worst value: +inf when minimising, -inf when maximising)."""
    with jobs.console_to(jobs.log_file()):
        return _run_job(cfg)


def _run_job(cfg: Any) -> float:
    from rnnbench import config, conventions, hardware
    from rnnbench.errors import RnnbenchError, RunFailed

    hc = hydra_context()
    redact_hydra_record()
    try:
        conventions.apply_environment(cfg, hc["overrides"])
        obj = config.to_object(cfg)
        hardware.select_backend(obj.backend.name)
        from rnnbench.train import RunContext, run

        ctx = RunContext(overrides=hc["overrides"], sweep_id=hc["sweep_id"],
                         command=hc["command"], sweeper_direction=hc["sweeper_direction"],
                         tags={"sweep_name": hc["sweep_name"], "sweep_job": hc["sweep_job"]})
        result = run(obj, ctx)
    except RnnbenchError as exc:
        _print_error(str(exc))
        if hc["multirun"] and isinstance(exc, RunFailed):
            jobs.job_done("failed", _failed_run_id(str(exc)), str(exc), hc["command"])
            # the other jobs go on; a sweeper gets the worst value (Optuna refuses NaN)
            direction = hc["sweeper_direction"] or cfg.objective.direction or "minimize"
            return math.inf if direction == "minimize" else -math.inf
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _print_error(interrupted_message())
        sys.exit(130)
    print_summary(obj, result)
    jobs.job_done("skipped" if result.skipped else "finished", result.run_id, result.message,
                  hc["command"])
    return result.objective


def _failed_run_id(message: str) -> str | None:
    """The run id a RunFailed message names (``run <32 hex> FAILED``)."""
    import re

    m = re.search(r"\brun ([0-9a-f]{32})\b", message)
    return m.group(1) if m else None


# Hydra plugins a command line may ask for: (config group, choice) -> (module, pip command)
PLUGINS = {
    ("hydra/sweeper", "optuna"): ("hydra_plugins.hydra_optuna_sweeper",
                                  "pip install --no-deps 'hydra-optuna-sweeper==1.3.0'"),
    ("hydra/launcher", "joblib"): ("hydra_plugins.hydra_joblib_launcher",
                                   "pip install 'hydra-joblib-launcher>=1.2,<1.3'"),
    ("hydra/launcher", "submitit_local"): ("hydra_plugins.hydra_submitit_launcher",
                                           "pip install 'hydra-submitit-launcher>=1.2,<1.3'"),
    ("hydra/launcher", "submitit_slurm"): ("hydra_plugins.hydra_submitit_launcher",
                                           "pip install 'hydra-submitit-launcher>=1.2,<1.3'"),
}
# experiments that switch to a plugin themselves
EXPERIMENT_PLUGINS = {"optuna": ("hydra/sweeper", "optuna")}


def check_plugins(argv: list[str]) -> None:
    """Refuse, with the install command, a Hydra plugin that is not installed (Hydra's own
    message lists the other choices but not what to install)."""
    import importlib.util

    wanted = []
    for arg in argv:
        key, _, value = arg.partition("=")
        key = key.lstrip("+~")
        if key.startswith("override "):
            key = key[len("override "):]
        if (key, value) in PLUGINS:
            wanted.append((f"{key}={value}", PLUGINS[(key, value)]))
        elif key == "experiment" and value in EXPERIMENT_PLUGINS:
            wanted.append((f"experiment={value}", PLUGINS[EXPERIMENT_PLUGINS[value]]))
    for what, (module, install) in wanted:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            _print_error(f"{what} needs a Hydra plugin that is not installed here "
                         f"({sys.executable}). Install it with: {install}")
            sys.exit(2)


def _enable_crash_traceback() -> None:
    """On a crash in native code (TensorFlow, XLA), print every thread's Python stack to
    stderr before the process dies, so the report of it says where it happened.
    Finished runs and trials are already in MLflow and the tuner's folder; the same
    command resumes a multirun or a sweep."""
    import faulthandler

    if not faulthandler.is_enabled():
        faulthandler.enable(file=sys.stderr, all_threads=True)


def _hydra_main(task_function: Any, config_name: str) -> None:
    import hydra

    from rnnbench.config import register_configs

    register_configs()
    hydra.main(config_path=CONF_DIR, config_name=config_name, version_base="1.3")(
        task_function)()


def replay_main(argv: list[str]) -> int:
    """``rnnbench replay SPOOL [--tracking-uri URI]``: log a run whose store went away."""
    import argparse

    p = argparse.ArgumentParser(
        prog="rnnbench replay",
        description="Log the record of a run that was kept on disk because its MLflow store "
                    "stopped taking writes (the run's error message names the folder).")
    p.add_argument("spool", type=Path, help="the run's folder under rnnbench-spool/")
    p.add_argument("--tracking-uri", default=None,
                   help="log to this store instead of the run's own")
    args = p.parse_args(take_secrets(argv))
    from rnnbench import tracking
    from rnnbench.errors import RnnbenchError

    try:
        run_id = tracking.replay(args.spool, args.tracking_uri)
    except RnnbenchError as exc:
        _print_error(str(exc))
        return exc.exit_code
    print(f"rnnbench: the run's record is in the store as MLflow run {run_id}.")
    return 0


def main() -> None:
    """``rnnbench``: one run or a multirun; ``rnnbench cells`` lists the cells;
    ``rnnbench replay`` logs a spooled run."""
    if len(sys.argv) > 1 and sys.argv[1] == "cells":
        from rnnbench.cells.listing import main as cells_main

        sys.exit(cells_main(sys.argv[2:]))
    if len(sys.argv) > 1 and sys.argv[1] == "replay":
        sys.exit(replay_main(sys.argv[2:]))
    check_plugins(sys.argv[1:])
    interrupt.install()
    _enable_crash_traceback()
    sys.argv[1:] = take_secrets(sys.argv[1:])
    _run_hydra(run_job, "config", "job(s)")


def _run_hydra(task_function: Any, config_name: str, what: str) -> None:
    """Run the Hydra app; after a multirun, its summary (also when Hydra stopped it early)
    and exit status 1 when a job failed."""
    try:
        _hydra_main(task_function, config_name)
    finally:
        failed = jobs.print_summary()
    if failed:
        _print_error(f"{failed} {what} of the multirun FAILED (listed above).")
        sys.exit(1)


def tune_main() -> None:
    """``rnnbench-tune``: a keras-tuner sweep sharing rnnbench's config."""
    from rnnbench.tuning.app import tune_job

    check_plugins(sys.argv[1:])
    interrupt.install()
    _enable_crash_traceback()
    sys.argv[1:] = take_secrets(sys.argv[1:])
    _run_hydra(tune_job, "tune", "sweep(s)")


def report_main() -> None:
    """``rnnbench-report``: a benchmark report from MLflow runs (never imports TensorFlow)."""
    from rnnbench.report.cli import main as report_cli

    sys.exit(report_cli(sys.argv[1:]))


if __name__ == "__main__":
    main()
