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
import sys
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

from rnnbench import interrupt  # noqa: E402
from rnnbench.errors import TrackingError  # noqa: E402
from rnnbench.redaction import redact as redact_uri  # noqa: E402,F401
from rnnbench.redaction import restore_password, split_credentials  # noqa: E402

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
    raise TrackingError(redact_uri(
        f"the MLflow tracking server at {uri} did not answer within {timeout_s:g} s ({last}). "
        f"Start it with `mlflow server --host 127.0.0.1 --port <port>`, or pass "
        f"tracking.uri=<its address>, or use the local store with tracking=sqlite."))


STORE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks")


def check_uri(uri: str, key: str = "tracking.uri") -> None:
    """Refuse a URI under which runs would not be kept: no scheme (MLflow would take it
    for its deprecated file store), an unknown scheme, or an in-memory SQLite store
    (the record would vanish when the process ends)."""
    from rnnbench.errors import ConfigError

    shown = redact_uri(uri)
    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else ""
    if scheme not in STORE_SCHEMES:
        raise ConfigError(
            f"{key}={shown!r} is not a tracking URI rnnbench can keep runs in. Give "
            f"sqlite:///path/to/mlflow.db (a local file), postgresql://user@host/db, or "
            f"http://host:port (an MLflow server).")
    if scheme == "sqlite":
        path = uri.split("://", 1)[1]
        if path in ("", "/", "/:memory:") or ":memory:" in path or "mode=memory" in path:
            raise ConfigError(
                f"{key}={shown!r} is an in-memory SQLite store: everything logged to it "
                f"is lost when the process ends. Give a file, e.g. sqlite:///mlflow.db.")


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for other stores)."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):].split("?", 1)[0])


def check_sqlite_file(uri: str, write: bool) -> None:
    """Refuse, before MLflow touches it, a SQLite store it cannot use: a missing or
    read-only folder, a read-only file, a file that is not a SQLite database. (MLflow
    would retry a read-only folder for minutes, then print a SQLAlchemy traceback.)"""
    db = sqlite_path(uri)
    if db is None:
        return
    shown = redact_uri(uri)
    folder = db.resolve().parent
    if not folder.is_dir():
        raise TrackingError(f"tracking.uri={shown}: folder {folder} does not exist. Create "
                            f"it, or give a store in an existing folder.")
    if db.is_dir():
        raise TrackingError(f"tracking.uri={shown}: {db} is a folder, not a SQLite file. "
                            f"Give the path of the database file, e.g. {db / 'mlflow.db'}.")
    if db.exists():
        try:
            with open(db, "rb") as f:
                head = f.read(16)
        except OSError as exc:
            raise TrackingError(f"tracking.uri={shown}: {db} cannot be read "
                                f"({exc.strerror}). Fix its permissions.") from None
        if head and head != b"SQLite format 3\x00":
            raise TrackingError(
                f"tracking.uri={shown}: {db} is not a SQLite database (it may be damaged or "
                f"another kind of file). Move it aside and give a new store, e.g. "
                f"sqlite:///mlflow-new.db; runs logged to it are not readable by MLflow.")
        if write and not _writable_file(db):
            raise TrackingError(f"tracking.uri={shown}: {db} is read-only, so no run can be "
                                f"logged to it. Make it writable (chmod u+w) or give another "
                                f"store.")
    if write and not _writable_folder(folder):
        raise TrackingError(
            f"tracking.uri={shown}: folder {folder} is read-only; SQLite needs to write "
            f"the store and its journal there. Give a store in a writable folder, e.g. "
            f"tracking.uri=sqlite:///$HOME/mlflow.db.")


def _writable_file(path: Path) -> bool:
    try:  # opening for writing changes nothing; os.access would not see chattr +i
        with open(path, "r+b"):
            return True
    except OSError:
        return False


def _writable_folder(folder: Path) -> bool:
    try:
        fd, name = tempfile.mkstemp(prefix=".rnnbench-probe-", dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.unlink(name)
    return True


def connect_uri(uri: str) -> str:
    """The URI MLflow connects to: an http(s) URI's ``user:password@`` moves to MLflow's
    ``MLFLOW_TRACKING_USERNAME``/``PASSWORD`` (MLflow would take it for part of the host
    name); a database URI gets back a password taken off the command line."""
    bare, user, password = split_credentials(uri)
    if user:
        os.environ["MLFLOW_TRACKING_USERNAME"] = user
    if password:
        os.environ["MLFLOW_TRACKING_PASSWORD"] = password
    return restore_password(bare)


def store_error(uri: str, exc: BaseException, doing: str) -> TrackingError:
    """A one-paragraph TrackingError for a fault of the store itself (no traceback)."""
    reason = getattr(exc, "message", None) or str(exc)
    reason = " ".join(reason.split())[:400]
    if "401" in reason or "403" in reason or "unauthorized" in reason.lower():
        return TrackingError(redact_uri(
            f"{doing} the MLflow store {uri} failed: the server refused the credentials "
            f"({reason}). Give them as http://user:password@host, or in the environment "
            f"as MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD."))
    return TrackingError(redact_uri(
        f"{doing} the MLflow store {uri} failed: {type(exc).__name__}: {reason}. If it is a "
        f"SQLite file, check that it is an intact MLflow database in a writable folder "
        f"(or give a new one); if it is a server, check that it is up and reachable."))


def is_store_fault(exc: BaseException) -> bool:
    """Whether ``exc`` comes from the store (MLflow, SQLAlchemy, SQLite, HTTP), not from
    rnnbench itself."""
    from rnnbench.errors import RnnbenchError

    if isinstance(exc, RnnbenchError):
        return False
    root = type(exc).__module__.split(".", 1)[0]
    return isinstance(exc, MlflowException) or root in ("sqlalchemy", "sqlite3", "requests",
                                                        "urllib3")


@contextmanager
def store_faults(uri: str, doing: str) -> Iterator[None]:
    """Turn a fault of the store inside the block into a one-paragraph TrackingError."""
    try:
        yield
    except Exception as exc:
        if not is_store_fault(exc):
            raise
        raise store_error(uri, exc, doing) from None


def configure(uri: str, timeout_s: float = 15.0) -> None:
    """Point MLflow at ``uri`` after checking that it can be used for writing."""
    check_uri(uri)
    real = connect_uri(uri)
    check_reachable(split_credentials(uri)[0], timeout_s)
    check_sqlite_file(uri, write=True)
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = os.environ.get(
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    mlflow.set_tracking_uri(real)
    try:
        init_sqlite_store(real)
        if sqlite_path(real) is None:
            _open_existing(real)  # a server that refuses the credentials says so now
    except TrackingError:
        raise
    except Exception as exc:  # SQLAlchemy / MLflow errors of a damaged store
        raise store_error(uri, exc, "opening") from None


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
            if self.spool is not None:
                self.spool.acknowledged += 1


def _store_went_away(exc: BaseException) -> bool:
    """A write failed because the store is gone (a server that stopped answering, a
    database file that vanished or became unwritable), not because of what was written."""
    if isinstance(exc, MlflowException) and exc.error_code in (
            "INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS", "BAD_REQUEST"):
        return False
    return is_store_fault(exc) or isinstance(exc, (ConnectionError, OSError))


def apply_write(client: Any, run_id: str, op: dict[str, Any]) -> None:
    """Do one write of a run's record (as :class:`Run` and :func:`replay` describe it)."""
    kind = op["op"]
    if kind == "params":
        items = [Param(k, v) for k, v in op["params"].items()]
        for i in range(0, len(items), 100):
            client.log_batch(run_id, params=items[i:i + 100])
    elif kind == "metrics":
        items = [Metric(k, v, ts, step) for k, v, ts, step in op["rows"]]
        for i in range(0, len(items), 500):
            client.log_batch(run_id, metrics=items[i:i + 500])
    elif kind == "tags":
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in op["tags"].items()])
    elif kind == "artifact":
        client.log_artifact(run_id, op["path"], op["artifact_path"])
    elif kind == "dataset":
        from mlflow.data.http_dataset_source import HTTPDatasetSource
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import DatasetInput, InputTag

        source = op["source"]
        src = HTTPDatasetSource(url=source if "://" in source else f"pkg://{source}")
        dataset = MetaDataset(source=src, name=op["name"], digest=op["digest"][:36])
        input_tags = [InputTag(key="mlflow.data.context", value=op["context"])]
        input_tags += [InputTag(key=k, value=v) for k, v in op["tags"].items()]
        client.log_inputs(run_id, [DatasetInput(dataset._to_mlflow_entity(), input_tags)])
    elif kind == "end":
        client.set_terminated(run_id, op["status"])
    else:
        raise ValueError(f"unknown write {kind!r}")


SPOOL_DIR_ENV = "RNNBENCH_SPOOL"


class Spool:
    """A run's record kept on disk while the run is open: ``spool.json`` (where the run
    belongs) and ``writes.jsonl`` (every write, in order; artifacts copied beside). It
    is removed when the run ends with its record in the store, and kept when the store
    went away, for :func:`replay`."""

    def __init__(self, run_id: str, header: dict[str, Any]) -> None:
        root = Path(os.environ.get(SPOOL_DIR_ENV) or Path.cwd() / "rnnbench-spool")
        self.folder = root.resolve() / run_id
        self.folder.mkdir(parents=True, exist_ok=True)
        self.header = {**header, "run_id": run_id, "acknowledged": 0}
        self.acknowledged = 0
        self.count = 0
        self._save_header()

    def _save_header(self) -> None:
        self.header["acknowledged"] = self.acknowledged
        tmp = self.folder / "spool.json.tmp"
        tmp.write_text(json.dumps(self.header, indent=2, default=str))
        os.replace(tmp, self.folder / "spool.json")

    def append(self, op: dict[str, Any]) -> dict[str, Any]:
        if op["op"] == "artifact":  # keep a copy: the original may be a temporary file
            import shutil

            dst = self.folder / "artifacts" / str(self.count) / Path(op["path"]).name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(op["path"], dst)
            op = {**op, "path": str(dst)}
        with open(self.folder / "writes.jsonl", "a") as f:
            f.write(json.dumps(op) + "\n")
        self.count += 1
        return op

    def went_offline(self, reason: str) -> None:
        self.header["offline_reason"] = redact_uri(reason)
        self._save_header()

    def discard(self) -> None:
        import shutil

        shutil.rmtree(self.folder, ignore_errors=True)
        try:
            self.folder.parent.rmdir()  # the spool folder, when no other run is in it
        except OSError:
            pass


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
    any other exception (with the reason as a tag). Code inside may end it itself.

    The run's record is spooled on disk while it is open. When the store goes away
    mid-run, training goes on, and at the end a TrackingError says where the record is
    and which command logs it."""
    experiment_id = ensure_experiment(experiment)
    all_tags = {k: redact_uri(str(v)) for k, v in (tags or {}).items() if v is not None}
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    run_id = _create_run(experiment_id, run_name, all_tags)
    spool = Spool(run_id, {"uri": redact_uri(mlflow.get_tracking_uri()),
                           "experiment": experiment, "run_name": run_name, "tags": all_tags})
    run = Run(run_id, experiment_id, spool)
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
        interrupt.note_killed(run.run_id)
        _finish_spool(run, raise_error=False)
        raise
    except BaseException as exc:
        if run.ended is None and (
                run.offline or run_status(run.run_id) not in ("FAILED", "KILLED")):
            run.set_tags({"failure_reason": f"{type(exc).__name__}: {exc}"[:5000]})
            run.end("FAILED")
        _finish_spool(run, raise_error=False)
        raise
    else:
        if run.ended is None and (run.offline or run_status(run.run_id) == "RUNNING"):
            run.end("FINISHED")
        _finish_spool(run, raise_error=True)


def replay_command(spool: Spool) -> str:
    return f"rnnbench replay {spool.folder}"


def _finish_spool(run: Run, raise_error: bool) -> None:
    """Drop the spool of a run whose record is in the store; otherwise say where it is."""
    if run.spool is None:
        return
    if not run.offline:
        run.spool.discard()
        return
    message = redact_uri(
        f"the MLflow store {mlflow.get_tracking_uri()} stopped taking writes during run "
        f"{run.run_id} ({run.offline}). Nothing is lost: the run's params, metrics, tags "
        f"and artifacts (the model too) are saved in {run.spool.folder}. When the store is "
        f"back, log them with: {replay_command(run.spool)}  (add --tracking-uri URI for "
        f"another store; credentials come from MLFLOW_TRACKING_USERNAME/PASSWORD).")
    if raise_error:
        raise TrackingError(message)
    print(f"rnnbench: error: {message}", file=sys.stderr, flush=True)


def replay(folder: str | Path, uri: str | None = None, timeout_s: float = 15.0) -> str:
    """Log a spooled run (see :class:`Spool`) to its store, or to ``uri``. The writes the
    store already took are not repeated when the run is there; otherwise a new run gets
    the whole record (tag ``replayed_from``). Returns the run id; the spool is removed."""
    folder = Path(folder)
    try:
        header = json.loads((folder / "spool.json").read_text())
        lines = (folder / "writes.jsonl").read_text().splitlines()
        ops = [json.loads(line) for line in lines if line.strip()]
    except (OSError, ValueError) as exc:
        raise TrackingError(f"{folder} is not a run spooled by rnnbench ({exc}). Give the "
                            f"folder that the error message of the run named.") from None
    if "offline_reason" not in header:  # the store took every write: nothing to add
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
        raise TrackingError(f"{folder}: the store took every write of run "
                            f"{header.get('run_id')} (the process ended without losing "
                            f"its store): there is nothing to replay. The folder is removed.")
    target = uri or header["uri"]
    configure(target, timeout_s)
    with store_faults(target, "replaying into"):
        existing = get_run(header["run_id"])
        if existing is not None:
            run_id, todo = header["run_id"], ops[int(header.get("acknowledged", 0)):]
        else:
            experiment_id = ensure_experiment(header["experiment"])
            tags = {**header.get("tags", {}), "replayed_from": header["run_id"]}
            run_id = _create_run(experiment_id, header.get("run_name"), tags)
            todo = ops
        client = mlflow.MlflowClient()
        for op in todo:
            retry_locked(apply_write)(client, run_id, op)
        if not any(op["op"] == "end" for op in ops):  # the process died before the end
            client.set_tag(run_id, "failure_reason", "the process ended before the run")
            client.set_terminated(run_id, "FAILED")
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    return run_id


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
        client.set_tag(run_id, k, redact_uri(str(v)))
    client.set_terminated(run_id, status)


def find_finished(experiment: str, config_hash: str) -> list:
    """FINISHED runs of ``experiment`` whose config hash tag is ``config_hash``."""
    return search_runs([experiment], f"tags.config_hash = '{config_hash}'",
                       statuses=["FINISHED"])


# ---- reading for reports (rnnbench.report) ---------------------------------------------

def open_store(uri: str, timeout_s: float = 15.0) -> None:
    """Point MLflow at an existing store for reading: a SQLite file that is not there is
    refused (MLflow would silently create an empty one), a server must answer, and a
    damaged store is a TrackingError."""
    check_uri(uri, "--tracking-uri")
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        raise TrackingError(redact_uri(
            f"--tracking-uri {uri}: there is no MLflow store at {db.resolve()}. Pass the "
            f"store your runs were logged to (rnnbench writes sqlite:///mlflow.db in the "
            f"folder it ran in), or an http:// address of an MLflow server."))
    check_sqlite_file(uri, write=False)
    real = connect_uri(uri)
    check_reachable(split_credentials(uri)[0], timeout_s)
    mlflow.set_tracking_uri(real)
    try:
        _open_existing(real)
    except Exception as exc:
        raise store_error(uri, exc, "reading") from None


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
    clean = {k: redact_uri(str(v)) for k, v in tags.items() if v is not None}
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


def init_sqlite_store(uri: str) -> None:
    """Open a SQLite store, creating it first if it is not there.

    A new store is made whole before it appears under its name: MLflow's schema set-up
    runs on a temporary file in the same folder, under an exclusive lock on the folder,
    and the finished file is then linked to its name. Processes that open a new store at
    the same moment (the jobs of a parallel multirun, a run and ``mlflow ui`` or a
    script watching the file) would otherwise all run MLflow's migrations on the same
    file, and all but one fail with ``table _alembic_tmp_... already exists``."""
    db = sqlite_path(uri)
    if db is None:
        return
    folder = db.resolve().parent
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
        except (ImportError, OSError):  # not POSIX, or a file system without locks: go on
            pass
        if not db.exists():
            _create_sqlite_store(db)
        _open_existing(uri)
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _create_sqlite_store(db: Path) -> None:
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    tmp = db.resolve().parent / f".{db.name}.{os.getpid()}.creating"
    tmp_uri = f"sqlite:///{tmp}"
    try:
        mlflow.MlflowClient(tmp_uri).search_experiments(max_results=1)  # the schema
        engine = SqlAlchemyStore._engine_map.pop(tmp_uri, None)
        if engine is not None:
            engine.dispose()
        try:
            os.link(tmp, db)  # never replaces a store another program made meanwhile
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links
            if not db.exists():
                os.replace(tmp, db)
    finally:
        tmp.unlink(missing_ok=True)


def _open_existing(uri: str, attempts: int = 20) -> None:
    """Open the store once (MLflow checks its schema). A program that does not take the
    lock may still be creating it: wait for it rather than fail."""
    for attempt in range(attempts):
        try:
            mlflow.MlflowClient(uri).search_experiments(max_results=1)
            return
        except Exception as exc:
            text = str(exc).lower()
            busy = _is_locked(exc) or "already exists" in text or "out-of-date" in text \
                or "no such table" in text
            if not busy or attempt == attempts - 1:
                raise
            time.sleep(min(2.0, 0.05 * 2 ** attempt) * (0.5 + random.random()))


# ---- several steps in one write (rnnbench.diagnostics) -------------------------------------

def log_metric_steps(run: Run, rows: list[tuple[int, dict[str, float]]]) -> None:
    """Log the metrics of several steps, ``[(step, {name: value})]``, in one write (a
    write to the store costs about 5 ms of CPU time whatever it holds)."""
    now = int(time.time() * 1000)
    items = [[k, float(v), now, step] for step, metrics in rows
             for k, v in metrics.items() if v is not None]
    if items:
        run._write({"op": "metrics", "rows": items})


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
