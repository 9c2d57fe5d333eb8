"""A sweep from start to end: check the sweep config, open (or reopen) the sweep's MLflow
run, run or serve the search, record the best trial (``rnnbench-tune``'s job, in
:mod:`rnnbench.cli.job`, calls :func:`run_sweep`).

Everything that can be refused is refused before the first trial: the search space
(empty or inverted ranges, values the run config refuses), an objective the task does
not produce, the budget, a worker without a chief, a tracking server that does not
answer.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rnnbench import config, conventions, tracking
from rnnbench.errors import RunFailed
from rnnbench.provenance import git_commit, version_tags
from rnnbench.tracking import RunKind, SweepTags, Tags

DISTRIBUTED_ENV = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")


@dataclass
class SweepResult:
    """What a sweep ended with (in this process: a worker only knows its own trials).

    Args:
        sweep_id: the sweep's id (keras-tuner project, MLflow tag ``sweep_id``).
        parent_run_id: the sweep's MLflow run.
        status: FINISHED (the search is complete) or, for a worker, DONE.
        trials: one dict per trial: id, status, score, hyperparameters, reason, run ids.
        best: the best COMPLETED trial's dict, or None.
        resumed: whether the search continued a saved one.
    """

    sweep_id: str
    parent_run_id: str | None
    status: str
    trials: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    resumed: bool = False

    @property
    def completed(self) -> int:
        return sum(t["status"] == "COMPLETED" for t in self.trials)

    @property
    def failed(self) -> int:
        return sum(t["status"] == "FAILED" for t in self.trials)


def _set_distributed_env(dist: Any) -> str:
    """keras-tuner reads its chief/worker mode from the environment."""
    for key in DISTRIBUTED_ENV:
        os.environ.pop(key, None)
    if dist.role == "none":
        return "tuner0"
    tuner_id = "chief" if dist.role == "chief" else (
        dist.worker_id or f"worker-{socket.gethostname()}-{os.getpid()}")
    os.environ["KERASTUNER_TUNER_ID"] = tuner_id
    os.environ["KERASTUNER_ORACLE_IP"] = dist.address or "127.0.0.1"
    os.environ["KERASTUNER_ORACLE_PORT"] = str(dist.port)
    return tuner_id


def _trial_table(plan: Any, oracle: Any, record: Any) -> list[dict[str, Any]]:
    from rnnbench.tuning.tuner import reason_of, trial_number

    runs: dict[str, list] = {}
    for run in record.trial_runs():
        runs.setdefault(run.data.tags.get(SweepTags.TRIAL_ID), []).append(run)
    table = []
    for trial_id in sorted(oracle.trials, key=int):
        t = oracle.trials[trial_id]
        mine = runs.get(trial_id, [])
        reason = reason_of(t.message) or next(
            (r.data.tags.get(Tags.FAILURE_REASON) for r in reversed(mine)
             if r.info.status == "FAILED"), None)
        table.append({
            "trial_id": trial_id, "trial": trial_number(trial_id), "status": t.status,
            "score": t.score if t.status == "COMPLETED" else None,
            "hyperparameters": dict(t.hyperparameters.values),
            "reason": reason if t.status != "COMPLETED" else None,
            "runs": {r.info.run_id: r.info.status for r in mine},
            "run_id": next((r.info.run_id for r in mine if r.info.status == "FINISHED"), None),
        })
    return table


def _summary(plan: Any, oracle: Any, record: Any) -> dict[str, Any]:
    trials = _trial_table(plan, oracle, record)
    done = [t for t in trials if t["status"] == "COMPLETED"]
    best = None
    if done:
        pick = min if plan.direction == "min" else max
        best = dict(pick(done, key=lambda t: t["score"]))
        _, overrides = plan.trial(best["hyperparameters"], 0,
                                  best["hyperparameters"].get("tuner/epochs",
                                                              plan.cfg.tuner.max_epochs))
        best["command"] = " ".join(["rnnbench", *overrides])
    return {"trials": trials, "best": best, "completed": len(done),
            "failed": sum(t["status"] == "FAILED" for t in trials)}


def run_sweep(cfg: Any, overrides: list[str] | None = None, command: str = "rnnbench-tune"
              ) -> SweepResult:
    """Run (or, as chief, serve; as worker, join) the sweep of ``cfg`` (a ``TuneConfig``).

    The same config resumes the same search from ``tuner.directory``; completed trials
    are neither run nor logged again, the interrupted one runs again. One process owns a
    sweep's state (a lock; a second one is refused), ``tuner.overwrite`` deletes only the
    sweep's own folder, and a resume refuses damaged state files or an edited space
    (:mod:`rnnbench.tuning.state`).
    """
    from rnnbench.tuning import state
    from rnnbench.tuning.plan import SweepPlan
    from rnnbench.tuning.record import SweepRecord

    plan = SweepPlan.create(cfg, overrides)
    t = cfg.tuner
    tracking.configure(cfg.tracking.uri, cfg.tracking.timeout_s)
    role = t.distributed.role
    tuner_id = _set_distributed_env(t.distributed)
    record = SweepRecord(plan.experiment, plan.sweep_id, cfg.tracking.uri, plan.objective)
    project_dir = state.project_folder(t.directory, plan.sweep_id, t.project is not None)
    if role == "worker":  # the chief owns the search state; a worker only runs trials
        return _run(plan, record, project_dir, False, None, command)
    space = json.loads(json.dumps(plan.space.describe()))
    with state.SweepLock(project_dir):
        if t.overwrite:
            previous = record.saved_parent(project_dir)  # closed as superseded if RUNNING
            state.clear(project_dir)
            resume = False
        else:
            resume = (project_dir / "oracle.json").is_file()
            if resume:
                state.check_saved(project_dir, tuner_id)
                state.check_space(project_dir, plan.sweep_id, space)
            previous = record.saved_parent(project_dir, resume)
        state.mark(project_dir, plan.sweep_id, space)
        return _run(plan, record, project_dir, resume, previous, command)


def _run(plan: Any, record: Any, project_dir: Path, resume: bool, previous: str | None,
         command: str) -> SweepResult:
    from rnnbench.tuning.tuner import (CONSECUTIVE_FAILURES, SweepAborted, SweepHooks,
                                       SweepTuner, make_oracle, planned_trials)

    cfg, t = plan.cfg, plan.cfg.tuner
    role = t.distributed.role
    oracle = make_oracle(plan)
    oracle.keep_ongoing = role == "chief"  # its workers' trials outlive a requeued chief
    # never keras-tuner's own overwrite: it deletes <directory>/<project> unchecked
    tuner = SweepTuner(oracle, plan, record, role, directory=str(project_dir.parent),
                       project_name=project_dir.name, overwrite=False)
    total = planned_trials(plan, oracle)
    hooks = SweepHooks(plan, record, total)
    reopened = False
    if role != "worker":
        tuner.oracle.hooks = hooks
        tuner.oracle.verbose = 0
        tags = {
            Tags.RUN_KIND: RunKind.SWEEP, Tags.SWEEP_ID: plan.sweep_id,
            SweepTags.SWEEP_NAME: plan.sweep_id,
            Tags.TASK: plan.task_name, Tags.CELL: cfg.cell.name, Tags.SEED: cfg.seed,
            SweepTags.TUNER: t.name, SweepTags.OBJECTIVE: plan.objective,
            SweepTags.DIRECTION: plan.direction,
            SweepTags.SEARCH_SPACE: plan.space.name, Tags.COMMAND: command,
            Tags.GIT_COMMIT: git_commit(),
            SweepTags.BUDGET_MAX_TRIALS: total, SweepTags.BUDGET_MAX_EPOCHS: t.max_epochs,
            SweepTags.BUDGET_EXECUTIONS: t.executions_per_trial,
            SweepTags.DISTRIBUTED: role, **version_tags(),
            **conventions.system_tags(command, git_commit()),
        }
        params = {k: v for k, v in config.flatten(cfg).items()
                  if not k.startswith("search_space.")}
        params["search_space.name"] = plan.space.name
        params.update({f"space.{label}": text for label, text in plan.space.summary().items()})
        _, reopened = record.open_parent(
            project_dir, previous, resume=resume, run_name=f"sweep-{plan.sweep_id}",
            tags=tags, params=params, space_json=plan.space.to_json())
        if role == "none":
            record.close_orphans()
        tuner.save()
        done = len([x for x in tuner.oracle.trials.values()
                    if x.status in ("COMPLETED", "FAILED")])
        hooks.say(
            f"{'resuming' if reopened else 'starting'} sweep: tuner={t.name}, "
            f"{total if total else 'all'} trials of at most {t.max_epochs} epochs, "
            f"objective {plan.objective} ({plan.direction}), space {plan.space.name} for "
            f"cell={cfg.cell.name}" + (f"; {done} trial(s) already done" if reopened else ""))
        hooks.say(f"search state in {project_dir}; MLflow run {record.parent_run_id} in "
                  f"experiment '{plan.experiment}' at {record.uri}")

    try:
        tuner.search()
    except SweepAborted as exc:
        if role != "worker":
            record.finish("FAILED", reason=str(exc.error))
        raise exc.error from None
    except RuntimeError as exc:
        if CONSECUTIVE_FAILURES not in str(exc).lower():
            if role != "worker":
                record.finish("FAILED", reason=f"{type(exc).__name__}: {exc}")
            raise
        n = t.max_consecutive_failed_trials
        summary = _summary(plan, tuner.oracle, record)
        last = summary["trials"][-1]["reason"] if summary["trials"] else None
        message = (f"the sweep stopped after {n} FAILED trials in a row "
                   f"(tuner.max_consecutive_failed_trials={n}); the last: {last}. Narrow the "
                   "search space (e.g. a lower search_space.params.lr.high) or allow more "
                   "failures; running the same command again retries from here.")
        record.finish("FAILED", summary, reason=message)
        raise RunFailed(message) from None
    except KeyboardInterrupt:
        if role != "worker":
            record.finish("KILLED", reason="interrupted (Ctrl-C or SIGTERM); run the same "
                                           "command to resume")
            from rnnbench import interrupt

            interrupt.note_killed(record.parent_run_id)
        raise
    except BaseException as exc:
        if role != "worker":
            record.finish("FAILED", reason=f"{type(exc).__name__}: {exc}")
        raise

    if role == "worker":
        return SweepResult(plan.sweep_id, record.parent_run_id, "DONE")
    summary = _summary(plan, tuner.oracle, record)
    record.finish("FINISHED", summary)
    return SweepResult(plan.sweep_id, record.parent_run_id, "FINISHED", summary["trials"],
                       summary["best"], reopened)
