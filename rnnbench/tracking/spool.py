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
    message = redact_uri(
        f"the MLflow store {mlflow.get_tracking_uri()} stopped taking writes during run "
        f"{run.run_id} ({run.offline}). Nothing is lost: the run's params, metrics, tags "
        f"and artifacts (the model too) are saved in {run.spool.folder}. When the store is "
        f"back, log them with: {replay_command(run.spool)}  (add --tracking-uri URI for "
        f"another store; credentials come from MLFLOW_TRACKING_USERNAME/PASSWORD).")
    if raise_error:
        raise TrackingError(message)
    print(f"rnnbench: error: {message}", file=sys.stderr, flush=True)


#: The failure reason of a replayed run whose process ended before the run did (SIGKILL,
#: a lost machine): its spool has no `end` write.
KILLED_REASON = "the process was killed before the run ended (its spool was replayed)"


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
    target = uri or header["uri"]
    if "offline_reason" not in header:  # the store took every write: nothing to add
        return _close_killed(folder, header, ops, target, timeout_s)
    store.configure(target, timeout_s)
    with store.store_faults(target, "replaying into"):
        existing = reading.get_run(header["run_id"])
        if existing is not None:
            run_id, todo = header["run_id"], ops[int(header.get("acknowledged", 0)):]
        else:
            experiment_id = store.ensure_experiment(header["experiment"])
            tags = {**header.get("tags", {}), Tags.REPLAYED_FROM: header["run_id"]}
            run_id = store._create_run(experiment_id, header.get("run_name"), tags)
            todo = ops
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
                  target: str, timeout_s: float) -> str:
    """The spool of a run whose store took every write. When its process was killed
    (SIGKILL, a lost machine) before the run ended, the store still shows the run
    RUNNING: close it as KILLED with the reason, so that reports and resumed sweeps do
    not take it for a live run. Either way the folder is removed."""
    import shutil

    run_id = header.get("run_id")
    ended = any(op["op"] == "end" for op in ops)
    closed = False
    if not ended:
        store.configure(target, timeout_s)
        with store.store_faults(target, "closing a run in"):
            run = reading.get_run(run_id) if run_id else None
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
