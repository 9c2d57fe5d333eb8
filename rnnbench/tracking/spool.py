"""A run's record kept on disk while the run is open, so that a store that goes away
mid-run loses nothing: the writes as data (one JSON line each), how each is applied to
the store, and :func:`replay`, which logs a spooled run once the store is back.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, RunTag

from rnnbench.errors import TrackingError
from rnnbench.redaction import redact as redact_uri
from rnnbench.tracking import reading, store
from rnnbench.tracking.schema import Tags


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


def spool_root() -> Path:
    """The folder that holds the runs' spools (``$RNNBENCH_SPOOL``, else
    ``./rnnbench-spool``), created if missing. Called before a run is created in the
    store: a folder that cannot be made is refused then, with nothing recorded."""
    env = os.environ.get(SPOOL_DIR_ENV)
    root = Path(env or Path.cwd() / "rnnbench-spool").resolve()
    where = f"{SPOOL_DIR_ENV}={env}" if env else f"the spool folder {root}"
    fix = (f"Set {SPOOL_DIR_ENV} to a folder (it is created if missing), or unset it to use "
           f"./rnnbench-spool." if env else f"Move the file {root} aside, or set "
           f"{SPOOL_DIR_ENV} to a folder elsewhere.")
    blocker = next((p for p in (root, *root.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        what = "is a file" if blocker == root else f"is under {blocker}, a file"
        raise TrackingError(f"{where} {what}, not a folder: each run keeps its record there "
                            f"while it is open. {fix} Nothing was recorded.")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrackingError(f"{where}: the folder cannot be created ({exc.strerror}). "
                            f"Free space or fix the permissions there, or set "
                            f"{SPOOL_DIR_ENV} to a writable folder. Nothing was "
                            f"recorded.") from None
    return root


class Spool:
    """A run's record kept on disk while the run is open: ``spool.json`` (where the run
    belongs: its store's URI, absolute and without a password) and ``writes.jsonl``
    (every write, in order; artifacts copied beside, named relative to the folder so that
    a spool can be moved). It is removed when the run ends with its record in the store,
    and kept when the store went away, for :func:`replay`.

    A spool that cannot be written (its disk full) stops, without cutting a line, and the
    run goes on with the store alone: ``failed`` says why."""

    def __init__(self, run_id: str, header: dict[str, Any], root: Path | None = None) -> None:
        self.folder = (root or spool_root()) / run_id
        self.header = {**header, **store_header(header.get("uri", "")), "run_id": run_id,
                       "acknowledged": 0}
        self.acknowledged = 0
        self.count = 0
        self.failed: str | None = None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._fail(exc)
            return
        self._save_header()

    def _fail(self, exc: OSError) -> None:
        if self.failed is None:
            self.failed = f"{exc.strerror or exc}"
            print(f"rnnbench: warning: the run's spool {self.folder} cannot be written "
                  f"({self.failed}); the run goes on, writing to the MLflow store only. Free "
                  f"space there, or set {SPOOL_DIR_ENV} to a folder on another disk.",
                  file=sys.stderr, flush=True)

    def _save_header(self) -> None:
        if self.failed:
            return
        self.header["acknowledged"] = self.acknowledged
        tmp = self.folder / "spool.json.tmp"
        try:
            tmp.write_text(json.dumps(self.header, indent=2, default=str))
            os.replace(tmp, self.folder / "spool.json")
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            self._fail(exc)

    def append(self, op: dict[str, Any]) -> dict[str, Any]:
        """Keep ``op``; returns it as the store should get it (an artifact: its copy)."""
        if self.failed:
            return op
        kept, line_op = op, op
        if op["op"] == "artifact":  # keep a copy: the original may be a temporary file
            import shutil

            rel = Path("artifacts") / str(self.count) / Path(op["path"]).name
            try:
                (self.folder / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(op["path"], self.folder / rel)
            except OSError as exc:
                shutil.rmtree(self.folder / rel.parent, ignore_errors=True)
                self._fail(exc)
                return op
            kept, line_op = {**op, "path": str(self.folder / rel)}, {**op, "path": str(rel)}
        try:
            _append_line(self.folder / "writes.jsonl", json.dumps(line_op) + "\n")
        except OSError as exc:
            self._fail(exc)
            return op
        self.count += 1
        return kept

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


def _append_line(path: Path, line: str) -> None:
    """Append one whole line, or nothing: a write that fails half-way (a full disk) is
    cut back, so the file never ends in a partial line."""
    data = line.encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            done = 0
            while done < len(data):
                done += os.write(fd, data[done:])
        except OSError:
            os.ftruncate(fd, start)
            raise
    finally:
        os.close(fd)


def store_header(uri: str) -> dict[str, Any]:
    """Where a spool's run belongs: the store's URI, absolute (a relative SQLite path
    names another file in another folder) and without its password, and where the
    credentials come from when it needs some (never the password itself)."""
    from rnnbench.redaction import DB_PASSWORD_ENV, HTTP_PASSWORD_ENV, HTTP_USER_ENV, MASK

    uri = redact_uri(store.absolute_uri(uri))
    header: dict[str, Any] = {"uri": uri}
    if uri.startswith(("http://", "https://")) and os.environ.get(HTTP_USER_ENV):
        header["credentials"] = (f"user {os.environ[HTTP_USER_ENV]}, password from "
                                 f"{HTTP_PASSWORD_ENV}")
    elif f":{MASK}@" in uri:
        header["credentials"] = f"password from {DB_PASSWORD_ENV}"
    return header


def replay_command(spool: Spool) -> str:
    return f"rnnbench replay {spool.folder}"

def finish_spool(run: Any, raise_error: bool) -> None:
    """Drop the spool of a run (a :class:`rnnbench.tracking.runs.Run`) whose record is in
    the store; otherwise say where it is."""
    if run.spool is None:
        return
    if not run.offline:
        run.spool.discard()
        return
    kept = (f"Nothing is lost: the run's params, metrics, tags and artifacts (the model too) "
            f"are saved in {run.spool.folder}." if not run.spool.failed else
            f"The spool {run.spool.folder} could not be written ({run.spool.failed}): it "
            f"holds the record up to that point only; what came after is lost.")
    message = redact_uri(
        f"the MLflow store {mlflow.get_tracking_uri()} stopped taking writes during run "
        f"{run.run_id} ({run.offline}). {kept} When the store is "
        f"back, log them with: {replay_command(run.spool)}  (add --tracking-uri URI for "
        f"another store; credentials come from MLFLOW_TRACKING_USERNAME/PASSWORD).")
    if raise_error:
        raise TrackingError(message)
    print(f"rnnbench: error: {message}", file=sys.stderr, flush=True)


#: The failure reason of a replayed run whose process ended before the run did (SIGKILL,
#: a lost machine): its spool has no `end` write.
KILLED_REASON = "the process was killed before the run ended (its spool was replayed)"


def read_spool(folder: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A spool's header and writes. A last line cut short (the process or the disk died
    while writing it) is left out, saying so; any other damage is a TrackingError."""
    try:
        header = json.loads((folder / "spool.json").read_text())
        text = (folder / "writes.jsonl").read_text() if (folder / "writes.jsonl").exists() \
            else ""
        if not isinstance(header, dict) or "run_id" not in header:
            raise ValueError("spool.json names no run")
    except (OSError, ValueError) as exc:
        raise TrackingError(f"{folder} is not a run spooled by rnnbench ({exc}). Give the "
                            f"folder that the error message of the run named.") from None
    lines = text.split("\n")
    ops = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            ops.append(json.loads(line))
        except ValueError as exc:
            if number == len(lines):  # no newline after it: it was never finished
                print(f"rnnbench: warning: {folder / 'writes.jsonl'}: the last line "
                      f"(line {number}) was cut short while it was written; replaying the "
                      f"{len(ops)} complete writes before it.", file=sys.stderr, flush=True)
                break
            raise TrackingError(f"{folder / 'writes.jsonl'}, line {number}, is damaged "
                                f"({exc}). The spool cannot be replayed past it; the folder "
                                f"is kept.") from None
    return header, ops


def _local_artifacts(folder: Path, ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The writes with each artifact found in this folder (a spool may have been copied or
    moved: its paths are relative to it; older spools hold absolute paths). An artifact
    that is not there is a TrackingError naming it, before anything is written."""
    out = []
    for op in ops:
        if op.get("op") == "artifact":
            given = Path(op["path"])
            tail = Path(*given.parts[-3:]) if given.is_absolute() else given
            places = (folder / tail, given) if given.is_absolute() else (folder / tail,)
            found = next((p for p in places if p.is_file()), None)
            if found is None:
                name = "/".join(x for x in (op.get("artifact_path"), given.name) if x)
                raise TrackingError(f"{folder}: the artifact {name} of this run is missing "
                                    f"(looked for {folder / tail}). Copy the spool folder "
                                    f"whole, with its artifacts/ folder; the folder is kept.")
            op = {**op, "path": str(found)}
        out.append(op)
    return out


def _check_own_store(folder: Path, uri: str) -> None:
    """Before replaying into the store a spool names: the store must be there (MLflow
    would make an empty SQLite file) and its password must be at hand."""
    from rnnbench.redaction import DB_PASSWORD_ENV, MASK

    db = store.sqlite_path(uri)
    if db is not None and not db.exists():  # (older spools hold a relative path)
        raise TrackingError(
            f"{folder} belongs to the store {uri}, and there is no MLflow store at "
            f"{db.resolve()}. "
            f"Give the store the run was logged to with --tracking-uri "
            f"sqlite:////absolute/path/mlflow.db; the folder is kept.")
    if f":{MASK}@" in uri and not os.environ.get(DB_PASSWORD_ENV):
        raise TrackingError(
            f"{folder} belongs to the store {uri}, whose password is not kept in the spool. "
            f"Set {DB_PASSWORD_ENV}, or give --tracking-uri with the password; the folder "
            f"is kept.")


def replay(folder: str | Path, uri: str | None = None, timeout_s: float = 15.0) -> str:
    """Log a spooled run (see :class:`Spool`) to the store it names, or to ``uri``. The
    writes the store already took are not repeated when the run is there; a store without
    the run gets the whole record as a new run (tag ``replayed_from``), but only when
    given as ``uri``: the run's own store without it is another store under the same name,
    and is refused. Returns the run id; the spool is removed once its record is in."""
    folder = Path(folder).resolve()
    header, ops = read_spool(folder)
    own = header.get("uri", "")
    if uri is None:
        _check_own_store(folder, own)
    target = uri or own
    store.configure(target, timeout_s)
    with store.store_faults(target, "replaying into"):
        existing = reading.get_run(header["run_id"])
    if existing is None and (uri is None or store.same_store(uri, own)):
        raise TrackingError(redact_uri(
            f"run {header['run_id']} of {folder} is not in {target}, the store the spool was "
            f"written to: that store was replaced or emptied since. Nothing was written and "
            f"the folder is kept. To log the record as a new run, give the store with "
            f"--tracking-uri."))
    if existing is not None and "offline_reason" not in header:
        return _close_killed(folder, header, ops, target)  # the store took every write
    with store.store_faults(target, "replaying into"):
        if existing is not None:
            run_id, todo = header["run_id"], ops[int(header.get("acknowledged", 0)):]
        else:
            experiment_id = store.ensure_experiment(header["experiment"])
            tags = {**header.get("tags", {}), Tags.REPLAYED_FROM: header["run_id"]}
            run_id = store._create_run(experiment_id, header.get("run_name"), tags)
            todo = ops
        todo = _local_artifacts(folder, todo)
        client = mlflow.MlflowClient()
        for op in todo:
            store.retry_locked(apply_write)(client, run_id, op)
        if not any(op["op"] == "end" for op in ops):  # the process died before the end
            # the same status and reason as a killed run whose store took every write
            client.set_tag(run_id, Tags.FAILURE_REASON, KILLED_REASON)
            client.set_terminated(run_id, "KILLED")
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    return run_id


def _close_killed(folder: Path, header: dict[str, Any], ops: list[dict[str, Any]],
                  target: str) -> str:
    """The spool of a run whose store took every write (the run is in ``target``). When
    its process was killed (SIGKILL, a lost machine) before the run ended, the store
    still shows the run RUNNING: close it as KILLED with the reason, so that reports and
    resumed sweeps do not take it for a live run. Either way the folder is removed."""
    import shutil

    run_id = header["run_id"]
    ended = any(op["op"] == "end" for op in ops)
    closed = False
    if not ended:
        with store.store_faults(target, "closing a run in"):
            run = reading.get_run(run_id)
            if run is not None and run.info.status == "RUNNING":
                client = mlflow.MlflowClient()
                store.retry_locked(client.set_tag)(run_id, Tags.FAILURE_REASON, KILLED_REASON)
                store.retry_locked(client.set_terminated)(run_id, "KILLED")
                closed = True
    shutil.rmtree(folder, ignore_errors=True)
    if closed:
        print(f"rnnbench: run {run_id} was left RUNNING by a process that was killed; "
              f"the store had every write it made. It is now closed as KILLED.",
              file=sys.stderr, flush=True)
        return run_id
    raise TrackingError(f"{folder}: the store took every write of run {run_id} and the "
                        f"run is closed: there is nothing to replay. The folder is removed.")
