"""Where a result came from: the code (git commit, uncommitted changes), the library
versions, and a hash of the settings that decide the numbers.

Runs (:mod:`rnnbench.train`) and sweeps (:mod:`rnnbench.tuning.app`) tag their MLflow
runs with the same values, so that a report can tell which code and which config
produced a number, and a multirun can skip a config that already finished.
"""

from __future__ import annotations

import hashlib
import platform
import subprocess
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from rnnbench import __version__
from rnnbench.tracking.schema import EnvTags

# settings that cannot change a run's numbers: where the record goes, how much the
# console shows, and which metric a Hydra sweeper reads
NOT_RESULT_KEYS = (("tracking",), ("train", "verbose"), ("objective",))


# Keys added to the config after runs were recorded, whose null value means "not set".
# Dropped from the hash while unset, so that a config that does not use them keeps the
# hash it had before they existed (a multirun's skip of finished configs, a sweep's id).
_CELL_KEYS_BEFORE_FAMILIES = ("forget_bias", "chrono_init")


def _drop_unset_additions(container: dict) -> None:
    from rnnbench.cells.registry import CELL_OPTIONS
    from rnnbench.config import DEFAULT_UNITS

    cell = container.get("cell")
    if isinstance(cell, dict):
        for key in CELL_OPTIONS:
            if key not in _CELL_KEYS_BEFORE_FAMILIES and key in cell and cell[key] is None:
                del cell[key]
    model = container.get("model")
    if isinstance(model, dict) and "input_projection" in model \
            and model["input_projection"] is None:
        model.pop("input_projection")
    if isinstance(model, dict) and "params" in model and model["params"] is None:
        model.pop("params")
        model.pop("params_of", None)
        if model.get("units", DEFAULT_UNITS) is None:
            model["units"] = DEFAULT_UNITS


def config_hash(cfg: Any) -> str:
    """Hash of the config that decides the result: everything but ``NOT_RESULT_KEYS``."""
    node = OmegaConf.structured(cfg) if not OmegaConf.is_config(cfg) else cfg
    container = OmegaConf.to_container(node, resolve=True)
    _drop_unset_additions(container)
    for path in NOT_RESULT_KEYS:
        parent = container
        for part in path[:-1]:
            parent = parent.get(part, {}) if isinstance(parent, dict) else {}
        if isinstance(parent, dict):
            parent.pop(path[-1], None)
    text = OmegaConf.to_yaml(OmegaConf.create(container), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def git_commit() -> str | None:
    """The checkout's commit, with ``-dirty`` when tracked files have uncommitted changes
    or untracked files lie under ``rnnbench/`` or ``conf/`` (new code or config a run may
    have used); None outside a git checkout (an installed wheel)."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if is_dirty(root) else "")


# untracked files here can change a result (a new module, a new config group file)
SOURCE_DIRS = ("rnnbench", "conf")


def is_dirty(root: Path) -> bool:
    """Whether the checkout at ``root`` has uncommitted changes to tracked files, or
    untracked files (not ignored) under ``SOURCE_DIRS``."""
    tracked = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                             cwd=root, capture_output=True, text=True, timeout=5).stdout
    untracked = subprocess.run(["git", "ls-files", "--others", "--exclude-standard", "--",
                                *SOURCE_DIRS], cwd=root, capture_output=True, text=True,
                               timeout=5).stdout
    return bool(tracked.strip() or untracked.strip())


def version_tags() -> dict[str, str]:
    """The versions that can change a number: rnnbench, Python, Keras and TensorFlow."""
    import keras

    tags = {EnvTags.RNNBENCH_VERSION: __version__,
            EnvTags.PYTHON_VERSION: platform.python_version(),
            EnvTags.KERAS_VERSION: keras.__version__}
    try:
        import tensorflow as tf

        tags[EnvTags.TENSORFLOW_VERSION] = tf.__version__
    except ImportError:
        pass
    return tags
