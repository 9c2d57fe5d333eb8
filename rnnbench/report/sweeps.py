"""What the report reads from a sweep: the objective its trials are ranked by, a
trial's value of it, its optimisation history, and how much each hyperparameter mattered
(fANOVA).

A sweep is a keras-tuner sweep (``rnnbench-tune``: a parent run names the objective) or
a Hydra study (``rnnbench -m hydra/sweeper=optuna``): its jobs are trials without a
parent, tagged ``sweeper_direction``, and each names the metric the study optimised in
its ``objective`` tag (:mod:`rnnbench.objective`).
"""

from __future__ import annotations

import math

from rnnbench.report.collect import History, RunRecord, Selection
from rnnbench.report.content import Importance, TaskSection
from rnnbench.report.runs import IGNORED_PARAMS, guess_mode, varying
from rnnbench.tracking import Metrics, Params, SweepTags, Tags

_MAXIMIZE = ("max", "maximize")

# fANOVA ranks hyperparameters from the distinct points a sweep tried: fewer than this
# many per ranked hyperparameter (the variant excepted) cannot separate their effects
POINTS_PER_HYPERPARAMETER = 10


def trial_objective(runs: list[RunRecord], selection: Selection) -> tuple[str, str]:
    """The metric (and direction) that ranks trials: the sweep's declared objective, else
    ``val_loss``."""
    for run in runs:
        parent = selection.sweep_parents.get(run.parent_id or "")
        if parent is None:
            continue
        name = (parent.tags.get(SweepTags.OBJECTIVE)
                or parent.params.get(Params.TUNER_OBJECTIVE) or parent.params.get("objective"))
        if name:
            mode = (parent.tags.get(SweepTags.DIRECTION)
                    or parent.tags.get(Tags.OBJECTIVE_DIRECTION)
                    or parent.params.get(Params.TUNER_DIRECTION)
                    or parent.params.get("tuner.objective_direction") or guess_mode(name))
            return name, ("max" if mode.lower() in _MAXIMIZE else "min")
    return study_objective(runs) or ("val_loss", "min")


def study_objective(runs: list[RunRecord]) -> tuple[str, str] | None:
    """The metric and direction a Hydra study (Optuna) optimised, from its jobs' tags
    (the most common, should the runs mix studies); None when no run is such a job."""
    from collections import Counter

    pairs = Counter((r.tags[Tags.OBJECTIVE], r.tags.get(Tags.SWEEPER_DIRECTION, ""))
                    for r in runs if r.tags.get(Tags.SWEEPER_DIRECTION)
                    and r.tags.get(Tags.OBJECTIVE))
    if not pairs:
        return None
    (name, direction), _ = sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[0]
    return name, ("max" if direction.lower() in _MAXIMIZE else "min")


def _number(run: RunRecord, default: int) -> int:
    for key, offset in ((SweepTags.TRIAL_NUMBER, 0), (Tags.SWEEP_JOB, 1)):
        text = run.tags.get(key, "")
        if text.isdigit():
            return int(text) + offset
    return default


def history_points(runs: list[RunRecord], objective: tuple[str, str],
                   history: History) -> list[tuple[int, float, float]]:
    """A sweep's optimisation history: ``(trial, value, best so far)`` for each finished
    trial with a finite objective, in the order the trials ran (their start time); trial
    numbers are the ones the sweep used (``trial_number``, a Hydra job's number + 1), else
    their rank in that order."""
    name, mode = objective
    pick = min if mode == "min" else max
    done = sorted((r for r in runs if r.status == "FINISHED"),
                  key=lambda r: (r.start_ms, r.run_id))
    points: list[tuple[int, float, float]] = []
    best = math.nan
    for k, run in enumerate(done, start=1):
        k = _number(run, k)
        value = objective_value(run, name, mode, history)
        if not math.isfinite(value):
            continue
        best = value if not math.isfinite(best) else pick(best, value)
        points.append((k, value, best))
    return points


def objective_value(run: RunRecord, name: str, mode: str, history: History) -> float:
    if not name.startswith(("val_", "loss")) or name.startswith(Metrics.TEST_PREFIX):
        return run.metric(name)
    values = [v for _, v in history.metric(run.run_id, name) if math.isfinite(v)]
    if not values:
        return run.metric(name)
    return min(values) if mode == "min" else max(values)


def importance(section: TaskSection, objective: tuple[str, str],
                history: History) -> Importance:
    name, mode = objective
    trials = [r for r in section.runs if r.status == "FINISHED"]
    scored = [(r, objective_value(r, name, mode, history)) for r in trials]
    scored = [(r, v) for r, v in scored if math.isfinite(v)]
    imp = Importance(objective=name, n_trials=len(scored))
    keys = [k for k in varying([r for r, _ in scored], lambda k: k not in IGNORED_PARAMS)]
    # a trial logs each sampled value twice, under the tuner's name (``hp/lr``) and the
    # config key it sets (``optimizer.lr``); counting both would split its importance
    config_keys = [k for k in keys if not k.startswith(Params.HP_PREFIX)]
    keys = config_keys or keys
    if len(scored) < 5 or not keys:
        imp.note = (f"fANOVA needs at least 5 finished trials with `{name}` and a varying "
                    f"hyperparameter; this sweep has {len(scored)} and {len(keys)}.")
        return imp
    from rnnbench.report.importance import confounded, fanova

    imp.values = fanova([r.params for r, _ in scored], [v for _, v in scored], keys, mode)
    imp.interactions = max(0.0, 1.0 - math.fsum(v for _, v in imp.values))
    hp_keys = [k for k in keys if k != Params.CELL]
    distinct = {tuple(r.params.get(k, "") for k in hp_keys): r.params for r, _ in scored}
    imp.n_points = len(distinct)
    if hp_keys and imp.n_points < POINTS_PER_HYPERPARAMETER * len(hp_keys):
        imp.warnings.append(
            f"Only {imp.n_points} distinct hyperparameter points for {len(hp_keys)} ranked "
            f"hyperparameters ({', '.join(hp_keys)}): fewer than "
            f"{POINTS_PER_HYPERPARAMETER} per hyperparameter, so how the variance splits "
            f"among them is not identifiable; read only a dominant share.")
    for a, b, rho in confounded(list(distinct.values()), hp_keys):
        imp.warnings.append(
            f"`{a}` and `{b}` are confounded in this design (Spearman ρ = {rho:+.2f} over "
            f"the distinct points): their shares cannot be told apart.")
    return imp
