"""Multiruns on Slurm (``hydra/launcher=submitit_slurm``), in the process that submits them.

:class:`SlurmChecks`, a Hydra callback registered in ``conf/config.yaml``, acts only when
the multirun's launcher is submitit's Slurm launcher:

- ``sbatch`` not on the PATH: one error with what to install, exit status 2;
- a SQLite store: a warning naming it and the remedy (``tracking=server``), since jobs on
  other nodes see the file only on a shared folder, and SQLite there is unsafe;
- job states without Slurm accounting: submitit reads them from ``sacct``, which says
  "accounting storage is disabled" on a cluster without ``slurmdbd``; then they are read
  from ``squeue --states=all`` (which keeps an ended job for ``MinJobAge``, 300 s);
- a job Slurm ended before it returned (``scancel``, time limit, node failure, out of
  memory): submitit raises ``UncompletedJobError`` and Hydra's launcher stops waiting for
  the other jobs. Instead the job is recorded failed with its Slurm state (the multirun
  summary of :mod:`rnnbench.jobs` lists it, "cancelled by Slurm ..."), and the others
  are waited for.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from rnnbench import jobs

LAUNCHER = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
INSTALL = ("install Slurm's client commands (Debian/Ubuntu: apt-get install slurm-client; "
           "for a one-node test cluster: bash .ci/install-slurm.sh) and its configuration "
           "(SLURM_CONF or /etc/slurm/slurm.conf), or run the multirun from a login node of "
           "the cluster")
ENDED = {"CANCELLED": "cancelled by Slurm (scancel)",
         "TIMEOUT": "stopped by Slurm at its time limit (hydra.launcher.timeout_min)",
         "OUT_OF_MEMORY": "killed by Slurm: out of memory (hydra.launcher.mem_gb)",
         "NODE_FAIL": "lost: its Slurm node failed", "PREEMPTED": "preempted by Slurm"}
_sweep: dict[str, Any] = {}  # the multirun's folder


def is_slurm(config: Any) -> bool:
    from omegaconf import OmegaConf

    return OmegaConf.select(config, "hydra.launcher._target_") == LAUNCHER


def store_uri(config: Any) -> str:
    """The store the jobs will log to (command line > MLFLOW_TRACKING_URI > config)."""
    from omegaconf import OmegaConf

    from rnnbench.conventions import ENV_URI

    uri = str(OmegaConf.select(config, "tracking.uri") or "")
    keys = {o.split("=", 1)[0].lstrip("+~") for o in config.hydra.overrides.task}
    env = os.environ.get(ENV_URI, "").strip()
    if env and not keys & {"tracking", "tracking.uri"}:
        uri = env
    return uri


class SlurmChecks(Callback):
    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        if not is_slurm(config):
            return
        if shutil.which("sbatch") is None:
            jobs.print_error("hydra/launcher=submitit_slurm submits each job with sbatch, "
                             f"which is not on the PATH here. To fix it, {INSTALL}.")
            sys.exit(2)
        uri = store_uri(config)
        if uri.startswith("sqlite:"):
            path = uri.split("sqlite:///", 1)[-1]
            print(f"rnnbench: warning: the Slurm jobs log to the SQLite store {uri} "
                  f"({Path(path).resolve()}): jobs on other nodes reach it only if that "
                  "folder is shared by every node, and SQLite on a network file system is not "
                  "safe for many writers. On a cluster, log to an MLflow server: "
                  "tracking=server tracking.uri=http://<host>:5000", file=sys.stderr,
                  flush=True)
        _sweep.update(dir=Path(str(config.hydra.sweep.dir)).resolve())
        install()


# ------------------------------------------------------------ submitit, patched
def squeue_states(job_ids: set[str]) -> str | None:
    """``sacct``-like output (``JobID|State|NodeList``) from ``squeue``, or None."""
    try:
        done = subprocess.run(["squeue", "--states=all", "--noheader", "-o", "%i|%T|%N",
                               "-j", ",".join(sorted(job_ids))],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return "JobID|State|NodeList\n" + done.stdout


def install() -> None:
    """Patch submitit's Slurm state watcher and job results (once per process)."""
    from submitit.core import utils
    from submitit.slurm import slurm

    watcher_cls, job_cls = slurm.SlurmInfoWatcher, slurm.SlurmJob
    if getattr(watcher_cls, "rnnbench", False):
        return

    def update(self: Any) -> None:
        command = self._make_command()
        if command is None:
            return
        self._num_calls += 1
        try:
            output = subprocess.run(command, capture_output=True, timeout=120).stdout
            done_ok = bool(output.strip()) and b"accounting storage is disabled" not in output
        except (OSError, subprocess.SubprocessError):
            output, done_ok = b"", False
        if not done_ok:  # no accounting: ask slurmctld instead
            ids = {x.split("_")[0] for x in self._registered - self._finished}
            text = squeue_states(ids)
            output = text.encode() if text else b""
        if output:
            self._info_dict.update(self.read_info(output))
        self._last_status_check = time.time()
        for job_id in self._registered - self._finished:
            if self.is_done(job_id, mode="cache"):
                self._finished.add(job_id)

    original_results, original_outcome = job_cls.results, job_cls._get_outcome_and_result

    def outcome(self: Any) -> Any:
        state = self.watcher.get_state(self.job_id, mode="cache") or "UNKNOWN"
        if state.split()[0].upper() in ENDED:  # no result is coming: wait briefly for it
            self._results_timeout_s = min(self._results_timeout_s, 3)
        return original_outcome(self)

    def results(self: Any) -> Any:
        try:
            return original_results(self)
        except utils.UncompletedJobError:
            state = self.watcher.get_state(self.job_id, mode="force")
            return [ended_by_slurm(self, state)]

    watcher_cls.update = update
    job_cls.results = results
    job_cls._get_outcome_and_result = outcome
    watcher_cls.rnnbench = True


def ended_by_slurm(job: Any, state: str) -> Any:
    """Record a job Slurm ended before it returned, as a failed job of the multirun; the
    Hydra result the launcher expects in its place."""
    from hydra.core.utils import JobReturn, JobStatus

    overrides, num = list(job.submission().args[0]), int(job.submission().args[2])
    word = state.split()[0].upper() if state else "UNKNOWN"
    what = ENDED.get(word, "ended by Slurm before it returned")
    shown = state or "UNKNOWN"
    by = shown.split()
    if len(by) == 3 and by[1] == "by" and by[2].isdigit():  # sacct: "CANCELLED by <uid>"
        shown = f"{by[0]} (by uid {by[2]})"
    message = f"{what}: Slurm job {job.job_id}, state {shown}; log {job.paths.stderr}"
    folder = _job_folder(num)
    if folder is not None:
        record_path = folder / jobs.RECORD
        record: dict[str, Any] = {}
        if record_path.is_file():
            try:
                record = json.loads(record_path.read_text())
            except ValueError:
                record = {}
        earlier = record.get("message")
        record.update(job=num, overrides=overrides, status="failed", exit_code=1,
                      message=message + (f" ({earlier})" if earlier else ""),
                      run_id=record.get("run_id"), command=record.get("command"),
                      ended=time.time())
        hydra_dir = folder / ".hydra"
        hydra_dir.mkdir(parents=True, exist_ok=True)
        if not (hydra_dir / "overrides.yaml").is_file():  # it never started
            (hydra_dir / "overrides.yaml").write_text(
                "".join(f"- {json.dumps(o)}\n" for o in overrides))
        record_path.write_text(json.dumps(record, indent=1, default=str))
    ret = JobReturn(overrides=overrides, status=JobStatus.COMPLETED)
    ret._return_value = None
    return ret


def _job_folder(num: int) -> Path | None:
    """The job's folder, by the default ``hydra.sweep.subdir`` (the job's number)."""
    return _sweep["dir"] / str(num) if _sweep else None
