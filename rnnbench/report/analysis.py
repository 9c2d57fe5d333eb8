"""From run records to the numbers of a report: tasks, rows, comparisons, importance.

A report has one section per task (and per setting of the task's parameters that differs
between runs, e.g. ``task.length``), separately for plain runs and for sweep trials. A
section has one row per cell (split further by the implementation that ran and by any
other parameter that differs between runs of the same cell, the seed excepted).
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

from rnnbench.errors import ConfigError
from rnnbench.conventions import PLAIN_PARAMS
from rnnbench.report import stats
from rnnbench.report.collect import History, RunRecord, Selection

IGNORED_PARAMS = {"seed", "train.verbose", "tracking.uri", "tracking.name",
                  "tracking.experiment", "tracking.timeout_s", "tracking.log_model",
                  "tracking.skip_finished", "tracking.tensorboard", "objective.metric",
                  "objective.split", "objective.direction", "hardware.threads",
                  *PLAIN_PARAMS}
MAX_WORDS = ("acc", "accuracy", "auc", "f1", "r2", "precision", "recall", "bleu")
TRIAL_FRACTION = 0.1
ALPHA = 0.05
POWER = 0.8
DESIGNS = ("auto", "paired", "unpaired")
# fANOVA ranks hyperparameters from the distinct points a sweep tried: fewer than this
# many per ranked hyperparameter (the variant excepted) cannot separate their effects
POINTS_PER_HYPERPARAMETER = 10
ENV_TAGS = ("rnnbench_version", "python_version", "tensorflow_version", "keras_version",
            "backend", "hardware", "device", "visible_devices", "cpu", "replicas", "cudnn",
            "cudnn_eligible", "xla", "precision", "deterministic", "git_commit")


@dataclass
class ReportOptions:
    """What to put in a report.

    Args:
        baseline: the cell that every other cell is tested against (default ``lstm``).
        metric: the test metric to rank by, without the ``test_`` prefix; None: each
            task's own ``primary_metric`` tag.
        mode: ``min`` or ``max`` for ``metric``; None: the task's ``primary_mode`` when
            ``metric`` is its primary metric, else guessed from the name.
        confidence: the confidence level of the intervals.
        alpha: the significance level after Holm's correction.
        trial_fraction: the fraction of a sweep's trials that enter its statistic.
        design: ``auto`` pairs runs that share design points (the same seed in a
            multirun, the same hyperparameter values in sweeps) and tests the per-point
            differences, else compares unpaired; ``paired`` refuses comparisons that
            cannot be paired; ``unpaired``: Welch's test only.
    """

    baseline: str = "lstm"
    metric: str | None = None
    mode: str | None = None
    confidence: float = 0.95
    alpha: float = ALPHA
    trial_fraction: float = TRIAL_FRACTION
    design: str = "auto"


@dataclass
class Excluded:
    """A run that is listed but not averaged in, with the reason."""

    run: RunRecord
    row: str
    reason: str


@dataclass
class Row:
    """One cell (and implementation, and setting) of a task section, with its statistics."""

    label: str
    cell: str
    impl: str
    variant: dict[str, str]
    runs: list[RunRecord] = field(default_factory=list)
    used: list[RunRecord] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    interval: stats.Interval | None = None
    basis: str = ""
    params_count: str = ""
    sec_per_epoch: float = math.nan
    throughput: float = math.nan
    ran: str = ""
    rank: int | None = None
    other_metrics: dict[str, float] = field(default_factory=dict)
    curves: dict[int, list[float]] = field(default_factory=dict)
    grad_flow: dict[str, float] = field(default_factory=dict)
    profiles: dict[int, tuple[list[float], list[float]]] = field(default_factory=dict)
    # the profile of the weights the test metrics come from (restored by early
    # stopping), mean over runs, and the epochs those weights are from
    final_profile: tuple[list[float], list[float]] | None = None
    final_epochs: list[int] = field(default_factory=list)


@dataclass
class Comparison:
    """Welch's t-test of one row against the baseline row, with Holm's correction."""

    row: Row
    base: Row
    diff: float
    rel: float
    welch: stats.WelchResult
    p_holm: float = math.nan
    significant: bool | None = None
    verdict: str = ""
    mde: float = math.nan


@dataclass
class PairedComparison:
    """One row against the baseline row over the design points they share: seeds of a
    multirun, or hyperparameter points of sweeps with the same oracle seed and space.

    ``mde`` is the minimum detectable effect of the paired t-test at 80% power and the
    level ``alpha / m`` (m tests in the table: the level Holm's first step uses)."""

    row: Row
    base: Row
    points: list[str]
    row_values: list[float]
    base_values: list[float]
    result: stats.PairedResult
    p_t_holm: float = math.nan
    p_w_holm: float = math.nan
    mde: float = math.nan
    mde_alpha: float = math.nan
    significant: bool | None = None
    verdict: str = ""


@dataclass
class Importance:
    """fANOVA hyperparameter importance over a sweep's trials."""

    objective: str
    n_trials: int
    values: list[tuple[str, float]] = field(default_factory=list)
    note: str = ""
    n_points: int = 0
    interactions: float = math.nan
    warnings: list[str] = field(default_factory=list)


@dataclass
class TaskSection:
    """Everything the report says about one task (one setting, runs or trials)."""

    task: str
    family: str
    variant: dict[str, str]
    kind: str
    metric: str
    mode: str
    metric_note: str
    rows: list[Row] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)
    paired: list[PairedComparison] = field(default_factory=list)
    paired_note: str = ""
    design: str = "unpaired"
    excluded: list[Excluded] = field(default_factory=list)
    baseline_note: str = ""
    trivial: dict[str, float] = field(default_factory=dict)
    selection_note: str = ""
    importance: Importance | None = None
    runs: list[RunRecord] = field(default_factory=list)

    @property
    def title(self) -> str:
        bits = [self.task] + [f"{k}={v}" for k, v in sorted(self.variant.items())]
        title = " · ".join(bits)
        return title + (" (sweep trials)" if self.kind == "trial" else "")


@dataclass
class Analysis:
    """The whole content of a report, before it is rendered."""

    selection: Selection
    options: ReportOptions
    sections: list[TaskSection]
    ignored: list[RunRecord]
    environment: list[tuple[str, list[tuple[str, int]]]]
    status_counts: dict[str, int]
    commits: list[tuple[str, int]] = field(default_factory=list)
    provenance_warning: str = ""


# ---- helpers ------------------------------------------------------------------------

def natural_key(value: str) -> tuple:
    """Sort numbers numerically and before words: 50 < 100 < 200 < lstm."""
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def guess_mode(metric: str) -> str:
    name = metric.lower()
    return "max" if any(name == w or name.endswith("_" + w) or name.startswith(w)
                        for w in MAX_WORDS) else "min"


def _varying(runs: Iterable[RunRecord], keep: Any) -> list[str]:
    runs = list(runs)
    keys = sorted({k for r in runs for k in r.params if keep(k)})
    return [k for k in keys if len({r.params.get(k) for r in runs}) > 1]


def _is_task_param(key: str) -> bool:
    return key.startswith("task.") and key not in IGNORED_PARAMS


def _is_row_param(key: str) -> bool:
    return not key.startswith("task.") and key not in IGNORED_PARAMS and key != "cell.name"


def _run_sort_key(run: RunRecord) -> tuple:
    return (natural_key(run.seed), run.start_ms, run.run_id)


def _steady(history: list[tuple[int, float]]) -> float:
    """Median per-epoch value without the first epoch (it includes compilation)."""
    values = [v for s, v in history if math.isfinite(v)]
    if len(history) >= 2:
        values = [v for s, v in history[1:] if math.isfinite(v)]
    return statistics.median(values) if values else math.nan


def _mean(values: Iterable[float]) -> float:
    xs = [v for v in values if math.isfinite(v)]
    return math.fsum(xs) / len(xs) if xs else math.nan


# ---- the analysis -------------------------------------------------------------------

def analyse(selection: Selection, options: ReportOptions, history: History) -> Analysis:
    """Group the selected runs into task sections and compute every number of the report."""
    usable = [r for r in selection.runs if r.kind != "sweep"]
    ignored = [r for r in usable if not r.task or not r.cell]
    usable = [r for r in usable if r.task and r.cell]

    by_task: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
    for run in usable:
        by_task[(run.task, "trial" if run.kind == "trial" else "run")].append(run)

    sections = []
    for (task, kind) in sorted(by_task, key=lambda k: (k[0], k[1] == "trial")):
        runs = by_task[(task, kind)]
        variant_keys = _varying(runs, _is_task_param) if kind == "run" else []
        split: dict[tuple, list[RunRecord]] = defaultdict(list)
        for run in runs:
            split[tuple(run.params.get(k, "") for k in variant_keys)].append(run)
        for vals in sorted(split, key=lambda v: tuple(natural_key(x) for x in v)):
            variant = dict(zip(variant_keys, vals))
            sections.append(_section(task, kind, variant, split[vals], selection, options,
                                     history))

    env: list[tuple[str, list[tuple[str, int]]]] = []
    for key in ENV_TAGS:
        counts = Counter(r.tags[key] for r in usable if key in r.tags)
        if counts:
            env.append((key, sorted(counts.items(), key=lambda kv: natural_key(kv[0]))))
    status_counts = dict(sorted(Counter(r.status for r in usable).items()))
    commits, warning = provenance(usable)
    return Analysis(selection, options, sections, ignored, env, status_counts, commits,
                    warning)


UNKNOWN_COMMIT = "(unknown: not run from a git checkout)"


def provenance(runs: list[RunRecord]) -> tuple[list[tuple[str, int]], str]:
    """The code versions (``git_commit`` tags) the runs span, with how many runs each,
    and a warning when they are more than one, or a dirty tree, or unknown."""
    counts = Counter(r.tags.get("git_commit") or UNKNOWN_COMMIT for r in runs)
    commits = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    problems = []
    if len(commits) > 1:
        problems.append(f"{len(commits)} code versions")
    dirty = sum(n for c, n in commits if c.endswith("-dirty"))
    if dirty:
        problems.append(f"{dirty} run{'s' if dirty != 1 else ''} from a tree with "
                        f"uncommitted changes")
    unknown = counts.get(UNKNOWN_COMMIT, 0)
    if unknown:
        problems.append(f"{unknown} run{'s' if unknown != 1 else ''} with no recorded commit")
    if not problems:
        return commits, ""
    return commits, ("The runs mix " + " and ".join(problems) + ": differences between "
                     "cells may come from the code, not the cells. Re-run them from one clean "
                     "commit (e.g. a `git worktree` at a tag) for a comparison on one code "
                     "version; --require-clean refuses such a mix.")


def check_clean(runs: list[RunRecord]) -> None:
    """Refuse runs from several commits, a dirty tree or no commit (``--require-clean``),
    listing the runs by commit."""
    commits, warning = provenance(runs)
    if not warning:
        return
    lines = []
    for commit, n in commits:
        names = [r.name + f" ({r.run_id[:8]})" for r in runs
                 if (r.tags.get("git_commit") or UNKNOWN_COMMIT) == commit]
        shown = ", ".join(names[:6]) + (f", … {len(names) - 6} more" if len(names) > 6 else "")
        lines.append(f"  {commit}: {n} run{'s' if n != 1 else ''}: {shown}")
    raise ConfigError("--require-clean: " + warning.split(":")[0] + ". Runs by commit:\n"
                      + "\n".join(lines) + "\nNothing was written. Narrow the selection "
                      "(e.g. --filter \"tags.git_commit = '<commit>'\") or re-run the "
                      "others from that commit.")


def _section(task: str, kind: str, variant: dict[str, str], runs: list[RunRecord],
             selection: Selection, options: ReportOptions, history: History) -> TaskSection:
    primaries = Counter(r.tags.get("primary_metric") for r in runs if r.tags.get("primary_metric"))
    primary = sorted(primaries.items(), key=lambda kv: (-kv[1], kv[0]))[0][0] if primaries else None
    modes = Counter(r.tags.get("primary_mode") for r in runs
                    if r.tags.get("primary_metric") == primary and r.tags.get("primary_mode"))
    primary_mode = sorted(modes.items(), key=lambda kv: (-kv[1], kv[0]))[0][0] if modes else None
    family = Counter(r.tags.get("task_family", "") for r in runs).most_common(1)[0][0]
    if options.metric:
        metric = options.metric.removeprefix("test_")
        mode = options.mode or (primary_mode if metric == primary and primary_mode
                                else guess_mode(metric))
        note = (f"`test_{metric}` ({'lower' if mode == 'min' else 'higher'} is better), "
                f"chosen with --metric")
    elif primary:
        metric = primary
        mode = options.mode or primary_mode or guess_mode(metric)
        note = (f"`test_{metric}` ({'lower' if mode == 'min' else 'higher'} is better), "
                f"the task's primary metric")
    else:
        metric, mode = "loss", options.mode or "min"
        note = "`test_loss` (lower is better): the runs name no primary metric"

    section = TaskSection(task=task, family=family, variant=variant, kind=kind, metric=metric,
                          mode=mode, metric_note=note, runs=sorted(runs, key=_run_sort_key))
    key = f"test_{metric}"

    # rows: cell x implementation x any other parameter that differs between the runs of
    # a cell that give a number (a diverged run with an extreme setting joins its cell's
    # row as "not averaged in" instead of making a row of its own)
    by_cell: dict[str, list[RunRecord]] = defaultdict(list)
    for run in runs:
        if not _exclusion(run, key):
            by_cell[run.cell or "?"].append(run)
    row_keys = sorted({k for cell_runs in by_cell.values()
                       for k in (_varying(cell_runs, _is_row_param) if kind == "run" else [])})
    groups: dict[tuple, list[RunRecord]] = defaultdict(list)
    for run in runs:
        impl = run.tags.get("impl", "")
        groups[(run.cell or "?", impl, tuple(run.params.get(k, "") for k in row_keys))].append(run)
    impls_per_cell = Counter(cell for cell, _, _ in {(c, i, 0) for c, i, _ in groups})

    def order(k: tuple) -> tuple:
        cell, impl, vals = k
        return (cell != options.baseline, cell, impl, tuple(natural_key(v) for v in vals))

    objective = _objective(runs, selection) if kind == "trial" else None
    for gkey in sorted(groups, key=order):
        cell, impl, vals = gkey
        variant_row = dict(zip(row_keys, vals))
        label = cell + (f" [{impl}]" if impls_per_cell[cell] > 1 else "")
        if variant_row:
            label += " · " + ", ".join(f"{k}={v}" for k, v in variant_row.items())
        row = Row(label=label, cell=cell, impl=impl, variant=variant_row,
                  runs=sorted(groups[gkey], key=_run_sort_key))
        for run in row.runs:
            reason = _exclusion(run, key)
            if reason:
                section.excluded.append(Excluded(run, label, reason))
        good = [r for r in row.runs if not _exclusion(r, key)]
        if kind == "trial" and good:
            name, obj_mode = objective
            scored = [(r, _objective_value(r, name, obj_mode, history)) for r in good]
            best = stats.best_fraction(scored, lambda pair: pair[1], obj_mode,
                                       options.trial_fraction)
            row.used = sorted((r for r, _ in best), key=_run_sort_key)
            row.basis = (f"best {len(row.used)} of {len(good)} trials by {name}"
                         if row.used else f"no trial has {name}")
        else:
            row.used = good
            seeds = sorted({r.seed for r in good}, key=natural_key)
            row.basis = f"seeds {', '.join(seeds)}" if seeds else "no finished run"
        _fill_row(row, key, options, history)
        section.rows.append(row)

    _rank(section)
    _compare(section, options)
    _compare_paired(section, options)
    trivial = defaultdict(list)
    for run in section.runs:
        for k, v in run.metrics.items():
            if k.startswith("baseline_") and math.isfinite(v):
                trivial[k.removeprefix("baseline_")].append(v)
    section.trivial = {k: _mean(v) for k, v in sorted(trivial.items())}
    section.excluded.sort(key=lambda e: (e.row, _run_sort_key(e.run)))
    if kind == "trial":
        name, obj_mode = objective
        section.selection_note = (
            f"Each row averages the best {options.trial_fraction:.0%} of its finished trials "
            f"(at least one), ranked by `{name}` ({'lowest' if obj_mode == 'min' else 'highest'}"
            f" first), as Greff et al. (2017) do; the test metric of those trials is reported.")
        section.importance = _importance(section, objective, history)
    else:
        section.selection_note = "Each row averages its finished runs over seeds."
    return section


def _exclusion(run: RunRecord, key: str) -> str:
    """Why ``run`` is not averaged in (its status says the rest), or "" when it is."""
    if run.status != "FINISHED":
        reason = " ".join(run.tags.get("failure_reason", "").split())
        if run.status == "RUNNING":
            return reason or "still running, or its process died without closing it"
        return reason or "no reason recorded"
    value = run.metrics.get(key)
    if value is None:
        return f"no `{key}` metric"
    if not math.isfinite(value):
        return f"non-finite `{key}` ({value})"
    return ""


def shorten(text: str, limit: int = 240) -> str:
    """``text`` on one line, its middle cut out when longer than ``limit``."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    head = limit // 3
    return text[:head].rstrip() + " … " + text[-(limit - head - 3):].lstrip()


def _fill_row(row: Row, key: str, options: ReportOptions, history: History) -> None:
    row.values = [r.metric(key) for r in row.used]
    row.interval = _interval(row.values, options.confidence)
    counts = sorted({int(r.metrics["params_count"]) for r in (row.used or row.runs)
                     if "params_count" in r.metrics and math.isfinite(r.metrics["params_count"])})
    row.params_count = (f"{counts[0]:,}" if len(counts) == 1
                        else f"{counts[0]:,}–{counts[-1]:,}" if counts else "")
    row.sec_per_epoch = _mean(_steady(history.metric(r.run_id, "epoch_time_s"))
                              for r in row.used)
    row.throughput = _mean(_steady(history.metric(r.run_id, "throughput_samples_per_s"))
                           for r in row.used)
    ran = []
    for r in row.used or row.runs:
        bits = [r.tags.get("impl", "?"), f"XLA {r.tags.get('xla', '?')}"]
        cudnn = r.tags.get("cudnn")
        bits.append("cuDNN" if cudnn == "true" else "no cuDNN")
        ran.append(" · ".join(bits))
    row.ran = "; ".join(sorted(set(ran)))
    others = defaultdict(list)
    for r in row.used:
        for k, v in r.metrics.items():
            if k.startswith("test_") and k != key:
                others[k.removeprefix("test_")].append(v)
    row.other_metrics = {k: _mean(v) for k, v in sorted(others.items())}
    curves: dict[int, list[float]] = defaultdict(list)
    for r in row.used:
        for step, value in history.metric(r.run_id, "val_loss"):
            if math.isfinite(value):
                curves[step].append(value)
    row.curves = dict(sorted(curves.items()))
    flows = defaultdict(list)
    for r in row.used:
        for k, v in r.metrics.items():
            if k.startswith("grad_flow/"):
                flows[k.removeprefix("grad_flow/")].append(v)
    row.grad_flow = {k: _mean(v) for k, v in sorted(flows.items())}
    profiles: dict[int, list[tuple[list[float], list[float]]]] = defaultdict(list)
    for r in row.used:
        for epoch, lags, g in parse_gradient_flow(history.gradient_flow(r.run_id)):
            profiles[epoch].append((lags, g))
    for epoch, items in sorted(profiles.items()):
        lags = items[0][0]
        same = [g for lg, g in items if lg == lags]
        row.profiles[epoch] = (lags, [_mean(col) for col in zip(*same)])
    finals = []
    for r in row.used:
        obj = history.gradient_flow(r.run_id)
        final = obj.get("final") if isinstance(obj, dict) else None
        if isinstance(final, dict) and isinstance(final.get("g"), list):
            parsed = parse_gradient_flow({"epochs": [final]})
            if parsed:
                finals.append(parsed[0])
    if finals:
        lags = finals[0][1]
        same = [g for _, lg, g in finals if lg == lags]
        row.final_profile = (lags, [_mean(col) for col in zip(*same)])
        row.final_epochs = sorted({e for e, _, _ in finals})


def _interval(values: list[float], confidence: float) -> stats.Interval:
    """The mean with its t interval; with fewer than 3 values no interval is meaningful
    (the half-width is NaN and the report says so)."""
    iv = stats.mean_ci(values, confidence)
    if iv.n < stats.MIN_INTERVAL_N:
        return stats.Interval(iv.mean, math.nan, iv.n, iv.sd, confidence)
    return iv


def _rank(section: TaskSection) -> None:
    sign = 1.0 if section.mode == "min" else -1.0
    ranked = sorted((r for r in section.rows if r.interval and math.isfinite(r.interval.mean)),
                    key=lambda r: (sign * r.interval.mean, r.label))
    for i, row in enumerate(ranked, 1):
        row.rank = i
    section.rows.sort(key=lambda r: (r.rank is None, r.rank or 0, r.label))


def _baseline_of(row: Row, bases: list[Row]) -> Row | None:
    matches = [b for b in bases if b.variant == row.variant]
    if not matches:
        return None
    return next((b for b in matches if b.impl == row.impl), matches[0])


def _verdict(diff: float, significant: bool, mode: str) -> str:
    better = (diff < 0) == (mode == "min")
    return ("better" if better else "worse") + " (significant)" if significant \
        else "not significant"


def _compare(section: TaskSection, options: ReportOptions) -> None:
    """Welch's t-test of each row's values against the baseline row's (unpaired)."""
    bases = [r for r in section.rows if r.cell == options.baseline and r.values]
    if not bases:
        section.baseline_note = (
            f"No significance tests: the baseline cell `{options.baseline}` has no finished "
            f"run here (choose another with --baseline).")
        return
    for row in section.rows:
        if row.cell == options.baseline or not row.values:
            continue
        base = _baseline_of(row, bases)
        if base is None:
            continue
        diff = row.interval.mean - base.interval.mean
        rel = diff / abs(base.interval.mean) if base.interval.mean else math.nan
        few = min(len(row.values), len(base.values)) < stats.MIN_INTERVAL_N
        welch = (stats.WelchResult(math.nan, math.nan, math.nan) if few
                 else stats.welch_t(row.values, base.values))
        section.comparisons.append(Comparison(row, base, diff, rel, welch))
    adjusted = stats.holm([c.welch.p for c in section.comparisons])
    n_tests = sum(1 for p in adjusted if not math.isnan(p))
    level = options.alpha / max(n_tests, 1)
    for comp, p in zip(section.comparisons, adjusted):
        comp.p_holm = p
        if math.isnan(p):
            comp.significant = None
            if min(len(comp.row.values), len(comp.base.values)) < stats.MIN_INTERVAL_N:
                comp.verdict = "n/a (fewer than 3 values a side)"
            else:
                comp.verdict = "n/a (no spread in either sample)"
            continue
        comp.significant = p < options.alpha
        comp.verdict = _verdict(comp.diff, comp.significant, section.mode)
        comp.mde = stats.mde_welch(comp.row.values, comp.base.values, level, POWER)
    if not section.comparisons:
        section.baseline_note = (f"Nothing to test: no other cell has finished runs in the "
                                 f"same setting as `{options.baseline}` here.")
        return
    if n_tests == 0:
        section.baseline_note = (
            f"No significance tests: Welch's t-test against `{options.baseline}` needs at "
            f"least three values on each side and some spread; no comparison here has them.")
        return
    section.baseline_note = (
        f"Welch's t-test (two-sided, unpaired) of each cell against `{options.baseline}`; "
        f"p-values corrected with Holm's method over the {n_tests} "
        f"test{'s' if n_tests != 1 else ''} of this table; significant means corrected "
        f"p < {options.alpha:g}. MDE: the smallest difference of means this test finds "
        f"with {POWER:.0%} power at level {options.alpha:g}/{n_tests} (Holm's first step), "
        f"given the samples' spread, in the metric's units.")


def design_point(run: RunRecord, kind: str) -> str | None:
    """The design point a run stands for: its seed in a multirun; for a sweep trial, the
    values of every sampled hyperparameter (``hp/<label>`` params), which are the same
    in sweeps that share the oracle's seed and search space."""
    if kind != "trial":
        return f"seed={run.seed}" if run.seed != "" else None
    hps = sorted((k.removeprefix("hp/"), v) for k, v in run.params.items()
                 if k.startswith("hp/"))
    return ", ".join(f"{k}={v}" for k, v in hps) if hps else None


def _points(row: Row, key: str, kind: str) -> dict[str, float]:
    """Each design point of ``row`` with its value of ``key`` (the latest finished run
    at that point: a retried trial counts once)."""
    out: dict[str, float] = {}
    for run in sorted(row.runs, key=lambda r: (r.start_ms, r.run_id)):
        point = design_point(run, kind)
        if point is not None and not _exclusion(run, key):
            out[point] = run.metric(key)
    return out


def _check_pairable(section: TaskSection, options: ReportOptions) -> None:
    """A paired test compares one metric of one task setting: refuse a selection that
    would mix tasks settings or metrics into one."""
    task_keys = _varying(section.runs, _is_task_param)
    if task_keys:
        raise ConfigError(
            f"{section.title}: the selected runs differ in {', '.join(task_keys)}, so a "
            f"paired test would mix task settings. Narrow the selection with --filter "
            f"(e.g. \"params.{task_keys[0]} = '...'\") or report them with --design unpaired.")
    if not options.metric:
        metrics = sorted({r.tags["primary_metric"] for r in section.runs
                          if r.tags.get("primary_metric")})
        if len(metrics) > 1:
            raise ConfigError(
                f"{section.title}: the selected runs rank by different metrics "
                f"({', '.join(metrics)}), so a paired test would mix them. Choose one with "
                f"--metric, or narrow the selection with --filter.")


def _compare_paired(section: TaskSection, options: ReportOptions) -> None:
    """Paired t and Wilcoxon signed-rank tests of each row against the baseline over the
    design points both have, Holm's correction over each family (table)."""
    if options.design == "unpaired":
        section.paired_note = "Paired analysis not asked for (--design unpaired)."
        return
    bases = [r for r in section.rows if r.cell == options.baseline]
    key = f"test_{section.metric}"
    unpairable = []
    candidates = []
    for row in section.rows:
        if row.cell == options.baseline:
            continue
        base = _baseline_of(row, bases)
        if base is None:
            continue
        mine, theirs = _points(row, key, section.kind), _points(base, key, section.kind)
        shared = sorted(set(mine) & set(theirs), key=natural_key)
        if len(shared) < 2:
            unpairable.append((row, base, len(mine), len(theirs), len(shared)))
            continue
        candidates.append((row, base, shared, mine, theirs))
    if candidates:
        _check_pairable(section, options)
    what = ("hyperparameter points (the same `hp/*` values: sweeps with a shared oracle "
            "seed and search space)" if section.kind == "trial" else "seeds")
    if options.design == "paired" and unpairable:
        row, base, a, b, n = unpairable[0]
        raise ConfigError(
            f"{section.title}: --design paired, but `{row.label}` and `{base.label}` share "
            f"{n} of their {what} ({a} and {b} finished with `{key}`); a paired test needs "
            f"at least 2 shared points. "
            + ("Run the sweeps with the same seed (the oracle's) and search space."
               if section.kind == "trial" else "Run the cells with the same seeds.")
            + " Or use --design unpaired.")
    for row, base, shared, mine, theirs in candidates:
        a, b = [mine[p] for p in shared], [theirs[p] for p in shared]
        section.paired.append(PairedComparison(row, base, shared, a, b,
                                               stats.paired(a, b, options.confidence)))
    adj_t = stats.holm([c.result.p_t for c in section.paired])
    adj_w = stats.holm([c.result.p_w for c in section.paired])
    m = sum(1 for p in adj_t if not math.isnan(p))
    for comp, pt, pw in zip(section.paired, adj_t, adj_w):
        comp.p_t_holm, comp.p_w_holm = pt, pw
        comp.mde_alpha = options.alpha / max(m, 1)
        comp.mde = stats.mde_paired(comp.result.sd, comp.result.n, comp.mde_alpha, POWER)
        if math.isnan(pt):
            comp.verdict = ("n/a (fewer than 3 shared points)"
                            if comp.result.n < stats.MIN_INTERVAL_N
                            else "n/a (the differences have no spread)")
            continue
        comp.significant = pt < options.alpha
        comp.verdict = _verdict(comp.result.mean, comp.significant, section.mode)
    if section.paired:
        section.design = "paired"
        section.paired_note = (
            f"Paired over the {what} that each cell shares with `{options.baseline}`: "
            f"Δ is the cell's value minus the baseline's at the same point, with its "
            f"{options.confidence:.0%} t interval and effect size d_z = mean(Δ)/sd(Δ). "
            f"Paired t-test and Wilcoxon signed-rank test (two-sided, scipy), each corrected "
            f"with Holm's method over the {m} comparison{'s' if m != 1 else ''} of this "
            f"table; significant means the paired t-test's corrected p < {options.alpha:g}. "
            f"MDE: the smallest mean difference the paired t-test finds with {POWER:.0%} "
            f"power at level {options.alpha:g}/{max(m, 1)} (Holm's first step), given the "
            f"spread of the differences, in the metric's units.")
        if unpairable:
            section.paired_note += " Not paired (fewer than 2 shared points): " + ", ".join(
                f"`{row.label}` ({n} shared)" for row, _, _, _, n in unpairable) + "."
    elif unpairable:
        row, base, a, b, n = unpairable[0]
        section.paired_note = (
            f"No paired test: `{row.label}` and `{base.label}` share {n} of their {what}; "
            f"pairing needs at least 2. The unpaired table is the comparison.")


# ---- sweeps -------------------------------------------------------------------------

def _objective(runs: list[RunRecord], selection: Selection) -> tuple[str, str]:
    """The metric (and direction) that ranks trials: the sweep's declared objective, else
    ``val_loss``."""
    for run in runs:
        parent = selection.sweep_parents.get(run.parent_id or "")
        if parent is None:
            continue
        name = (parent.tags.get("objective") or parent.params.get("tuner.objective")
                or parent.params.get("objective"))
        if name:
            mode = (parent.tags.get("direction") or parent.tags.get("objective_direction")
                    or parent.params.get("tuner.direction")
                    or parent.params.get("tuner.objective_direction") or guess_mode(name))
            return name, ("max" if mode.lower() in ("max", "maximize") else "min")
    return "val_loss", "min"


def _objective_value(run: RunRecord, name: str, mode: str, history: History) -> float:
    if not name.startswith(("val_", "loss")) or name.startswith("test_"):
        return run.metric(name)
    values = [v for _, v in history.metric(run.run_id, name) if math.isfinite(v)]
    if not values:
        return run.metric(name)
    return min(values) if mode == "min" else max(values)


def _importance(section: TaskSection, objective: tuple[str, str],
                history: History) -> Importance:
    name, mode = objective
    trials = [r for r in section.runs if r.status == "FINISHED"]
    scored = [(r, _objective_value(r, name, mode, history)) for r in trials]
    scored = [(r, v) for r, v in scored if math.isfinite(v)]
    imp = Importance(objective=name, n_trials=len(scored))
    keys = [k for k in _varying([r for r, _ in scored], lambda k: k not in IGNORED_PARAMS)]
    # a trial logs each sampled value twice, under the tuner's name (``hp/lr``) and the
    # config key it sets (``optimizer.lr``); counting both would split its importance
    config_keys = [k for k in keys if not k.startswith("hp/")]
    keys = config_keys or keys
    if len(scored) < 5 or not keys:
        imp.note = (f"fANOVA needs at least 5 finished trials with `{name}` and a varying "
                    f"hyperparameter; this sweep has {len(scored)} and {len(keys)}.")
        return imp
    from rnnbench.report.importance import confounded, fanova

    imp.values = fanova([r.params for r, _ in scored], [v for _, v in scored], keys, mode)
    imp.interactions = max(0.0, 1.0 - math.fsum(v for _, v in imp.values))
    hp_keys = [k for k in keys if k != "cell.name"]
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


# ---- gradient flow ------------------------------------------------------------------

def parse_gradient_flow(obj: Any) -> list[tuple[int, list[float], list[float]]]:
    """``(epoch, lags, g)`` profiles from the diagnostics' gradient-flow JSON.

    The diagnostics component writes ``{"epochs": [{"epoch": e, "g": [...]}, ...]}`` with
    ``g[k]`` the gradient norm at lag ``k`` (0: the final step) and null for a
    non-finite value. Also accepted: an explicit ``"lags"`` list (top level or per
    epoch), ``"profiles": {"<epoch>": [...]}``, a bare list of epoch entries, and ``g``
    named ``profile``, ``norms`` or ``values``. Anything else gives no profile.
    """
    if obj is None:
        return []
    out: list[tuple[int, list[float], list[float]]] = []

    def values_of(item: dict) -> list | None:
        for k in ("g", "profile", "norms", "values"):
            if isinstance(item.get(k), list):
                return item[k]
        return None

    def add(epoch: Any, lags: Any, g: Any) -> None:
        try:
            e = int(epoch)
            gs = [math.nan if x is None else float(x) for x in g]
            ls = ([float(x) for x in lags] if lags is not None
                  else [float(i) for i in range(len(gs))])
        except (TypeError, ValueError):
            return
        if len(ls) == len(gs) and gs:
            out.append((e, ls, gs))

    if isinstance(obj, dict):
        lags = obj.get("lags")
        entries = obj.get("epochs") if isinstance(obj.get("epochs"), list) else None
        entries = entries or obj.get("profiles")
        if isinstance(entries, dict):
            for epoch, g in entries.items():
                add(epoch, lags, g if isinstance(g, list) else None)
        elif isinstance(entries, list):
            for i, item in enumerate(entries):
                if isinstance(item, dict):
                    add(item.get("epoch", i), item.get("lags", lags), values_of(item))
    elif isinstance(obj, list):
        for i, item in enumerate(obj):
            if isinstance(item, dict):
                add(item.get("epoch", i), item.get("lags"), values_of(item))
    return sorted(out, key=lambda p: p[0])
