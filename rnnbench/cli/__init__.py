"""Command-line entry points (the console scripts of ``pyproject.toml``).

- ``rnnbench [overrides]``: one training run; ``rnnbench -m ...``: a Hydra multirun.
- ``rnnbench cells [--d D] [--n N]``: every cell with its equations and parameter count.
- ``rnnbench-tune [overrides]``: a keras-tuner sweep (see ``rnnbench.tuning``).
- ``rnnbench-report [options]``: a benchmark report from MLflow (see ``rnnbench.report``).

The jobs these commands run are in :mod:`rnnbench.cli.job`; the config schemas are
registered for Hydra by :mod:`rnnbench.cli.schema`. Nothing heavy is imported at module
level: the Keras backend is chosen from the composed config, before Keras is imported.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from rnnbench import interrupt, jobs
from rnnbench.cli import startup
from rnnbench.cli.job import print_error
from rnnbench.redaction import take_secrets

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def _conf_dir() -> str:
    """The Hydra configs: ``rnnbench/conf`` in an installed wheel, ``conf/`` at the top
    of a source checkout (editable install or PYTHONPATH)."""
    here = Path(__file__).resolve().parent.parent
    packaged = here / "conf"
    return str(packaged if (packaged / "config.yaml").is_file() else here.parent / "conf")


CONF_DIR = _conf_dir()


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
            print_error(f"{what} needs a Hydra plugin that is not installed here "
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

    from rnnbench.cli.schema import register_configs

    register_configs()
    _report_composition_errors()
    try:
        hydra.main(config_path=CONF_DIR, config_name=config_name, version_base="1.3")(
            task_function)()
    except ValueError as exc:  # Hydra's check of its own flags, before any job
        if not str(exc).startswith("Only one of --run, --multirun"):
            raise
        print_error(f"{exc}. To see a job's config, leave out -m and give each swept key "
                    "one value (e.g. `rnnbench cell=lstm --cfg job`); to run the multirun, "
                    "leave out the other flag.")
        sys.exit(2)


def _report_composition_errors() -> None:
    """Hydra's errors about the command line (an unknown key, a bad value or choice, an
    override it cannot parse) as rnnbench's own: one message, exit status 2, like every
    other user error; an unknown key gets the nearest known one at once."""
    import hydra._internal.utils as hydra_utils
    from hydra.errors import (ConfigCompositionException, MissingConfigException,
                              OverrideParseException)

    original = hydra_utils.run_and_report
    if getattr(original, "rnnbench", False):
        return

    def run_and_report(func: Any) -> Any:
        def guarded() -> Any:
            try:
                return func()
            except (ConfigCompositionException, MissingConfigException,
                    OverrideParseException) as exc:
                if os.environ.get("HYDRA_FULL_ERROR") == "1":
                    raise
                print_error(composition_message(exc))
                sys.exit(2)
        return original(guarded)

    run_and_report.rnnbench = True  # type: ignore[attr-defined]
    hydra_utils.run_and_report = run_and_report


def composition_message(exc: BaseException) -> str:
    """The user's message for a Hydra composition error: for a key the schema does not
    have, the keys it has and the nearest one; else Hydra's own words."""
    import dataclasses
    import difflib

    cause = exc.__cause__
    key = getattr(cause, "full_key", None)
    kind = getattr(cause, "object_type", None)
    text = " ".join(str(exc).split("Config search path")[0].split())
    if key and "not in" in str(cause) and dataclasses.is_dataclass(kind):
        known = sorted(f.name for f in dataclasses.fields(kind))
        parent, _, leaf = str(key).rpartition(".")
        near = difflib.get_close_matches(leaf, known, n=1)
        hint = f" Did you mean {parent + '.' if parent else ''}{near[0]}?" if near else ""
        if parent == "cell":
            return _cell_key_message(str(key), leaf, known, hint)
        return (f"{key} is not a config key ({parent or 'the config'} has: "
                f"{', '.join(known)}).{hint} Nothing was run.")
    detail = " ".join(str(cause).split("\n")[0].split()) if cause is not None else ""
    return text + (f" ({detail})" if detail and detail not in text else "")


def _cell_key_message(key: str, leaf: str, known: list[str], hint: str) -> str:
    """An unknown `cell.<key>`: the options of the cell asked for (`cell=NAME` on the
    command line) and the keys every cell has, not every family's options."""
    import difflib

    from rnnbench.cells.registry import CELL_OPTIONS, CELLS

    chosen = [a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("cell=")]
    spec = CELLS.get(chosen[-1]) if chosen else None
    common = [k for k in known if k not in CELL_OPTIONS]
    if spec is None:
        return (f"{key} is not a config key (cell has: {', '.join(known)}).{hint} "
                "Nothing was run.")
    own = sorted(spec.options)
    near = difflib.get_close_matches(leaf, own + common, n=1)
    hint = f" Did you mean cell.{near[0]}?" if near else ""
    return (f"{key} is not an option of cell {spec.name!r} (its options: "
            f"{', '.join(own) or 'none'}; every cell has: {', '.join(common)}).{hint} "
            "Nothing was run.")


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
        print_error(str(exc))
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
    if sys.argv[1:2] in (["--version"], ["-V"]):
        print(startup.version_line())
        sys.exit(0)
    if "--help" in sys.argv[1:] or "-h" in sys.argv[1:]:
        startup.hide_groups_in_help()  # those of rnnbench-tune only
    from rnnbench.cli.job import run_job

    _run_hydra(startup.prepared(run_job), "config", "job(s)")


def _run_hydra(task_function: Any, config_name: str, what: str) -> None:
    """Run the Hydra app; after a multirun, its summary (also when Hydra stopped it early)
    and exit status 1 when a job failed. A stop request that came between jobs, or whose
    exception was swallowed, ends the command with the stop's status (128 + signal)."""
    try:
        _hydra_main(task_function, config_name)
        interrupt.raise_if_requested()
    except KeyboardInterrupt:  # it landed in Hydra's code, outside any job
        with interrupt.deferred():
            jobs.print_summary()
            from rnnbench.cli.job import interrupted_message

            print_error(interrupted_message())
        sys.exit(interrupt.exit_code())
    finally:
        with interrupt.deferred():
            failed = jobs.print_summary()
            jobs.release_sweep_dir()
    if failed:
        print_error(f"{failed} {what} of the multirun FAILED (listed above).")
        sys.exit(jobs.failed_exit_code())


def tune_main() -> None:
    """``rnnbench-tune``: a keras-tuner sweep sharing rnnbench's config."""
    from rnnbench.cli.job import tune_job

    if sys.argv[1:2] in (["--version"], ["-V"]):
        print(startup.version_line())
        sys.exit(0)
    check_plugins(sys.argv[1:])
    interrupt.install()
    _enable_crash_traceback()
    sys.argv[1:] = take_secrets(sys.argv[1:])
    _run_hydra(startup.prepared(tune_job), "tune", "sweep(s)")


def report_main() -> None:
    """``rnnbench-report``: a benchmark report from MLflow runs (never imports TensorFlow)."""
    from rnnbench.report.cli import main as report_cli

    sys.exit(report_cli(sys.argv[1:]))


if __name__ == "__main__":
    main()
