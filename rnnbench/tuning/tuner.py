"""keras-tuner's oracles with the sweep's console and MLflow hooks, the tuner that runs
each trial as a :func:`rnnbench.train.run` nested under the sweep's MLflow run, and the
chief's oracle server.

Three roles stay apart, as in keras-tuner: the oracle decides what to try next and keeps
the record that a search resumes from (``<tuner.directory>/<sweep id>/``); the tuner
runs a trial; :class:`~rnnbench.tuning.record.SweepRecord` writes MLflow. Nothing is
passed to ``search()``: keras-tuner deep-copies what it gets there, and MLflow state must
not be copied.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

import keras_tuner as kt
import numpy as np
from keras_tuner.engine.trial import TrialStatus

from rnnbench.errors import ConfigError, RnnbenchError, RunFailed
from rnnbench.tracking import Params, RunKind, SweepTags, Tags
from rnnbench.tuning.chief import ChiefLink, ChiefStub, write_address
from rnnbench.tuning.space import format_values
from rnnbench.tuning.state import save_json

ORACLES = {
    "random": kt.oracles.RandomSearchOracle,
    "hyperband": kt.oracles.HyperbandOracle,
    "bayesian": kt.oracles.BayesianOptimizationOracle,
}
CONSECUTIVE_FAILURES = "consecutive failures exceeded"


def trial_number(trial_id: Any) -> int:
    """The one number a trial goes by, on the console, in its MLflow run name
    (``trial-<k>``) and tag (``SweepTags.TRIAL_NUMBER``): keras-tuner's zero-padded id
    (``"00"``, ``"01"``, ...) plus one."""
    return int(trial_id) + 1


class SweepAborted(kt.errors.FatalError):
    """Stops the search on an error that every trial would hit (data, hardware, tracking).

    Args:
        error: the :class:`~rnnbench.errors.RnnbenchError` to report.
    """

    def __init__(self, error: RnnbenchError) -> None:
        super().__init__(str(error))
        self.error = error


def reason_of(message: str | None) -> str | None:
    """The last line of a keras-tuner trial message (a traceback), without the
    exception's class name."""
    if not message:
        return None
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if not lines:
        return None
    last = lines[-1]
    head, sep, rest = last.partition(": ")
    if sep and "." in head and " " not in head:
        return rest
    return last


def best_of(values: list[float] | None, direction: str) -> float | None:
    """The best finite value of a per-epoch history, or None when there is none."""
    finite = [float(v) for v in values or [] if v is not None and math.isfinite(float(v))]
    if not finite:
        return None
    return min(finite) if direction == "min" else max(finite)


class SweepHooks:
    """Prints the sweep's progress and writes it to the parent MLflow run. Called by the
    oracle (in the process that owns it: the only one, or the chief).

    Args:
        plan: the :class:`~rnnbench.tuning.plan.SweepPlan`.
        record: the :class:`~rnnbench.tuning.record.SweepRecord`.
        total: the number of trials the search will run (None: unknown).
    """

    def __init__(self, plan: Any, record: Any, total: int | None) -> None:
        self.plan = plan
        self.record = record
        self.total = total

    def _k(self, trial: Any) -> str:
        n = f" of {self.total}" if self.total else ""
        return f"trial {trial_number(trial.trial_id)}{n}"

    def _best(self, oracle: Any) -> str:
        best = [t for t in oracle.get_best_trials(1) if t.status == TrialStatus.COMPLETED]
        if not best:
            return "no trial has finished yet"
        b = best[0]
        return (f"best so far {self.plan.objective}={b.score:.6g} "
                f"(trial {trial_number(b.trial_id)})")

    def say(self, text: str) -> None:
        print(f"[{self.plan.sweep_id}] {text}", flush=True)

    def trial_begin(self, oracle: Any, trial: Any) -> None:
        self.say(f"{self._k(trial)} started: {format_values(trial.hyperparameters.values)}")

    def trial_end(self, oracle: Any, trial: Any, error: Exception | None = None) -> None:
        status = trial.status
        reason = reason_of(trial.message) or (
            self.record.failure_reason(trial.trial_id) if status != TrialStatus.COMPLETED
            else None)
        if status == TrialStatus.COMPLETED:
            self.say(f"{self._k(trial)} finished: {self.plan.objective}={trial.score:.6g} · "
                     f"{self._best(oracle)}")
        elif status == TrialStatus.FAILED:
            self.say(f"{self._k(trial)} FAILED: {reason or 'no reason recorded'} · "
                     f"{self._best(oracle)}")
        else:
            self.say(f"{self._k(trial)} crashed and will run again: {reason}")
        failed = sum(t.status == TrialStatus.FAILED for t in oracle.trials.values())
        best = [t for t in oracle.get_best_trials(1) if t.status == TrialStatus.COMPLETED]
        score = trial.score if status == TrialStatus.COMPLETED else None
        self.record.log_trial_end(trial_number(trial.trial_id), score,
                                  best[0].score if best else None, failed)
        if error is not None:
            self.say(f"the sweep stops: {oracle.max_consecutive_failed_trials} trials in a row "
                     "FAILED (tuner.max_consecutive_failed_trials)")


class HookedOracle:
    """Mixin for keras-tuner's oracles: calls :class:`SweepHooks` when a trial starts and
    when it ends, wherever the trial ran (this process or a worker)."""

    hooks: SweepHooks | None = None
    # A chief keeps its workers' trials on a resume (see reload); one process retries them.
    keep_ongoing: bool = False

    def reload(self) -> None:
        """keras-tuner's reload sends the trials that were running to be retried: right
        when the one process that ran them died. A chief's trials run in its workers,
        which live on when the chief is requeued: each stays its worker's trial, so the
        worker ends it on the new chief, or gets it again if it was requeued too."""
        super().reload()
        if not self.keep_ongoing:
            return
        with open(self._get_oracle_fname()) as f:
            ongoing = dict(json.load(f).get("ongoing_trials") or {})
        self.ongoing_trials = {tuner_id: self.trials[trial_id]
                               for tuner_id, trial_id in ongoing.items()
                               if trial_id in self.trials}
        kept = {t.trial_id for t in self.ongoing_trials.values()}
        self._retry_queue = [t for t in self._retry_queue if t not in kept]

    @kt.synchronized
    def create_trial(self, tuner_id: str) -> Any:
        trial = super().create_trial(tuner_id)
        if trial.status == TrialStatus.RUNNING:
            self._call_hook("trial_begin", trial)
        return trial

    @kt.synchronized
    def end_trial(self, trial: Any) -> None:
        done = self.trials.get(trial.trial_id)
        if (trial.trial_id in self.end_order and done is not None
                and done.status in (TrialStatus.COMPLETED, TrialStatus.FAILED)):
            return  # ended already: a worker repeated a call whose reply it lost
        error = None
        try:
            super().end_trial(trial)
        except RuntimeError as exc:  # keras-tuner's consecutive-failure limit
            error = exc
        self._call_hook("trial_end", self.trials[trial.trial_id], error)
        if error is not None:
            raise error

    # keras-tuner writes its state files in place: a full disk left an empty trial.json
    # that no resume could read. These write each file whole (temp file, fsync, rename).
    def save(self) -> None:
        save_json(self._get_oracle_fname(), self.get_state())

    def _save_trial(self, trial: Any) -> None:
        save_json(os.path.join(self._get_trial_dir(trial.trial_id), "trial.json"),
                  trial.get_state())

    def _call_hook(self, name: str, *args: Any) -> None:
        # The hooks only report. An error in them (the tracking server went away) must not
        # escape: keras-tuner's @synchronized would keep the oracle's lock held for good.
        if self.hooks is None:
            return
        try:
            getattr(self.hooks, name)(self, *args)
        except Exception as exc:
            print(f"[{self.hooks.plan.sweep_id}] warning: could not record the trial "
                  f"({type(exc).__name__}: {exc})", flush=True)


HOOKED = {name: type(f"Sweep{cls.__name__}", (HookedOracle, cls), {})
          for name, cls in ORACLES.items()}


def make_oracle(plan: Any) -> kt.Oracle:
    """keras-tuner's oracle for ``plan.cfg.tuner``, seeded from ``seed``."""
    t = plan.cfg.tuner
    common = dict(
        objective=kt.Objective(plan.objective, plan.direction),
        hyperparameters=plan.space.hyperparameters(),
        allow_new_entries=False,
        tune_new_entries=True,
        seed=plan.oracle_seed,
        max_retries_per_trial=t.max_retries_per_trial,
        max_consecutive_failed_trials=t.max_consecutive_failed_trials,
    )
    if t.name == "random":
        oracle = HOOKED["random"](max_trials=t.max_trials, **common)
    elif t.name == "bayesian":
        oracle = HOOKED["bayesian"](max_trials=t.max_trials,
                                    num_initial_points=t.num_initial_points,
                                    alpha=t.alpha, beta=t.beta, **common)
    else:
        oracle = HOOKED["hyperband"](max_epochs=t.max_epochs, factor=t.factor,
                                     hyperband_iterations=t.hyperband_iterations, **common)
        oracle.max_trials = t.max_trials  # None: the whole schedule; a number caps it
    oracle.verbose = 0  # the sweep prints its own progress (SweepHooks)
    return oracle


def planned_trials(plan: Any, oracle: Any) -> int | None:
    """How many trials the search runs: ``max_trials``, or Hyperband's schedule."""
    t = plan.cfg.tuner
    if t.name != "hyperband":
        return t.max_trials
    per_iteration = sum(oracle._get_size(b, r) for b in range(oracle._get_num_brackets())
                        for r in range(b + 1))
    total = per_iteration * t.hyperband_iterations
    return min(total, t.max_trials) if t.max_trials else total


class SweepTuner(kt.Tuner):
    """Runs each trial as an ``rnnbench`` training run nested under the sweep's MLflow run.

    A trial's hyperparameters are set on the run config, and :func:`rnnbench.train.run`
    trains it and logs it exactly as a normal run (per-epoch metrics, diagnostics,
    artifacts), tagged ``run_kind=trial``, ``trial_id`` and ``execution``. A NaN or
    exploding run is a FAILED trial (keras-tuner's ``FailedTrialError``) and the search
    goes on; its score is never reported, so it cannot become the best. Hyperband trials
    that continue an earlier one start from its saved weights.

    Args:
        oracle: the oracle from :func:`make_oracle`.
        plan: the :class:`~rnnbench.tuning.plan.SweepPlan`.
        record: the :class:`~rnnbench.tuning.record.SweepRecord`.
        role: ``none``, ``chief`` or ``worker`` (``tuner.distributed.role``).
        **kwargs: ``directory``, ``project_name``, ``overwrite`` for ``keras_tuner.Tuner``.
    """

    idle_wait_s = 1.0

    def __init__(self, oracle: Any, plan: Any, record: Any, role: str = "none",
                 **kwargs: Any) -> None:
        self.plan = plan
        self.record = record
        self.role = role
        self.scores: dict[str, float] = {}
        super().__init__(oracle, hypermodel=None,
                         executions_per_trial=plan.cfg.tuner.executions_per_trial, **kwargs)
        self.link = None
        if role == "worker":  # keras-tuner made an OracleClient: route it through the link
            dist = plan.cfg.tuner.distributed
            self.link = ChiefLink(dist.address, dist.port, dist.address_file, dist.wait_s,
                                  say=lambda m: print(f"[{plan.sweep_id}] {m}", flush=True))
            self.oracle.stub = ChiefStub(self.link)

    def save(self) -> None:
        """keras-tuner's save, each file written whole (see :func:`save_json`)."""
        if not self._is_worker():
            self.oracle.save()
        save_json(self._get_tuner_fname(), self.get_state())

    # ---- one trial ------------------------------------------------------------------

    def run_trial(self, trial: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
        values = dict(trial.hyperparameters.values)
        epochs = int(values.get("tuner/epochs", self.plan.cfg.tuner.max_epochs))
        runs = self.record.trial_runs(trial.trial_id)
        self.record.close_orphans(runs)
        scores = []
        for execution in range(self.executions_per_trial):
            done = self.record.finished_execution(runs, execution)
            if done is not None:
                score = self._reuse(done)
            else:
                score = self._execute(trial, values, execution, epochs)
            scores.append(score)
        score = float(np.mean(scores))
        self.scores[trial.trial_id] = score
        return {self.plan.objective: score}

    def _reuse(self, run: Any) -> float:
        """The score of an execution that already ended (its process died before the
        oracle heard of it): taken from MLflow, not run or logged again."""
        if run.info.status != "FINISHED":
            raise kt.errors.FailedTrialError(
                f"run {run.info.run_id} FAILED: {run.data.tags.get(Tags.FAILURE_REASON)}")
        value = best_of(self.record.objective_history(run.info.run_id), self.plan.direction)
        if value is None:
            raise kt.errors.FailedTrialError(
                f"run {run.info.run_id}: {self.plan.objective} was not finite in any epoch")
        return value

    def _weights(self, trial_id: str, execution: int) -> str:
        return os.path.join(self.get_trial_dir(trial_id), f"execution{execution}.weights.h5")

    def _execute(self, trial: Any, values: dict[str, Any], execution: int, epochs: int) -> float:
        import keras

        from rnnbench import tracking
        from rnnbench.train import RunContext, run

        plan = self.plan
        run_cfg, overrides = plan.trial(values, execution, epochs)
        initial_epoch, init_weights = 0, None
        source = values.get("tuner/trial_id")
        if source is not None and int(values.get("tuner/initial_epoch", 0)) > 0:
            path = self._weights(source, execution)
            if os.path.exists(path):
                initial_epoch, init_weights = int(values["tuner/initial_epoch"]), path
            else:
                print(f"[{plan.sweep_id}] trial {trial_number(trial.trial_id)}: the weights of "
                      f"trial {trial_number(source)} "
                      f"are not in {self.project_dir} (another machine ran it?); training from "
                      f"scratch for {epochs} epochs", flush=True)
        n = self.executions_per_trial
        ctx = RunContext(
            overrides=overrides, sweep_id=plan.sweep_id,
            command=" ".join(["rnnbench", *overrides]),
            parent_run_id=self.record.parent_run_id, run_kind=RunKind.TRIAL,
            tags={SweepTags.TRIAL_ID: trial.trial_id, SweepTags.EXECUTION: execution,
                  SweepTags.TRIAL_NUMBER: trial_number(trial.trial_id),
                  SweepTags.SWEEP_NAME: plan.sweep_id, SweepTags.TUNER: plan.cfg.tuner.name,
                  SweepTags.TUNER_ID: self.tuner_id,
                  SweepTags.WARM_START_FROM: trial_number(source) if init_weights else None},
            params={Params.HP_PREFIX + k: v for k, v in values.items()},
            run_name=(f"trial-{trial_number(trial.trial_id)}"
                      + (f"-e{execution}" if n > 1 else "")),
            initial_epoch=initial_epoch, init_weights=init_weights,
            save_weights=(self._weights(trial.trial_id, execution)
                          if plan.cfg.tuner.name == "hyperband" else None),
        )
        keras.backend.clear_session()
        try:
            result = run(run_cfg, ctx)
        except RunFailed as exc:
            raise kt.errors.FailedTrialError(str(exc)) from None
        except ConfigError as exc:  # a combination of values the run config refuses
            raise kt.errors.FailedTrialError(str(exc)) from None
        except RnnbenchError as exc:
            raise SweepAborted(exc) from None
        value = best_of(result.history.get(plan.objective), plan.direction)
        if value is None:
            reason = f"{plan.objective} was not finite in any epoch"
            tracking.close_run(result.run_id, "FAILED", {Tags.FAILURE_REASON: reason})
            raise kt.errors.FailedTrialError(f"run {result.run_id} FAILED: {reason}")
        return value

    # ---- the search loop ------------------------------------------------------------

    def search(self, *fit_args: Any, **fit_kwargs: Any) -> None:
        """Serve the oracle (chief) or run trials until the oracle says stop. As
        keras-tuner's loop, but a worker told to wait (IDLE) waits instead of asking
        again at once."""
        if self.role == "chief":
            dist = self.plan.cfg.tuner.distributed
            self.save()
            serve_oracle(self.oracle, dist.address or "127.0.0.1", dist.port,
                         address_file=dist.address_file)
            return
        self.on_search_begin()
        while True:
            self.pre_create_trial()
            trial = self.oracle.create_trial(self.tuner_id)
            if trial.status == TrialStatus.STOPPED:
                break
            if trial.status == TrialStatus.IDLE:
                time.sleep(self.idle_wait_s)
                continue
            self.on_trial_begin(trial)
            self._try_run_and_update_trial(trial, *fit_args, **fit_kwargs)
            self.on_trial_end(trial)
        self.on_search_end()

    def on_search_begin(self) -> None:
        if self.role == "worker":
            self.link.connect()  # waits for the chief (its address file), gives up named
            self.oracle.get_space()  # answers once the chief serves (it opened the sweep run)
            self.record.attach(timeout_s=60.0)
            host, port = self.link.target
            print(f"[{self.plan.sweep_id}] worker {self.tuner_id} joined the chief at "
                  f"{host}:{port}", flush=True)

    def on_trial_begin(self, trial: Any) -> None:
        if self.role == "worker":
            print(f"[{self.plan.sweep_id}] {self.tuner_id}: trial {trial_number(trial.trial_id)} "
                  f"started: {format_values(trial.hyperparameters.values)}", flush=True)

    def on_trial_end(self, trial: Any) -> None:
        if self.role == "worker":
            k = trial_number(trial.trial_id)
            if trial.status == TrialStatus.COMPLETED:
                print(f"[{self.plan.sweep_id}] {self.tuner_id}: trial {k} finished: "
                      f"{self.plan.objective}={self.scores.get(trial.trial_id, float('nan')):.6g}",
                      flush=True)
            else:
                print(f"[{self.plan.sweep_id}] {self.tuner_id}: trial {k} {trial.status}: "
                      f"{reason_of(trial.message)}", flush=True)
        super().on_trial_end(trial)


def serve_oracle(oracle: Any, address: str, port: int, poll_s: float = 0.5,
                 address_file: str | None = None) -> None:
    """Serve ``oracle`` to the workers over gRPC (keras-tuner's own service) until the
    search is done and every worker has been told to stop. Port 0: any free port. With
    ``address_file`` the address and the port it listens on are written there."""
    from concurrent import futures

    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute import oracle_chief

    # no SO_REUSEPORT: a second chief on a port in use must fail, not share the port
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1),
                         options=[("grpc.so_reuseport", 0)])
    servicer = oracle_chief.OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    try:
        bound = server.add_insecure_port(f"{address}:{port}")
    except RuntimeError:
        bound = 0
    if not bound:
        raise ConfigError(f"tuner.distributed: the chief cannot listen on {address}:{port} (in "
                          "use, or not an address of this machine); pick another "
                          "tuner.distributed.port or tuner.distributed.address.")
    server.start()
    port = bound
    if address_file:
        write_address(address_file, address, port)
        join = f"tuner.distributed.address_file={address_file}"
    else:
        join = f"tuner.distributed.address={address} tuner.distributed.port={port}"
    print(f"[chief] serving the oracle on {address}:{port}; start workers with "
          f"tuner.distributed.role=worker {join}", flush=True)
    try:
        while not (servicer.stop_triggered and oracle_chief.exit_chief(oracle)):
            time.sleep(poll_s)
    finally:
        server.stop(grace=2.0)
