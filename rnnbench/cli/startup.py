"""What a command does before its job's work: a quiet start and early input checks.

- :func:`version_line`: ``rnnbench --version`` (rnnbench's version, Python's, and the
  installed TensorFlow and Keras read from their package metadata, without importing them).
- :func:`prepared`: wraps a Hydra task function so that, once the config is composed,
  the files and folders the ``task`` node names are checked (before TensorFlow loads and
  before the tracking store is touched), and TensorFlow is imported with the lines its
  native libraries print while loading (oneDNN, CUDA drivers, absl's "before
  InitializeLog" warning: written before any log level applies, and twice, once per
  library) held back. Every other line of that import is printed.
- :func:`hide_groups_in_help`: the config groups ``rnnbench --help`` leaves out (those
  only ``rnnbench-tune`` accepts).

Nothing heavy is imported at module level.
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
from typing import Any, Callable

#: lines TensorFlow's native libraries print while they load, whatever the log level
NOISE = (
    "All log messages before absl::InitializeLog() is called are written to STDERR",
    "oneDNN custom operations are on",
    "Could not find cuda drivers on your machine",
    "Unable to register cuDNN factory",
    "Unable to register cuFFT factory",
    "Unable to register cuBLAS factory",
    "computation placer already registered",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "rebuild TensorFlow with the appropriate compiler flags",
    "failed call to cuInit",
)

#: config groups of ``rnnbench-tune`` only (``schema``: the typed schemas behind the configs)
TUNE_ONLY_GROUPS = ("tuner", "search_space", "schema")


def version_line() -> str:
    """``rnnbench <version> (Python x.y.z, TensorFlow a.b, Keras c.d)``."""
    from importlib import metadata

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    parts = [f"Python {sys.version.split()[0]}"]
    for dist, label in (("tensorflow", "TensorFlow"), ("keras", "Keras")):
        found = version(dist)
        parts.append(f"{label} {found}" if found else f"{label} not installed")
    return f"rnnbench {version('rnnbench') or 'unknown'} ({', '.join(parts)})"


def is_noise(line: str) -> bool:
    return any(marker in line for marker in NOISE)


def import_quietly(module: str) -> None:
    """Import ``module`` with file descriptor 2 held in a temporary file, then print to
    stderr every line of it that is not one of :data:`NOISE`."""
    if module in sys.modules:
        return
    import importlib

    sys.stderr.flush()
    saved = os.dup(2)
    held = tempfile.TemporaryFile()
    try:
        os.dup2(held.fileno(), 2)
        try:
            importlib.import_module(module)
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
    finally:
        os.close(saved)
        held.seek(0)
        text = held.read().decode("utf-8", "replace")
        held.close()
        kept = [line for line in text.splitlines(keepends=True) if not is_noise(line)]
        if kept:
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


def quiet_tensorflow() -> None:
    """For the scripts under ``benchmarks/``: TensorFlow imported as the commands import
    it (:func:`import_quietly`), when it is the Keras backend and installed, and unless
    ``TF_CPP_MIN_LOG_LEVEL=0`` asks for every line."""
    if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow" or \
            os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        return
    from importlib.util import find_spec

    if find_spec("tensorflow") is not None:
        import_quietly("tensorflow")


def _select(cfg: Any, key: str) -> Any:
    from omegaconf import OmegaConf

    try:
        return OmegaConf.select(cfg, key, default=None)
    except Exception:  # an interpolation that does not resolve: the config check says so
        return None


def early_checks(cfg: Any) -> None:
    """The task's files and folders, then TensorFlow loaded quietly (tensorflow backend)."""
    from rnnbench.tasks.files import check_task_files

    task = _select(cfg, "task")
    if task is not None:
        check_task_files(task)
    # TF_CPP_MIN_LOG_LEVEL=0 set by the user: they asked to see every line
    if _select(cfg, "backend.name") == "tensorflow" and \
            os.environ.get("TF_CPP_MIN_LOG_LEVEL") != "0" and _checks_pass(cfg):
        os.environ["KERAS_BACKEND"] = "tensorflow"
        import_quietly("tensorflow")


def _checks_pass(cfg: Any) -> bool:
    """Whether the config passes its value checks (milliseconds, without TensorFlow). A
    refused value is then refused by the job, with its message, before TensorFlow loads:
    a typo costs no import of some seconds."""
    from rnnbench import config
    from rnnbench.errors import RnnbenchError

    try:
        config.to_object(cfg)
    except RnnbenchError:
        return False
    return True


def prepared(task_function: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``task_function`` after :func:`early_checks`; a bad file ends the command with
    its message and exit status 2, before any record is written."""

    @functools.wraps(task_function)
    def run(cfg: Any) -> Any:
        from rnnbench.errors import RnnbenchError
        from rnnbench.jobs import print_error

        try:
            early_checks(cfg)
        except RnnbenchError as exc:
            print_error(str(exc))
            sys.exit(exc.exit_code)
        return task_function(cfg)

    return run


def hide_groups_in_help(hidden: tuple[str, ...] = TUNE_ONLY_GROUPS) -> None:
    """Leave the groups ``hidden`` (and their sub-groups) out of the group list that
    ``--help`` prints."""
    from hydra._internal.hydra import Hydra

    original = Hydra.format_config_groups
    if getattr(original, "_rnnbench_hidden", None) == hidden:
        return

    def format_config_groups(self: Any, predicate: Callable[[str], bool],
                             compact: bool = True) -> str:
        def shown(group: str) -> bool:
            return predicate(group) and group.split("/")[0] not in hidden

        return original(self, shown, compact)

    format_config_groups._rnnbench_hidden = hidden  # type: ignore[attr-defined]
    Hydra.format_config_groups = format_config_groups  # type: ignore[method-assign]
