"""Everything that talks to MLflow. No other module of rnnbench imports ``mlflow``.

Writing: :class:`Tracker` opens a run (top level or nested), logs params, metrics,
tags, datasets and artifacts, and closes it with FINISHED, FAILED or KILLED.
Reading: :func:`search_runs`, :func:`metric_history` and :func:`download_artifacts`
serve reports and resumable sweeps.

SQLite stores shared by several processes may answer "database is locked"; every
call here retries those with backoff instead of losing the write.
"""

from __future__ import annotations

import functools
import json
import os
import random
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

import mlflow  # noqa: E402
from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

from rnnbench.errors import TrackingError  # noqa: E402

T = TypeVar("T")
MAX_PARAM_LEN = 6000
LOCK_RETRIES = 12


def _is_locked(exc: BaseException) -> bool:
    text = str(exc).lower()
    return ("database is locked" in text or "database table is locked" in text
            # two processes adding the same dataset to an experiment at once: MLflow looks
            # it up, then inserts it, and the later insert fails; a retry finds it there
            or ("unique constraint failed: datasets." in text)
            or ("duplicate key" in text and "dataset_pk" in text))


def retry_locked(fn: Callable[..., T]) -> Callable[..., T]:
    """Retry ``fn`` while SQLite reports a lock held by another process."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        for attempt in range(LOCK_RETRIES):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # MlflowException or sqlalchemy OperationalError
                if not _is_locked(exc) or attempt == LOCK_RETRIES - 1:
                    raise
                time.sleep(min(2.0, 0.05 * 2**attempt) * (0.5 + random.random()))
        raise AssertionError("unreachable")

    return wrapper


def check_reachable(uri: str, timeout_s: float) -> None:
    """Fail fast, naming the URI, when a tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    url = uri.rstrip("/") + "/health"
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=max(0.5, deadline - time.monotonic())):
                return
        except urllib.error.HTTPError:
            return  # the server answered
        except (urllib.error.URLError, OSError) as exc:
            last = exc
            time.sleep(0.5)
    raise TrackingError(
        f"the MLflow tracking server at {uri} did not answer within {timeout_s:g} s ({last}). "
        f"Start it with `mlflow server --host 127.0.0.1 --port <port>`, or pass "
        f"tracking.uri=<its address>, or use the local store with tracking=sqlite."
    )


def configure(uri: str, timeout_s: float = 15.0) -> None:
    """Point MLflow at ``uri`` after checking that it can be reached."""
    check_reachable(uri, timeout_s)
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        if db.parent and not db.parent.exists():
            raise TrackingError(f"tracking.uri={uri}: folder {db.parent} does not exist.")
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = os.environ.get(
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    mlflow.set_tracking_uri(uri)
    init_sqlite_store(uri)


def ui_command(uri: str) -> str:
    """The command that opens the MLflow UI on this store."""
    if uri.startswith(("http://", "https://")):
        return f"open {uri} in a browser"
    return f"mlflow ui --backend-store-uri {uri}"


# MLflow 3 opens an experiment without this tag in its GenAI view (traces); this value
# opens it on the runs list (the value MLflow itself sets for model training)
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


@retry_locked
def ensure_experiment(name: str) -> str:
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name, tags=dict([EXPERIMENT_KIND]))
        except MlflowException:
            exp = client.get_experiment_by_name(name)  # created by a parallel job
            if exp is None:
                raise
    elif exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    if EXPERIMENT_KIND[0] not in exp.tags:  # made by an older rnnbench, or by hand
        client.set_experiment_tag(exp.experiment_id, *EXPERIMENT_KIND)
    return exp.experiment_id


class Run:
    """An open MLflow run. All writes go through the client with explicit run ids, so
    several runs (a sweep and its trials) can be open in one process."""

    def __init__(self, run_id: str, experiment_id: str) -> None:
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.client = mlflow.MlflowClient()

    @retry_locked
    def log_params(self, params: dict[str, Any]) -> None:
        items = [Param(k, _param_value(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    @retry_locked
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()
                 if v is not None]
        for i in range(0, len(items), 500):
            self.client.log_batch(self.run_id, metrics=items[i:i + 500])

    @retry_locked
    def set_tags(self, tags: dict[str, Any]) -> None:
        items = [RunTag(k, str(v)) for k, v in tags.items() if v is not None]
        if items:
            self.client.log_batch(self.run_id, tags=items)

    @retry_locked
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._log_bytes(text.encode(), artifact_file)

    def log_json(self, obj: Any, artifact_file: str) -> None:
        self.log_text(json.dumps(obj, indent=2, sort_keys=True, default=str), artifact_file)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(artifact_file).name
            figure.savefig(path, dpi=110, bbox_inches="tight")
            self.log_artifact(path, str(Path(artifact_file).parent) or None)

    def _log_bytes(self, data: bytes, artifact_file: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(artifact_file).name
            path.write_bytes(data)
            parent = str(Path(artifact_file).parent)
            self.log_artifact(path, None if parent in ("", ".") else parent)

    @retry_locked
    def log_dataset(self, name: str, source: str, digest: str, context: str,
                    tags: dict[str, str]) -> None:
        """Record a data set as an MLflow dataset input (origin, licence, size, digest)."""
        from mlflow.data.http_dataset_source import HTTPDatasetSource
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import InputTag

        src = HTTPDatasetSource(url=source if "://" in source else f"pkg://{source}")
        dataset = MetaDataset(source=src, name=name, digest=digest[:36])
        input_tags = [InputTag(key="mlflow.data.context", value=context)]
        input_tags += [InputTag(key=k, value=str(v)) for k, v in tags.items()]
        from mlflow.entities import DatasetInput

        self.client.log_inputs(self.run_id, [DatasetInput(dataset._to_mlflow_entity(),
                                                          input_tags)])

    @retry_locked
    def end(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)


def _param_value(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text if len(text) <= MAX_PARAM_LEN else text[: MAX_PARAM_LEN - 3] + "..."


@retry_locked
def _create_run(experiment_id: str, run_name: str | None, tags: dict[str, str]) -> str:
    run = mlflow.MlflowClient().create_run(experiment_id, tags=tags, run_name=run_name)
    return run.info.run_id


@contextmanager
def start_run(experiment: str, run_name: str | None = None, tags: dict[str, Any] | None = None,
              parent_run_id: str | None = None) -> Iterator[Run]:
    """Open a run; close it FINISHED on success, KILLED on Ctrl-C or SIGTERM, FAILED on
    any other exception (with the reason as a tag). Code inside may end it itself."""
    experiment_id = ensure_experiment(experiment)
    all_tags = {k: str(v) for k, v in (tags or {}).items() if v is not None}
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    run = Run(_create_run(experiment_id, run_name, all_tags), experiment_id)
    monitor = start_system_metrics(run.run_id)
    try:
        try:
            yield run
        finally:
            if monitor is not None:
                monitor.finish()
    except KeyboardInterrupt:
        run.set_tags({"failure_reason": "interrupted (Ctrl-C or SIGTERM)"})
        run.end("KILLED")
        raise
    except BaseException as exc:
        if run_status(run.run_id) not in ("FAILED", "KILLED"):
            run.set_tags({"failure_reason": f"{type(exc).__name__}: {exc}"[:5000]})
            run.end("FAILED")
        raise
    else:
        if run_status(run.run_id) == "RUNNING":
            run.end("FINISHED")


# ---- reading ------------------------------------------------------------------------

@retry_locked
def run_status(run_id: str) -> str:
    return mlflow.MlflowClient().get_run(run_id).info.status


@retry_locked
def search_runs(experiments: Iterable[str] | None = None, filter_string: str = "",
                statuses: Iterable[str] | None = None, max_results: int = 50000) -> list:
    """Runs of the named experiments (all experiments when None), oldest first, as
    MLflow ``Run`` entities. ``statuses`` keeps only those statuses."""
    client = mlflow.MlflowClient()
    if experiments is None:
        exp_ids = [e.experiment_id for e in client.search_experiments()]
    else:
        exp_ids = []
        for name in experiments:
            exp = client.get_experiment_by_name(name)
            if exp is not None:
                exp_ids.append(exp.experiment_id)
    if not exp_ids:
        return []
    runs, token = [], None
    while True:
        page = client.search_runs(exp_ids, filter_string=filter_string,
                                  max_results=min(max_results, 5000), page_token=token,
                                  order_by=["attributes.start_time ASC"])
        runs.extend(page)
        token = page.token
        if not token or len(runs) >= max_results:
            break
    if statuses is not None:
        keep = set(statuses)
        runs = [r for r in runs if r.info.status in keep]
    return runs


@retry_locked
def metric_history(run_id: str, key: str) -> list[tuple[int, float]]:
    """``(step, value)`` pairs of one metric, by step."""
    hist = mlflow.MlflowClient().get_metric_history(run_id, key)
    return sorted((m.step, m.value) for m in hist)


@retry_locked
def download_artifacts(run_id: str, path: str, dst: str | Path) -> Path:
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path,
                                                    dst_path=str(dst)))


@retry_locked
def list_artifacts(run_id: str, path: str | None = None) -> list[str]:
    return [f.path for f in mlflow.MlflowClient().list_artifacts(run_id, path)]


@retry_locked
def close_run(run_id: str, status: str, tags: dict[str, str] | None = None) -> None:
    """End a run left open by a dead process (used when a sweep resumes)."""
    client = mlflow.MlflowClient()
    for k, v in (tags or {}).items():
        client.set_tag(run_id, k, v)
    client.set_terminated(run_id, status)


def find_finished(experiment: str, config_hash: str) -> list:
    """FINISHED runs of ``experiment`` whose config hash tag is ``config_hash``."""
    return search_runs([experiment], f"tags.config_hash = '{config_hash}'",
                       statuses=["FINISHED"])


# ---- reading for reports (rnnbench.report) ---------------------------------------------

def open_store(uri: str, timeout_s: float = 15.0) -> None:
    """Point MLflow at an existing store for reading: a SQLite file that is not there is
    refused (MLflow would silently create an empty one), a server must answer."""
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        if not db.is_file():
            raise TrackingError(
                f"--tracking-uri {uri}: there is no MLflow store at {db.resolve()}. Pass the "
                f"store your runs were logged to (rnnbench writes sqlite:///mlflow.db in the "
                f"folder it ran in), or an http:// address of an MLflow server.")
    check_reachable(uri, timeout_s)
    mlflow.set_tracking_uri(uri)


@retry_locked
def experiment_names() -> dict[str, str]:
    """``{name: experiment_id}`` of the store's active experiments."""
    return {e.name: e.experiment_id for e in mlflow.MlflowClient().search_experiments()}


@retry_locked
def get_run(run_id: str) -> Any | None:
    """The MLflow ``Run`` with this id, or None when the store has no such run."""
    try:
        return mlflow.MlflowClient().get_run(run_id)
    except MlflowException:
        return None


def find_runs(experiments: Iterable[str] | None, filter_string: str = "") -> list:
    """Like :func:`search_runs`, but a filter MLflow cannot parse is a ``ConfigError``
    quoting MLflow's reason."""
    from rnnbench.errors import ConfigError

    try:
        return search_runs(experiments, filter_string)
    except MlflowException as exc:
        reason = exc.message.strip().rstrip(".") + "."
        if exc.error_code in ("INVALID_PARAMETER_VALUE", "BAD_REQUEST"):
            raise ConfigError(
                f"--filter {filter_string!r} is not a valid MLflow filter: {reason} "
                f"Write it like tags.cell = 'lstm' and params.model.units = '64' and "
                f"metrics.test_mse < 1.") from None
        raise TrackingError(f"reading runs failed: {exc.message}") from None


# ---- sweeps (rnnbench.tuning) -------------------------------------------------------------

def open_run(experiment: str, run_name: str, tags: dict[str, Any]) -> Run:
    """Create a run that stays open across calls (a sweep's parent run); close it with
    :meth:`Run.end` or :func:`close_run`."""
    experiment_id = ensure_experiment(experiment)
    clean = {k: str(v) for k, v in tags.items() if v is not None}
    return Run(_create_run(experiment_id, run_name, clean), experiment_id)


@retry_locked
def reopen_run(run_id: str) -> Run:
    """Mark an ended run RUNNING again (a resumed sweep's parent run) and return it."""
    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    if run.info.status != "RUNNING":
        client.update_run(run_id, status="RUNNING")
    return Run(run_id, run.info.experiment_id)


@retry_locked
def child_runs(parent_run_id: str, filter_string: str = "") -> list:
    """Runs nested under ``parent_run_id`` (oldest first), optionally filtered further."""
    parent = get_run(parent_run_id)
    if parent is None:
        return []
    name = mlflow.MlflowClient().get_experiment(parent.info.experiment_id).name
    query = f"tags.`mlflow.parentRunId` = '{parent_run_id}'"
    if filter_string:
        query += f" and {filter_string}"
    return search_runs([name], query)


@retry_locked
def init_sqlite_store(uri: str) -> None:
    """Open a SQLite store under an exclusive lock on its folder. Processes that open a
    new store at the same moment (the jobs of a parallel multirun) would otherwise all run
    MLflow's schema migration at once, and all but one fail."""
    if not uri.startswith("sqlite:///"):
        return
    try:
        import fcntl
    except ImportError:  # not POSIX: no parallel jobs to guard against
        return
    folder = Path(uri[len("sqlite:///"):]).resolve().parent
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # a file system without locks (some network mounts): go on
            pass
        mlflow.MlflowClient(uri).search_experiments(max_results=1)  # creates the tables
    finally:
        os.close(fd)  # closing the descriptor releases the lock


# ---- several steps in one write (rnnbench.diagnostics) -------------------------------------

@retry_locked
def log_metric_steps(run: Run, rows: list[tuple[int, dict[str, float]]]) -> None:
    """Log the metrics of several steps, ``[(step, {name: value})]``, in one write (a
    write to the store costs about 5 ms of CPU time whatever it holds)."""
    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, step) for step, metrics in rows
             for k, v in metrics.items() if v is not None]
    for i in range(0, len(items), 500):
        run.client.log_batch(run.run_id, metrics=items[i:i + 500])


# ---- MLflow's own conventions: system metrics, models, sweeps ---------------------------

def start_system_metrics(run_id: str) -> Any | None:
    """MLflow's system metrics monitor (CPU, memory, disk, network, GPU under
    ``system/``) for the run, when ``MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING`` is true (or
    ``mlflow.enable_system_metrics_logging()`` was called). MLflow starts it only for
    runs of ``mlflow.start_run``; rnnbench's runs are made by the client."""
    from mlflow.environment_variables import MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING

    if not MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING.get():
        return None
    import importlib.util

    if importlib.util.find_spec("psutil") is None:
        raise TrackingError("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING is set but psutil is not "
                            "installed: pip install psutil, or unset the variable.")
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(run_id)
    monitor.start()
    return monitor


@retry_locked
def log_model(run: Run, model: Any, name: str = "model") -> None:
    """Log a Keras model to ``run`` as an MLflow model (Keras flavour, pyfunc, signature);
    it loads with ``mlflow.pyfunc.load_model("runs:/<run id>/<name>")``."""
    from rnnbench import mlflow_model

    mlflow_model.log_model(run.run_id, run.experiment_id, model, name)


SWEEPS_TAG = "sweep_ids"  # every sweep a run belongs to: ";<id>;<id>;"


def sweeps_tag(sweep_id: str, existing: str | None = None) -> str:
    """The ``sweep_ids`` tag value with ``sweep_id`` added."""
    ids = [s for s in (existing or "").split(";") if s]
    if sweep_id not in ids:
        ids.append(sweep_id)
    return ";" + ";".join(ids) + ";"


@retry_locked
def link_to_sweep(run_id: str, sweep_id: str) -> None:
    """Count a FINISHED run that a later sweep reused (``skip_finished``) in that sweep too:
    its ``sweep_ids`` tag gets the new sweep's id (``sweep_id`` keeps the first)."""
    client = mlflow.MlflowClient()
    tags = client.get_run(run_id).data.tags
    value = sweeps_tag(sweep_id, tags.get(SWEEPS_TAG) or tags.get("sweep_id"))
    if value != tags.get(SWEEPS_TAG):
        client.set_tag(run_id, SWEEPS_TAG, value)
