"""Writing the record: a run opened and closed around a block (a training run), runs
that stay open across calls (a sweep's parent), and what is logged to them, MLflow's
system metrics and models included.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import mlflow
from mlflow.exceptions import MlflowException

from rnnbench import interrupt
from rnnbench.errors import TrackingError
from rnnbench.redaction import redact as redact_uri
from rnnbench.tracking import reading, store
from rnnbench.tracking.schema import Tags
from rnnbench.tracking.spool import Spool, apply_write, finish_spool, spool_root
from rnnbench.tracking.store import is_store_fault, retry_locked

MAX_PARAM_LEN = 6000


class Run:
    """An open MLflow run. All writes go through the client with explicit run ids, so
    several runs (a sweep and its trials) can be open in one process.

    With a ``spool`` (every training run has one), each write is also kept on disk. When
    the store stops answering (a tracking server that died), the run goes on writing to
    the spool only, and :func:`replay` logs the rest once the store is back."""

    def __init__(self, run_id: str, experiment_id: str, spool: "Spool | None" = None) -> None:
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.client = mlflow.MlflowClient()
        self.spool = spool
        self.offline: str | None = None  # why the store stopped taking writes
        self.ended: str | None = None  # the status this object closed the run with

    def log_params(self, params: dict[str, Any]) -> None:
        self._write({"op": "params", "params": {k: redact_uri(_param_value(v))
                                                for k, v in params.items()}})

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        now = int(time.time() * 1000)
        self._write({"op": "metrics", "rows": [[k, float(v), now, step or 0]
                                               for k, v in metrics.items() if v is not None]})

    def set_tags(self, tags: dict[str, Any]) -> None:
        items = {k: redact_uri(str(v)) for k, v in tags.items() if v is not None}
        if items:
            self._write({"op": "tags", "tags": items})

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._write({"op": "artifact", "path": str(path), "artifact_path": artifact_path})

    def log_text(self, text: str, artifact_file: str) -> None:
        self._log_bytes(redact_uri(text).encode(), artifact_file)

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

    def log_dataset(self, name: str, source: str, digest: str, context: str,
                    tags: dict[str, str]) -> None:
        """Record a data set as an MLflow dataset input (origin, licence, size, digest)."""
        self._write({"op": "dataset", "name": name, "source": source, "digest": digest,
                     "context": context, "tags": {k: str(v) for k, v in tags.items()}})

    def end(self, status: str = "FINISHED") -> None:
        self._write({"op": "end", "status": status})
        self.ended = status

    def _write(self, op: dict[str, Any]) -> None:
        if self.spool is not None:
            op = self.spool.append(op)
        if self.offline:
            return
        try:
            with store.bounded_requests():  # tracking.timeout_s, not MLflow's minutes
                retry_locked(apply_write)(self.client, self.run_id, op)
        except Exception as exc:
            if self.spool is None or not _store_went_away(exc):
                raise
            self.offline = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
            self.spool.went_offline(self.offline)
            print(redact_uri(
                f"rnnbench: warning: the MLflow store {mlflow.get_tracking_uri()} stopped "
                f"taking writes ({self.offline}). Training goes on; this run's record is "
                f"kept in {self.spool.folder}."), file=sys.stderr, flush=True)
        else:
            if self.spool is not None and not self.spool.failed:
                self.spool.acknowledged += 1


def _status(run_id: str) -> str:
    """The run's status in the store; RUNNING when the store does not answer (so the run
    is closed by a write, which the spool keeps if the store is gone)."""
    try:
        with store.bounded_requests():
            return reading.run_status(run_id)
    except Exception as exc:
        if not _store_went_away(exc):
            raise
        return "RUNNING"


def _store_went_away(exc: BaseException) -> bool:
    """A write failed because the store is gone (a server that stopped answering, a
    database file that vanished or became unwritable), not because of what was written."""
    if isinstance(exc, MlflowException) and exc.error_code in (
            "INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS", "BAD_REQUEST"):
        return False
    return is_store_fault(exc) or isinstance(exc, (ConnectionError, OSError))


def _param_value(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text if len(text) <= MAX_PARAM_LEN else text[: MAX_PARAM_LEN - 3] + "..."


@contextmanager
def start_run(experiment: str, run_name: str | None = None, tags: dict[str, Any] | None = None,
              parent_run_id: str | None = None) -> Iterator[Run]:
    """Open a run; close it FINISHED on success, KILLED on Ctrl-C or SIGTERM, FAILED on
    any other exception (with the reason as a tag). Code inside may end it itself.

    The run's record is spooled on disk while it is open. When the store goes away
    mid-run, training goes on, and at the end a TrackingError says where the record is
    and which command logs it."""
    root = spool_root()  # a spool folder that cannot be made is refused before the run
    with store.store_faults(mlflow.get_tracking_uri(), "creating a run in"):  # a full disk
        experiment_id = store.ensure_experiment(experiment)
    all_tags = {k: redact_uri(str(v)) for k, v in (tags or {}).items() if v is not None}
    if parent_run_id:
        all_tags[Tags.PARENT_RUN_ID] = parent_run_id
    with interrupt.deferred() as held:  # a stop request now is honoured below: KILLED
        with store.store_faults(mlflow.get_tracking_uri(), "creating a run in"):
            run_id = store._create_run(experiment_id, run_name, all_tags)
        spool = Spool(run_id, {"uri": redact_uri(mlflow.get_tracking_uri()),
                               "experiment": experiment, "run_name": run_name, "tags": all_tags},
                      root)
        run = Run(run_id, experiment_id, spool)
        monitor = start_system_metrics(run.run_id)
    try:
        try:
            if held.signalled:
                interrupt.raise_if_requested()
            yield run
            interrupt.raise_if_requested()  # one whose exception something swallowed
        except Exception as exc:
            # A stop request that landed in library code can come out as another error
            # (TensorFlow turns a KeyboardInterrupt raised in Python code it called into
            # one of its own): the run was stopped, not broken.
            if interrupt.requested() is None:
                raise
            raise KeyboardInterrupt(f"{interrupt.requested()} received") from exc
        finally:
            if monitor is not None:
                monitor.finish()
    except KeyboardInterrupt:
        with interrupt.deferred():  # a second signal must not leave the run RUNNING
            run.set_tags({Tags.FAILURE_REASON: interrupt.reason()})
            run.end("KILLED")
            interrupt.note_killed(run.run_id)
            finish_spool(run, raise_error=False)
        raise
    except BaseException as exc:
        if run.ended is None and (
                run.offline or _status(run.run_id) not in ("FAILED", "KILLED")):
            run.set_tags({Tags.FAILURE_REASON: f"{type(exc).__name__}: {exc}"[:5000]})
            run.end("FAILED")
        finish_spool(run, raise_error=False)
        raise
    else:
        if run.ended is None and (run.offline or _status(run.run_id) == "RUNNING"):
            run.end("FINISHED")
        finish_spool(run, raise_error=True)


def open_run(experiment: str, run_name: str, tags: dict[str, Any]) -> Run:
    """Create a run that stays open across calls (a sweep's parent run); close it with
    :meth:`Run.end` or :func:`close_run`."""
    experiment_id = store.ensure_experiment(experiment)
    clean = {k: redact_uri(str(v)) for k, v in tags.items() if v is not None}
    return Run(store._create_run(experiment_id, run_name, clean), experiment_id)


@retry_locked
def reopen_run(run_id: str) -> Run:
    """Mark an ended run RUNNING again (a resumed sweep's parent run) and return it."""
    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    if run.info.status != "RUNNING":
        client.update_run(run_id, status="RUNNING")
    return Run(run_id, run.info.experiment_id)


def log_metric_steps(run: Run, rows: list[tuple[int, dict[str, float]]]) -> None:
    """Log the metrics of several steps, ``[(step, {name: value})]``, in one write (a
    write to the store costs about 5 ms of CPU time whatever it holds)."""
    now = int(time.time() * 1000)
    items = [[k, float(v), now, step] for step, metrics in rows
             for k, v in metrics.items() if v is not None]
    if items:
        run._write({"op": "metrics", "rows": items})


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
def log_model(run: Run, model: Any, name: str = "model", task: Any = None,
              data: Any = None) -> None:
    """Log a Keras model to ``run`` as an MLflow model (Keras flavour, pyfunc, signature);
    it loads with ``mlflow.pyfunc.load_model("runs:/<run id>/<name>")``. With the run's
    ``task`` and ``data``, the pyfunc wraps the task's normalisation (raw inputs in,
    values in the data's units out)."""
    if run.offline:  # the store is gone: model/model.keras is in the spool, for replay
        raise TrackingError(f"the MLflow store stopped taking writes ({run.offline}); the "
                            f"Keras file model/model.keras is kept in the run's spool")
    from rnnbench import mlflow_model

    with store.bounded_requests():
        mlflow_model.log_model(run.run_id, run.experiment_id, model, name, task, data)
