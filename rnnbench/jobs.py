"""Hydra jobs: their console copied to the job's log file, and the end-of-multirun summary.

Each job of a multirun, whatever launcher runs it (basic, joblib, submitit local or
Slurm: the job may run in another process or on another machine), leaves a small record
``rnnbench-job.json`` in its own output folder: status (finished, failed, skipped), run
id, command, message. :class:`MultirunSummary`, a Hydra callback registered in
``conf/config.yaml``, reads them when the multirun ends and prints what finished, what
failed and what was skipped, with their MLflow run ids; the command then exits 1 when a
job failed. A job folder without a record is a job whose process died, unless the
multirun was stopped (Ctrl-C, SIGTERM, SIGHUP): then the summary says which job the
signal stopped, how many of the jobs finished and which never started, and the command
exits with the stop's status (:func:`rnnbench.interrupt.exit_code`).

When the jobs run in the process that launched them (Hydra's basic launcher), each job
starts with a progress line: ``job k of N`` (N: the basic sweeper's job list, or an
Optuna study's ``n_trials``) and the time left, estimated from the mean time of the jobs
that have finished.
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, TextIO

from hydra.experimental.callback import Callback

RECORD = "rnnbench-job.json"
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
_current: dict[str, Any] = {}  # this process's job: what the task function said
_multirun: dict[str, Any] = {}  # the main process's multirun: sweep dir, start, outcome


def job_done(status: str, run_id: str | None = None, message: str = "",
             command: str = "", exit_code: int = 1) -> None:
    """Remember how this process's job ended (written out by :meth:`on_job_end`);
    ``exit_code``: for a failed job, the status the job alone would have exited with (2:
    refused by a check, 1: its run FAILED)."""
    _current.update(status=status, run_id=run_id, message=message, command=command,
                    exit_code=exit_code)


def print_error(message: str) -> None:
    """A user-facing error on stderr, passwords hidden (a closed terminal is no error)."""
    from rnnbench.redaction import redact

    try:
        print(f"rnnbench: error: {redact(message)}", file=sys.stderr, flush=True)
    except OSError:  # SIGHUP: the terminal is gone
        pass


def check_writable(folder: Path, key: str) -> None:
    """Exit with a clear error (status 2) when Hydra's output folder ``folder`` (config
    key ``key``) cannot be created or written: a read-only file system or folder, which
    Hydra would meet as a raw PermissionError. Nothing is written to the store then."""
    import os
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".rnnbench-write-check-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        where = folder.resolve()
        existing = next((p for p in (where, *where.parents) if p.exists()), where)
        print_error(f"cannot write the output folder {where} ({key}): "
                    f"{exc.strerror or exc}. Give a writable folder, e.g. '{key}=/tmp/rnnbench/"
                    f"${{now:%Y-%m-%d_%H-%M-%S}}', or start from a writable working folder, or "
                    f"make {existing} writable (chmod u+w, or remount it read-write).")
        sys.exit(2)


CLAIM_FILE = ".rnnbench-multirun"


def claim_sweep_dir(folder: Path) -> Path:
    """Make ``folder`` this multirun's own: a claim file naming this process. Hydra's
    default folder is ``multirun/<date>/<time>``, so two multiruns started in the same
    second from one working folder would share it (their job folders, summaries and
    ``sweep_id``). A claim held by another live process on this machine is refused with
    exit status 2 before any job starts; a dead holder's claim, or one from another
    machine (whose process cannot be checked), is taken over. Returns the claim file."""
    import os
    import socket

    claim = folder / CLAIM_FILE
    me = f"{os.getpid()} {socket.gethostname()}\n"
    try:  # atomic: of two processes in the same instant, one creates it
        fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write(me)
        return claim
    try:
        holder = claim.read_text().split()
    except (OSError, UnicodeDecodeError):
        holder = []
    if len(holder) >= 2 and holder[1] == socket.gethostname() and holder[0].isdigit():
        pid = int(holder[0])
        if pid != os.getpid() and _alive(pid):
            print_error(
                f"{folder} is the folder of another multirun, still running (process {pid}): "
                "two multiruns started in the same second from one working folder get the "
                "same multirun/<date>/<time>. Start this one again a second later, or give "
                f"it a folder of its own: hydra.sweep.dir=multirun/<name>. Nothing was run. "
                f"(If process {pid} is no multirun of rnnbench's, delete {claim}.)")
            sys.exit(2)
    claim.write_text(me)
    return claim


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def release_sweep_dir() -> None:
    """Remove this process's claim on its multirun's folder (see :func:`claim_sweep_dir`),
    once the multirun is over, however it ended."""
    import os

    if not _multirun.get("dir"):
        return
    claim = Path(_multirun["dir"]) / CLAIM_FILE
    try:
        if claim.read_text().split()[:1] == [str(os.getpid())]:
            claim.unlink()
    except (OSError, IndexError):
        pass


def planned_jobs(config: Any) -> list[list[str]] | None:
    """The overrides of every job a multirun will launch, in order, when Hydra's basic
    sweeper runs it (None for another sweeper: Optuna decides as it goes)."""
    from omegaconf import OmegaConf

    if OmegaConf.select(config, "hydra.sweeper._target_") != BASIC_SWEEPER:
        return None
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser

        params = OmegaConf.select(config, "hydra.sweeper.params") or {}
        args = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
        batches = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(args),
                                               None)
        return [list(job) for batch in batches for job in batch]
    except Exception:  # a sweep syntax only the launcher's config loader resolves (glob)
        return None


class _Tee:
    """A text stream that also writes to a log file, as lines (a progress bar's ``\\r``
    rewrites and ``\\b`` erasures are applied, not copied)."""

    def __init__(self, stream: TextIO, log: TextIO) -> None:
        self._stream, self._log, self._line = stream, log, ""

    def write(self, text: str) -> int:
        n = self._stream.write(text)
        if self._log is None:  # the job ended; a logging handler may still hold this
            return n
        for ch in text:
            if ch == "\n":
                self._log.write(self._line + "\n")
                self._line = ""
            elif ch == "\r":
                self._line = ""
            elif ch == "\b":
                self._line = self._line[:-1]
            else:
                self._line += ch
        self._log.flush()
        return n

    def flush(self) -> None:
        self._stream.flush()
        if self._log is not None:
            self._log.flush()

    def end(self) -> None:
        if self._line and self._log is not None:
            self._log.write(self._line + "\n")
        self._line, self._log = "", None

    def close(self) -> None:
        """Never closes the console: a logging handler made while the job ran holds this
        stream, and absl's closes a stream that is no longer ``sys.stderr`` when Hydra
        sets up the next job's logging."""
        self.end()

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding, ...
        return getattr(self._stream, name)


@contextmanager
def console_to(log_path: Path | None) -> Iterator[None]:
    """Copy stdout and stderr to ``log_path`` (appended: Hydra's own logging writes there
    too) while the block runs."""
    if log_path is None:
        yield
        return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a", encoding="utf-8", errors="replace") as log:
        out, err = _Tee(sys.stdout, log), _Tee(sys.stderr, log)
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = out, err
        try:
            yield
        finally:
            sys.stdout, sys.stderr = saved
            out.end()
            err.end()


def log_file() -> Path | None:
    """The running Hydra job's log file (``<output dir>/<job name>.log``)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        hc = HydraConfig.get()
        return Path(hc.runtime.output_dir) / f"{hc.job.name}.log"
    except Exception:  # not inside a Hydra job
        return None


def planned_total(config: Any) -> int | None:
    """How many jobs a multirun will launch: the basic sweeper's job list, or the
    ``n_trials`` of a sweeper that has one (Optuna); None when unknown."""
    from omegaconf import OmegaConf

    planned = planned_jobs(config)
    if planned is not None:
        return len(planned)
    n = OmegaConf.select(config, "hydra.sweeper.n_trials", default=None)
    return n if isinstance(n, int) and n > 0 else None


def duration(seconds: float) -> str:
    """``45s``, ``3m05s``, ``2h03m``."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def progress_line(config: Any) -> str | None:
    """``job k of N`` and the estimated time left, for a job starting in the process that
    launched the multirun (None elsewhere: another launcher's worker, a single run)."""
    from omegaconf import OmegaConf

    num = OmegaConf.select(config, "hydra.job.num", default=None)
    if not _multirun or not isinstance(num, int):
        return None
    _multirun["job_started"] = time.time()
    total = _multirun.get("total")
    done = _multirun.get("durations", [])
    k = num + 1
    head = f"rnnbench: job {k} of {total}" if total else f"rnnbench: job {k}"
    if not done:
        return head + " (time left: known after the first job ends)"
    mean = sum(done) / len(done)
    if not total:
        return head + f" ({len(done)} done, {duration(mean)} per job)"
    left = max(total - k + 1, 0)
    return head + (f", about {duration(mean * left)} left ({len(done)} done, "
                   f"{duration(mean)} per job)")


class MultirunSummary(Callback):
    """Writes each job's record; prints the multirun's summary at its end."""

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        check_writable(Path(str(config.hydra.run.dir)), "hydra.run.dir")

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        check_writable(Path(str(config.hydra.sweep.dir)), "hydra.sweep.dir")
        claim_sweep_dir(Path(str(config.hydra.sweep.dir)))
        _multirun.clear()
        _multirun.update(dir=Path(str(config.hydra.sweep.dir)).resolve(),
                         start=time.time() - 1.0, printed=False, planned=planned_jobs(config),
                         total=planned_total(config))

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        _current.clear()
        line = progress_line(config)
        if line:
            print(line, flush=True)

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        from hydra.core.utils import JobStatus

        started = _multirun.pop("job_started", None)
        if started is not None:
            _multirun.setdefault("durations", []).append(time.time() - started)

        failure = None
        if job_return.status == JobStatus.FAILED:
            exc = job_return._return_value
            failure = f"{type(exc).__name__}: {exc}"
        write_record(failure)


def write_record(failure: str | None = None) -> None:
    """Write this job's record into its output folder (a job of a multirun only).
    Hydra calls :meth:`MultirunSummary.on_job_end` only for a job that returns; a job
    that a signal stops calls this itself before it exits."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return
    record = {"job": hc.job.num, "overrides": list(hc.overrides.task),
              "status": _current.get("status"), "run_id": _current.get("run_id"),
              "message": _current.get("message", ""), "command": _current.get("command"),
              "exit_code": _current.get("exit_code", 1), "ended": time.time()}
    if failure is not None:
        record["status"] = "failed"
        record["message"] = record["message"] or failure
    elif record["status"] is None:  # ended without telling (a SystemExit, say)
        record["status"] = "failed"
        record["message"] = "the job ended without a result"
    path = Path(hc.runtime.output_dir) / RECORD
    path.write_text(json.dumps(record, indent=1, default=str))
    _current.clear()

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        print_summary()


def collect(sweep_dir: Path, since: float = 0.0,
            stopped_by: str | None = None) -> list[dict[str, Any]]:
    """The records of the jobs under ``sweep_dir`` written after ``since``, and one
    entry per job folder of this multirun that has none: ``failed`` (its process died),
    or ``stopped`` when this process was stopped by the signal ``stopped_by``."""
    jobs = []
    for cfg in sorted(sweep_dir.rglob(".hydra/overrides.yaml")):
        folder = cfg.parent.parent
        if cfg.stat().st_mtime < since:
            continue  # a job of an earlier multirun in the same folder
        path = folder / RECORD
        if path.is_file():
            try:
                jobs.append(json.loads(path.read_text()))
                continue
            except ValueError:
                pass
        if stopped_by:
            jobs.append({"job": folder.name, "status": "stopped", "run_id": None,
                         "overrides": [], "message": f"stopped by {stopped_by} before its "
                                                     "run began"})
            continue
        jobs.append({"job": folder.name, "status": "failed", "run_id": None,
                     "overrides": [], "message": f"no result in {folder}: the job's "
                                                 "process died (killed, out of memory?)"})
    return sorted(jobs, key=lambda j: (str(j.get("job")).isdigit() is False,
                                       int(j["job"]) if str(j.get("job")).isdigit() else 0,
                                       str(j.get("job"))))


def stop_multirun(reason: str) -> bool:
    """Launch no further job of the multirun this process launched (its summary then says
    it was stopped by ``reason`` and lists the jobs not started). False where this process
    launched none: another launcher's worker, or a single run."""
    if not _multirun:
        return False
    _multirun["stopped_by"] = reason
    return True


def failed_exit_code() -> int:
    """The exit status of a multirun with failed jobs (after :func:`print_summary`): 2 when
    a job was refused by a check of rnnbench's, else 1."""
    return int(_multirun.get("exit_code", 1))


def print_summary() -> int:
    """Print the summary of the multirun this process launched; return how many jobs
    failed (0 when there was no multirun, or it was printed already)."""
    from rnnbench import interrupt

    if not _multirun or _multirun.get("printed"):
        return _multirun.get("failed", 0)
    _multirun["printed"] = True
    stop = interrupt.requested() or _multirun.get("stopped_by")
    jobs = collect(_multirun["dir"], _multirun["start"], stop)
    if not jobs and not stop:  # nothing launched: Hydra refused the command line first
        return 0
    planned = _multirun.get("planned")
    counts = {s: sum(j["status"] == s for j in jobs)
              for s in ("finished", "skipped", "failed", "stopped")}
    _multirun["failed"] = counts["failed"]
    # 2 when a job was refused by a check (a user error, as for one run), else 1
    _multirun["exit_code"] = 2 if any(j["status"] == "failed" and j.get("exit_code") == 2
                                      for j in jobs) else 1
    line = "=" * 72
    print(line)
    if stop:
        where = ", ".join(f"#{j.get('job')}" for j in jobs if j["status"] == "stopped")
        total = f"{len(planned)}" if planned else "?"
        done = counts["finished"] + counts["skipped"]
        rest = (f"{len(planned) - len(jobs)} not started" if planned
                else "the rest not started")
        print(f"multirun {_multirun['dir']}: stopped by {stop}"
              + (f" during job {where}" if where else " between jobs")
              + f": {done} of {total} job(s) done ({counts['finished']} finished, "
              f"{counts['skipped']} skipped), {counts['stopped']} stopped, "
              f"{counts['failed']} failed, {rest}")
    else:
        print(f"multirun {_multirun['dir']}: {len(jobs)} job(s): {counts['finished']} "
              f"finished, {counts['failed']} failed, {counts['skipped']} skipped")
    for j in jobs:
        what = " ".join(j.get("overrides") or [])
        run = f"run {j['run_id']}" if j.get("run_id") else "no run"
        note = {"failed": f": {j.get('message') or 'no reason given'}",
                "stopped": f": {j.get('message') or 'stopped'}",
                "skipped": " (reused: this config FINISHED before)"}.get(j["status"], "")
        print(f"  #{j.get('job')} {j['status']:<8} {run}  {what}{note}")
    if stop and planned:
        for num in range(len(jobs), len(planned)):
            print(f"  #{num} not started  {' '.join(planned[num])}")
    print(line, flush=True)
    return counts["failed"]
