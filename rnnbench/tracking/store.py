"""The MLflow store: which URIs are accepted, the checks that refuse an unusable store
before MLflow touches it, pointing MLflow at it (for writing or for reading), making a
new SQLite store safely, and the retries that ride out a store locked by another
process.

SQLite stores shared by several processes may answer "database is locked"; every
call of this package retries those with backoff instead of losing the write.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import mlflow
import tenacity
from mlflow.exceptions import MlflowException

from rnnbench.errors import TrackingError
from rnnbench.redaction import redact as redact_uri
from rnnbench.redaction import restore_password, split_credentials
from rnnbench.tracking.template import empty_store_template, open_once

T = TypeVar("T")
LOCK_RETRIES = 12


def _is_locked(exc: BaseException) -> bool:
    text = str(exc).lower()
    return ("database is locked" in text or "database table is locked" in text
            # two processes adding the same dataset to an experiment at once: MLflow looks
            # it up, then inserts it, and the later insert fails; a retry finds it there
            or ("unique constraint failed: datasets." in text)
            or ("duplicate key" in text and "dataset_pk" in text))


def _is_disk_full(exc: BaseException) -> bool:
    return "database or disk is full" in str(exc).lower()


class _RetriedLockFilter(logging.Filter):
    """Drop MLflow's ERROR record (with a whole SQLAlchemy traceback) of a "database is
    locked" answer: :func:`retry_locked` retries those, and says so itself when the lock
    outlasts its retries. The same for a full disk under a SQLite store: the run spools
    its writes and says so in one message. Every other record passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (exc is not None and (_is_locked(exc) or _is_disk_full(exc)))


_LOCK_FILTER = _RetriedLockFilter()


def quiet_retried_locks() -> None:
    """Install :class:`_RetriedLockFilter` on MLflow's SQL store logger (idempotent)."""
    logger = logging.getLogger("mlflow.store.db.utils")
    if _LOCK_FILTER not in logger.filters:
        logger.addFilter(_LOCK_FILTER)


def _backoff(attempts: int, when: Callable[[BaseException], bool]) -> Any:
    """Retry while ``when(exception)``: jittered exponential waits from 0.05 s up to 2 s,
    at most ``attempts`` tries, then the last exception itself."""
    return tenacity.retry(retry=tenacity.retry_if_exception(when),
                          wait=tenacity.wait_random_exponential(multiplier=0.05, max=2.0),
                          stop=tenacity.stop_after_attempt(attempts), reraise=True)


def retry_locked(fn: Callable[..., T]) -> Callable[..., T]:
    """Retry ``fn`` while SQLite reports a lock held by another process (the exception is
    an MlflowException or SQLAlchemy's OperationalError)."""
    return functools.wraps(fn)(_backoff(LOCK_RETRIES, _is_locked)(fn))


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
    if _is_disk_full(exc):
        return TrackingError(redact_uri(
            f"{doing} the MLflow store {uri} failed: the disk that holds it is full "
            f"({reason[:200]}). Free space there, or give a store on another disk."))
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
    quiet_retried_locks()
    if os.environ.get(HTTP_RETRIES_ENV) in (None, _HTTP_SET.get(HTTP_RETRIES_ENV)):
        os.environ[HTTP_RETRIES_ENV] = _HTTP_SET[HTTP_RETRIES_ENV] = "3"
    global _WRITE_TIMEOUT_S
    _WRITE_TIMEOUT_S = timeout_s if uri.startswith(("http://", "https://")) else None
    mlflow.set_tracking_uri(real)
    try:
        init_sqlite_store(real)
        if sqlite_path(real) is None:
            _open_existing(real)  # a server that refuses the credentials says so now
    except TrackingError:
        raise
    except Exception as exc:  # SQLAlchemy / MLflow errors of a damaged store
        raise store_error(uri, exc, "opening") from None


#: MLflow's variables for its HTTP requests; the values this module gave them (a value
#: set by the user is left alone); ``tracking.timeout_s`` of a tracking server
HTTP_TIMEOUT_ENV = "MLFLOW_HTTP_REQUEST_TIMEOUT"
HTTP_RETRIES_ENV = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
_HTTP_SET: dict[str, str] = {}
_WRITE_TIMEOUT_S: float | None = None


@contextmanager
def bounded_requests() -> Iterator[None]:
    """Inside, every request to the tracking server gives up after about
    ``tracking.timeout_s``: two tries of half of it each. MLflow's own defaults (120 s
    per try and several retries) hold a run for many minutes on a server that accepts
    connections but does not answer (a frozen process); with this bound a write fails, the
    run spools and goes on. Only the run's own writes are bounded (other requests of the
    process keep MLflow's settings), and a variable the user set wins."""
    if _WRITE_TIMEOUT_S is None:
        yield
        return
    wanted = {HTTP_TIMEOUT_ENV: str(max(1, int(_WRITE_TIMEOUT_S / 2))), HTTP_RETRIES_ENV: "1"}
    ours = [k for k in wanted if os.environ.get(k) in (None, _HTTP_SET.get(k))]
    saved = {k: os.environ.get(k) for k in ours}
    for key in ours:
        os.environ[key] = wanted[key]
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def absolute_uri(uri: str) -> str:
    """``uri`` with a relative SQLite path made absolute (``sqlite:///mlflow.db`` names a
    different file in every folder); other URIs unchanged."""
    db = sqlite_path(uri)
    if db is None or db.is_absolute():
        return uri
    query = uri.split("?", 1)[1] if "?" in uri else ""
    return f"sqlite:///{db.resolve()}" + (f"?{query}" if query else "")


def same_store(a: str, b: str) -> bool:
    """Whether two URIs name the same store (SQLite paths compared resolved)."""
    def norm(uri: str) -> str:
        db = sqlite_path(uri)
        bare = split_credentials(redact_uri(uri))[0]
        return str(db.resolve()) if db is not None else bare.rstrip("/").lower()

    return norm(a) == norm(b)


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
    quiet_retried_locks()
    mlflow.set_tracking_uri(real)
    try:
        _open_existing(real)
    except Exception as exc:
        raise store_error(uri, exc, "reading") from None


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
            return _create_experiment(client, name)
        except MlflowException:
            exp = client.get_experiment_by_name(name)  # created by a parallel job
            if exp is None:
                raise
    elif exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    if EXPERIMENT_KIND[0] not in exp.tags:  # made by an older rnnbench, or by hand
        client.set_experiment_tag(exp.experiment_id, *EXPERIMENT_KIND)
    return exp.experiment_id


def _create_experiment(client: mlflow.MlflowClient, name: str) -> str:
    """A new experiment. In a SQLite store, its artifacts go to ``mlruns/<id>`` beside
    the database file: MLflow's own default is ``./mlruns`` of whatever folder the
    creating process runs in, which parts a store given by an absolute path from its
    artifacts (the same place when the store is ``sqlite:///mlflow.db``, the default)."""
    uri = mlflow.get_tracking_uri()
    db = sqlite_path(uri)
    if db is None:
        return client.create_experiment(name, tags=dict([EXPERIMENT_KIND]))
    from mlflow.entities import ExperimentTag
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore(uri, (db.resolve().parent / "mlruns").as_uri())
    return store.create_experiment(name, tags=[ExperimentTag(*EXPERIMENT_KIND)])


@retry_locked
def _create_run(experiment_id: str, run_name: str | None, tags: dict[str, str]) -> str:
    run = mlflow.MlflowClient().create_run(experiment_id, tags=tags, run_name=run_name)
    return run.info.run_id


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
    tmp = db.resolve().parent / f".{db.name}.{os.getpid()}.creating"
    tmp_uri = f"sqlite:///{tmp}"
    # MLflow's "Creating initial MLflow database tables" and alembic's migration steps
    # are INFO records of a store being made; a new store is not news
    for name in ("mlflow.store.db.utils", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        template = empty_store_template()
        if template is not None:
            try:  # MLflow adds the default experiment, with this folder's artifact root
                shutil.copyfile(template, tmp)
                open_once(tmp_uri)
            except Exception:  # a template that does not open: made anew below
                tmp.unlink(missing_ok=True)
                template.unlink(missing_ok=True)
                template = None
        if template is None:
            open_once(tmp_uri)  # MLflow's schema set-up: all its migrations
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
    def busy(exc: BaseException) -> bool:
        text = str(exc).lower()
        return _is_locked(exc) or any(
            part in text for part in ("already exists", "out-of-date", "no such table"))

    _backoff(attempts, busy)(lambda: mlflow.MlflowClient(uri).search_experiments(
        max_results=1))()
