"""The MLflow record of a sweep: one parent run (``run_kind=sweep``) and, nested under
it, one run per trial execution (``run_kind=trial``, made by :func:`rnnbench.train.run`).

Every run of a sweep carries the tag ``sweep_id`` (the keras-tuner project name), and
every trial run ``trial_id`` and ``execution``. Those tags are how a resumed or
distributed sweep finds what is already there: a trial run left RUNNING by a dead
process is an orphan and is closed as KILLED; a trial run that FINISHED is never run
or logged again. All MLflow calls go through :mod:`rnnbench.tracking`.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from rnnbench import tracking
from rnnbench.tracking import Artifacts, RunKind, SweepTags, Tags
from rnnbench.tracking.schema import SweepMetrics
from rnnbench.errors import TrackingError
from rnnbench.tuning.state import PARENT_FILE, save_json
ORPHAN_REASON = ("orphaned: the process running this trial stopped before the trial "
                 "ended; the trial was run again")


class SweepRecord:
    """The MLflow side of one sweep. Holds run ids only, never an open client or run,
    so nothing MLflow-related can end up in keras-tuner's state or copies.

    Args:
        experiment: the MLflow experiment (the one its trial runs go to).
        sweep_id: the sweep's id, tagged on the parent run and on every trial run.
        uri: the tracking URI (recorded next to the search state).
        objective: the objective's name, for the parent run's metrics.
    """

    def __init__(self, experiment: str, sweep_id: str, uri: str, objective: str) -> None:
        self.experiment = experiment
        self.sweep_id = sweep_id
        self.uri = tracking.redact_uri(uri)  # recorded and shown: never a password
        self.objective = objective
        self.parent_run_id: str | None = None

    # ---- the parent run -------------------------------------------------------------

    def saved_parent(self, project_dir: Path, resume: bool = False) -> str | None:
        """The parent run id saved with the search state, if it is in this store.

        When a search resumes and that file is missing, damaged or names a run this
        store does not have, the parent is looked up by its ``sweep_id`` tag instead,
        with a warning: a resumed search never opens a second parent run silently."""
        path = Path(project_dir) / PARENT_FILE
        problem = None
        if not path.is_file():
            problem = f"{path} is missing"
            saved = {}
        else:
            try:
                saved = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                problem = f"{path} is damaged ({type(exc).__name__})"
                saved = {}
            if not isinstance(saved, dict):
                problem, saved = f"{path} is damaged (not a mapping)", {}
        if saved.get("tracking_uri") == self.uri and saved.get("sweep_id") == self.sweep_id:
            run_id = saved.get("run_id")
            if run_id and tracking.get_run(run_id) is not None:
                return run_id
            problem = f"{path} names run {run_id}, which is not in {self.uri}"
        if not resume or problem is None:
            return None  # another store: its own parent run
        runs = tracking.search_runs(
            [self.experiment], f"tags.{Tags.SWEEP_ID} = '{self.sweep_id}' and "
                               f"tags.{Tags.RUN_KIND} = '{RunKind.SWEEP}'")
        if runs:
            run_id = runs[-1].info.run_id
            print(f"[{self.sweep_id}] warning: {problem}; the sweep's MLflow run {run_id} "
                  f"was found by its tag sweep_id={self.sweep_id} and is reopened", flush=True)
            return run_id
        print(f"[{self.sweep_id}] warning: {problem} and experiment '{self.experiment}' at "
              f"{self.uri} has no run tagged sweep_id={self.sweep_id}: the resumed search "
              "gets a new MLflow sweep run", flush=True)
        return None

    def open_parent(self, project_dir: Path, previous: str | None, *, resume: bool,
                    run_name: str, tags: dict[str, Any], params: dict[str, Any],
                    space_json: str) -> tuple[str, bool]:
        """Reopen ``previous`` when the search resumes, else create the parent run
        (closing ``previous`` as KILLED if a dead process left it RUNNING). Returns the
        run id and whether it was reopened."""
        if resume and previous is not None:
            run = tracking.reopen_run(previous)
            # the command that resumed it reproduces the sweep now (a larger budget, say)
            run.set_tags({k: v for k, v in tags.items()
                          if k.startswith(("budget.", "mlflow.source.")) or k == Tags.COMMAND})
            self.parent_run_id = previous
            self._save(project_dir, previous)  # again: it may have been missing or damaged
            return previous, True
        if previous is not None:
            self._close_if_running(previous, "superseded: the search was started afresh "
                                             "(tuner.overwrite=true or its saved state was gone)")
        run = tracking.open_run(self.experiment, run_name, tags)
        run.log_params(params)
        run.log_text(space_json, Artifacts.SWEEP_SEARCH_SPACE)
        self.parent_run_id = run.run_id
        self._save(project_dir, run.run_id)
        return run.run_id, False

    def _save(self, project_dir: Path, run_id: str) -> None:
        path = Path(project_dir)
        path.mkdir(parents=True, exist_ok=True)
        save_json(path / PARENT_FILE,
                  {"run_id": run_id, "tracking_uri": self.uri, "sweep_id": self.sweep_id,
                   "experiment": self.experiment})

    def attach(self, timeout_s: float) -> str:
        """A worker's way in: the RUNNING parent run of this sweep, made by the chief."""
        deadline = time.monotonic() + timeout_s
        query = (f"tags.{Tags.SWEEP_ID} = '{self.sweep_id}' and "
                 f"tags.{Tags.RUN_KIND} = '{RunKind.SWEEP}'")
        while True:
            runs = tracking.search_runs([self.experiment], query, statuses=["RUNNING"])
            if runs:
                self.parent_run_id = runs[-1].info.run_id
                return self.parent_run_id
            if time.monotonic() > deadline:
                raise TrackingError(
                    f"no RUNNING sweep run tagged sweep_id={self.sweep_id} in experiment "
                    f"'{self.experiment}' at {self.uri} after {timeout_s:g} s. Start the chief "
                    "first (tuner.distributed.role=chief) with the same config and the same "
                    "tracking.uri: the sweep id is derived from the config, so a worker with "
                    "a different config looks for a different sweep.")
            time.sleep(1.0)

    def _close_if_running(self, run_id: str, reason: str) -> None:
        run = tracking.get_run(run_id)
        if run is not None and run.info.status == "RUNNING":
            for child in tracking.child_runs(run_id):
                if child.info.status == "RUNNING":
                    tracking.close_run(child.info.run_id, "KILLED",
                                       {Tags.FAILURE_REASON: reason})
            tracking.close_run(run_id, "KILLED", {Tags.FAILURE_REASON: reason})

    def _parent(self) -> tracking.Run:
        run = tracking.get_run(self.parent_run_id)
        return tracking.Run(self.parent_run_id, run.info.experiment_id)

    # ---- trial runs -----------------------------------------------------------------

    def trial_runs(self, trial_id: str | None = None) -> list:
        """The trial runs under the parent (of one trial when ``trial_id`` is given)."""
        if self.parent_run_id is None:
            return []
        query = f"tags.{SweepTags.TRIAL_ID} = '{trial_id}'" if trial_id is not None else ""
        return tracking.child_runs(self.parent_run_id, query)

    def close_orphans(self, runs: list | None = None) -> list[str]:
        """Close the trial runs left RUNNING (all of the sweep's, or those in ``runs``)
        as KILLED; returns their ids."""
        runs = self.trial_runs() if runs is None else runs
        closed = []
        for run in runs:
            if run.info.status == "RUNNING":
                tracking.close_run(run.info.run_id, "KILLED", {Tags.FAILURE_REASON: ORPHAN_REASON})
                closed.append(run.info.run_id)
        return closed

    @staticmethod
    def finished_execution(runs: list, execution: int) -> Any | None:
        """The run of ``execution`` that already ended for good: FINISHED, or FAILED on a
        non-finite value (deterministic, so running it again would only repeat it)."""
        for run in reversed(runs):
            tags = run.data.tags
            if tags.get(SweepTags.EXECUTION, "0") != str(execution):
                continue
            if run.info.status == "FINISHED":
                return run
            if run.info.status == "FAILED" and tags.get(Tags.FAILURE_WHAT):
                return run
        return None

    def objective_history(self, run_id: str) -> list[float]:
        return [v for _, v in tracking.metric_history(run_id, self.objective)]

    def failure_reason(self, trial_id: str) -> str | None:
        for run in reversed(self.trial_runs(trial_id)):
            reason = run.data.tags.get(Tags.FAILURE_REASON)
            if run.info.status == "FAILED" and reason:
                return reason
        return None

    # ---- the sweep's progress and result --------------------------------------------

    def log_trial_end(self, index: int, score: float | None, best: float | None,
                      failed: int) -> None:
        """The objective's history over trials, on the parent run (step = the trial's
        number, :func:`rnnbench.tuning.tuner.trial_number`)."""
        if self.parent_run_id is None:
            return
        metrics: dict[str, float] = {SweepMetrics.TRIALS_FAILED: failed}
        if score is not None and math.isfinite(score):
            metrics[SweepMetrics.TRIAL_PREFIX + self.objective] = score
        if best is not None and math.isfinite(best):
            metrics[SweepMetrics.BEST_PREFIX + self.objective] = best
        self._parent().log_metrics(metrics, step=index)

    def finish(self, status: str, summary: dict[str, Any] | None = None,
               reason: str | None = None) -> None:
        """Write the best trial and the trial table, then close the parent run."""
        if self.parent_run_id is None:
            return
        run = self._parent()
        if summary is not None:
            best = summary.get("best")
            tags: dict[str, Any] = {
                SweepTags.TRIALS_COMPLETED: summary["completed"],
                SweepTags.TRIALS_FAILED: summary["failed"],
            }
            if best:
                tags.update({SweepTags.BEST_TRIAL_ID: best["trial_id"],
                             SweepTags.BEST_TRIAL_NUMBER: best.get("trial"),
                             SweepTags.BEST_RUN_ID: best.get("run_id")})
                tags.update({SweepTags.BEST_HP_PREFIX + k: v
                             for k, v in best["hyperparameters"].items()})
                run.log_json(best, Artifacts.SWEEP_BEST)
            run.set_tags(tags)
            run.log_json(summary["trials"], Artifacts.SWEEP_TRIALS)
        if reason:
            run.set_tags({Tags.FAILURE_REASON: reason[:5000]})
        run.end(status)
