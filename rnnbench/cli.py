"""Command-line entry points.

- ``rnnbench [overrides]``: one training run; ``rnnbench -m ...``: a Hydra multirun.
- ``rnnbench cells [--d D] [--n N]``: every cell with its equations and parameter count.
- ``rnnbench-tune [overrides]``: a keras-tuner sweep (see ``rnnbench.tuning``).
- ``rnnbench-report [options]``: a benchmark report from MLflow (see ``rnnbench.report``).

Nothing heavy is imported at module level: the Keras backend is chosen from the
composed config, before Keras is imported.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from rnnbench import interrupt
from rnnbench.redaction import take_secrets

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
_failed_jobs: list[str] = []


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
    }


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


def run_job(cfg: Any) -> Any:
    """The body of ``rnnbench``: check the config, then train one run."""
    from rnnbench import config, hardware
    from rnnbench.errors import RnnbenchError, RunFailed

    hc = hydra_context()
    redact_hydra_record()
    try:
        obj = config.to_object(cfg)
        hardware.select_backend(obj.backend.name)
        from rnnbench.train import RunContext, run

        ctx = RunContext(overrides=hc["overrides"], sweep_id=hc["sweep_id"],
                         command=hc["command"],
                         tags={"sweep_name": hc["sweep_name"], "sweep_job": hc["sweep_job"]})
        result = run(obj, ctx)
    except RnnbenchError as exc:
        _print_error(str(exc))
        if hc["multirun"] and isinstance(exc, RunFailed):
            _failed_jobs.append(hc["command"])
            return None  # the other jobs of the multirun go on
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _print_error(interrupted_message())
        sys.exit(130)
    print_summary(obj, result)
    return {"run_id": result.run_id, "status": result.status, **result.test_metrics}


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
    interrupt.install()
    _enable_crash_traceback()
    sys.argv[1:] = take_secrets(sys.argv[1:])
    _hydra_main(run_job, "config")
    if _failed_jobs:
        _print_error(f"{len(_failed_jobs)} job(s) of the multirun FAILED: "
                     + "; ".join(_failed_jobs))
        sys.exit(1)


def tune_main() -> None:
    """``rnnbench-tune``: a keras-tuner sweep sharing rnnbench's config."""
    from rnnbench.tuning.app import tune_job

    interrupt.install()
    _enable_crash_traceback()
    sys.argv[1:] = take_secrets(sys.argv[1:])
    _hydra_main(tune_job, "tune")
    if _failed_jobs:
        _print_error(f"{len(_failed_jobs)} sweep(s) of the multirun FAILED: "
                     + "; ".join(_failed_jobs))
        sys.exit(1)


def report_main() -> None:
    """``rnnbench-report``: a benchmark report from MLflow runs (never imports TensorFlow)."""
    from rnnbench.report.cli import main as report_cli

    sys.exit(report_cli(sys.argv[1:]))


if __name__ == "__main__":
    main()
