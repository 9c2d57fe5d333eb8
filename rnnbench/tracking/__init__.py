"""Everything that talks to MLflow. No other module of rnnbench imports ``mlflow``.

Writing (:mod:`.runs`): :func:`start_run` opens a run (top level or nested) around a
block; a :class:`Run` logs params, metrics, tags, datasets and artifacts, and is closed
with FINISHED, FAILED or KILLED. Each write is spooled on disk while the run is open
(:mod:`.spool`), so a store that goes away loses nothing: :func:`replay` logs it later.
Reading (:mod:`.reading`): :func:`search_runs`, :func:`metric_history` and
:func:`download_artifacts` serve reports and resumable sweeps.
The store (:mod:`.store`): :func:`configure` (for writing) and :func:`open_store` (for
reading) check a URI and point MLflow at it.
The record's names (:mod:`.schema`): :class:`Tags`, :class:`Params`, :class:`Metrics`,
:class:`Artifacts` and the rest, spelled once for writers and readers.

Import from this package, not from its modules. The names that need MLflow load it on
first use, so that the record's names (and ``redact_uri``) can be imported by code that
must stay light, such as the argument parsing of ``rnnbench-report``.
"""

import os

# before MLflow is imported by any module of this package
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

from rnnbench.errors import TrackingError  # noqa: E402
from rnnbench.redaction import redact as redact_uri  # noqa: E402
from rnnbench.lazy import lazy_getattr  # noqa: E402
from rnnbench.tracking.schema import (  # noqa: E402
    Artifacts, EnvTags, Metrics, Params, RunKind, SweepTags, Tags)

_LAZY = {
    "rnnbench.tracking.store": (
        "retry_locked", "check_reachable", "STORE_SCHEMES", "check_uri", "sqlite_path",
        "check_sqlite_file", "connect_uri", "store_error", "is_store_fault", "store_faults",
        "configure", "open_store", "ui_command", "EXPERIMENT_KIND", "ensure_experiment",
        "init_sqlite_store"),
    "rnnbench.tracking.runs": (
        "Run", "MAX_PARAM_LEN", "start_run", "open_run", "reopen_run", "log_metric_steps",
        "start_system_metrics", "log_model"),
    "rnnbench.tracking.spool": (
        "Spool", "SPOOL_DIR_ENV", "apply_write", "replay", "replay_command"),
    "rnnbench.tracking.reading": (
        "run_status", "search_runs", "metric_history", "download_artifacts",
        "list_artifacts", "close_run", "find_by_config", "experiment_names", "get_run",
        "find_runs", "child_runs", "sweeps_tag", "link_to_sweep"),
}
_HOME = {name: module for module, names in _LAZY.items() for name in names}

__all__ = ["Artifacts", "EnvTags", "Metrics", "Params", "RunKind", "SweepTags", "Tags", "TrackingError",
           "redact_uri", *sorted(_HOME)]


__getattr__ = lazy_getattr(__name__, _HOME)
