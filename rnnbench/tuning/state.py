"""The search state of a sweep on disk, ``<tuner.directory>/<sweep id>/``: where it may
be (checked paths), who may write it (one process: a lock), what it was made for (a
marker with the search space), how it is written (whole files only) and how a damaged
one is reported.

keras-tuner keeps ``oracle.json``, ``<tuner id>.json`` and ``trial_*/trial.json`` there;
rnnbench adds ``mlflow_sweep.json`` (the MLflow parent run) and :data:`MARKER`. Beside
the folder, ``<sweep id>.lock`` holds the pid of the process running the sweep.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
from pathlib import Path
from typing import Any, Iterator

from rnnbench import paths
from rnnbench.errors import ConfigError, DataError

MARKER = "rnnbench_sweep.json"
PARENT_FILE = "mlflow_sweep.json"
FRESH_FIX = ("Start the sweep afresh with tuner.overwrite=true (the MLflow runs of its "
             "trials stay), or start a new one beside it with tuner.project=<new name>.")


class SweepBusy(DataError):
    """Another live process is running the same sweep."""


@contextlib.contextmanager
def writing(folder: Path | str, what: str) -> Iterator[None]:
    """Turn an OSError while writing ``what`` under ``folder`` into a DataError that
    names the folder and the fix."""
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            fix = "free space on that disk"
        elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            fix = f"make {folder} writable or point tuner.directory at a writable folder"
        else:
            fix = "fix the folder or point tuner.directory elsewhere"
        raise DataError(
            f"cannot write {what} in {folder} ({reason}); {fix}, then run the same command "
            "again: the search resumes from its last complete state.") from None


def save_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path``, whole or not at all."""
    path = Path(path)
    with writing(path.parent, path.name):
        paths.atomic_write_text(path, json.dumps(obj))


def project_folder(directory: str, sweep_id: str, explicit: bool) -> Path:
    """``<directory>/<sweep_id>`` resolved, refused when it is not strictly inside
    ``directory``. Makes ``directory`` (DataError when it cannot)."""
    key = "tuner.project" if explicit else "tuner.project (derived from tracking.experiment)"
    path = paths.inside(directory, sweep_id, key,
                        "Set tuner.project=<a plain name>, e.g. tuner.project=my_sweep.")
    with writing(path.parent, "the folder of tuner.directory"):
        path.parent.mkdir(parents=True, exist_ok=True)
    return path


class SweepLock:
    """One process per sweep: an exclusive ``flock`` on ``<sweep id>.lock`` beside the
    search state, released by the kernel when its process ends, so a lock left by a
    dead process is simply taken over. The file holds the holder's pid and host, for
    the message of the process that is refused.

    Args:
        project_dir: the sweep's folder (from :func:`project_folder`).
    """

    def __init__(self, project_dir: Path) -> None:
        self.path = project_dir.parent / f"{project_dir.name}.lock"
        self.fd: int | None = None

    def acquire(self) -> "SweepLock":
        import fcntl

        with writing(self.path.parent, self.path.name):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").split()
            os.close(fd)
            pid = holder[0] if holder else "?"
            host = holder[1] if len(holder) > 1 else socket.gethostname()
            raise SweepBusy(
                f"another process (pid {pid} on {host}) is running this sweep "
                f"({self.path.parent / self.path.stem}); a second one would run every trial "
                "twice. Wait for it to end, or stop it and run the same command again (it "
                "resumes). To run trials in parallel, start the sweep as a chief "
                "(tuner.distributed.role=chief) and add workers (tuner.distributed."
                "role=worker tuner.distributed.address=<chief host>).") from None
        with writing(self.path.parent, self.path.name):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock; the file stays (no race on it)
            self.fd = None

    def __enter__(self) -> "SweepLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def clear(project_dir: Path) -> bool:
    """``tuner.overwrite=true``: delete the sweep's own folder, only when rnnbench made
    it (it holds :data:`MARKER` or ``mlflow_sweep.json``); an empty folder goes too."""
    if project_dir.is_dir() and not project_dir.is_symlink() and not any(project_dir.iterdir()):
        project_dir.rmdir()
        return True
    fix = ("Choose another tuner.project or tuner.directory, or move that folder away "
           "yourself.")
    with writing(project_dir.parent, f"(deleting) {project_dir.name}"):
        return paths.remove_made_folder(project_dir, (MARKER, PARENT_FILE),
                                        "tuner.overwrite=true", fix)


def _load(path: Path, what: str) -> Any:
    try:
        text = path.read_text()
    except OSError as exc:
        raise DataError(f"cannot read {what} {path} ({exc.strerror or exc}); make it "
                        f"readable, or: {FRESH_FIX}") from None
    try:
        return json.loads(text)
    except ValueError:
        state = "empty" if not text.strip() else f"cut short or damaged ({len(text)} bytes)"
        raise DataError(
            f"{what} {path} is {state} (written when the disk was full, or the process "
            f"was killed while writing it), so the search cannot resume from it. "
            f"{FRESH_FIX}") from None


def check_saved(project_dir: Path, tuner_id: str) -> None:
    """Before keras-tuner reloads a search: every state file it will read must be whole
    JSON (DataError naming the file, and the trial, otherwise)."""
    oracle = _load(project_dir / "oracle.json", "the search state")
    trials = set()
    for trial_file in sorted(project_dir.glob("trial_*/trial.json")):
        trial_id = trial_file.parent.name[len("trial_"):]
        what = f"the state of trial {trial_id} (trial {int(trial_id) + 1})" \
            if trial_id.isdigit() else "the trial state"
        data = _load(trial_file, what)
        if not isinstance(data, dict) or "hyperparameters" not in data:
            raise DataError(f"{what} {trial_file} is not a keras-tuner trial; {FRESH_FIX}")
        trials.add(str(data.get("trial_id")))
    tuner_file = project_dir / f"{tuner_id}.json"
    if tuner_file.is_file():
        _load(tuner_file, "the tuner state")
    if not isinstance(oracle, dict):
        raise DataError(f"the search state {project_dir / 'oracle.json'} is not keras-tuner's; "
                        f"{FRESH_FIX}")
    named = set(map(str, oracle.get("end_order", []))) | set(
        map(str, (oracle.get("ongoing_trials") or {}).values()))
    missing = sorted(named - trials)
    if missing:
        raise DataError(
            f"the search state {project_dir / 'oracle.json'} names trial(s) "
            f"{', '.join(missing)} whose trial.json is missing from {project_dir}; "
            f"{FRESH_FIX}")


def _space_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    changes = []
    for label in sorted(set(old) | set(new)):
        if label not in new:
            changes.append(f"{label} removed (was {_entry(old[label])})")
        elif label not in old:
            changes.append(f"{label} added ({_entry(new[label])})")
        else:
            for field in sorted(set(old[label]) | set(new[label])):
                a, b = old[label].get(field), new[label].get(field)
                if a != b:
                    changes.append(f"{label}.{field}: {a} → {b}")
    return changes


def _entry(spec: dict[str, Any]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in spec.items())


def check_space(project_dir: Path, sweep_id: str, space: dict[str, Any]) -> None:
    """A resumed search keeps the space it started with (keras-tuner reloads it from
    ``oracle.json``): refuse to resume after the space was edited, naming each change."""
    marker = project_dir / MARKER
    if not marker.is_file():
        return  # a search saved before the marker existed: nothing to compare with
    saved = _load(marker, "the sweep's record")
    old = saved.get("space") if isinstance(saved, dict) else None
    if not isinstance(old, dict):
        raise DataError(f"the sweep's record {marker} has no search space; {FRESH_FIX}")
    changes = _space_changes(old, space)
    if changes:
        raise ConfigError(
            f"the search space of sweep {sweep_id} changed since it started: "
            f"{'; '.join(changes)}. Resuming would go on searching the old space (keras-tuner "
            f"reloads it from {project_dir / 'oracle.json'}). Put the space back to resume, or "
            f"{FRESH_FIX[0].lower()}{FRESH_FIX[1:]}")


def mark(project_dir: Path, sweep_id: str, space: dict[str, Any]) -> None:
    """Make the sweep's folder and write :data:`MARKER` (unless it is there)."""
    with writing(project_dir.parent, f"the sweep's folder {project_dir.name}"):
        project_dir.mkdir(exist_ok=True)
    if not (project_dir / MARKER).is_file():
        save_json(project_dir / MARKER, {"made_by": "rnnbench-tune", "sweep_id": sweep_id,
                                         "space": space})
