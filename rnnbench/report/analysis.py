"""From run records to the numbers of a report: tasks, rows, comparisons, importance.

A report has one section per task (and per setting of the task's parameters that differs
between runs, e.g. ``task.length``), separately for plain runs and for sweep trials. A
section has one row per cell (split further by the implementation that ran and by any
other parameter that differs between runs of the same cell, the seed excepted).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Iterable

from rnnbench.errors import ConfigError
from rnnbench.report import stats, verdicts
from rnnbench.report.budget import analyse_budget
from rnnbench.report.collect import History, RunRecord, Selection
from rnnbench.report.compare import compare_paired, compare_unpaired, interval, rank_rows
from rnnbench.report.content import Analysis, Excluded, ReportOptions, Row, TaskSection
from rnnbench.report.gradient_flow import fill_gradient_flow
from rnnbench.report.runs import (exclusion, guess_mode, is_row_param, is_task_param, mean_of,
                                  natural_key, run_sort_key, steady, varying)
from rnnbench.report.sweeps import history_points, importance, objective_value, trial_objective
from rnnbench.tracking import EnvTags, Metrics, RunKind, Tags

# the tags of the environment table: what the runs ran on
ENV_TAGS = EnvTags.ENVIRONMENT


def analyse(selection: Selection, options: ReportOptions, history: History) -> Analysis:
    """Group the selected runs into task sections and compute every number of the report."""
    usable = [r for r in selection.runs if r.kind != RunKind.SWEEP]
    _add_log_metrics(usable, options)
    ignored = [r for r in usable if not r.task or not r.cell]
    usable = [r for r in usable if r.task and r.cell]

    by_task: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
    for run in usable:
        kind = RunKind.TRIAL if run.kind == RunKind.TRIAL else RunKind.RUN
        by_task[(run.task, kind)].append(run)

    sections = []
    for (task, kind) in sorted(by_task, key=lambda k: (k[0], k[1] == RunKind.TRIAL)):
        runs = by_task[(task, kind)]
        variant_keys = varying(runs, is_task_param) if kind == RunKind.RUN else []
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
    counts = Counter(r.tags.get(Tags.GIT_COMMIT) or UNKNOWN_COMMIT for r in runs)
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
                 if (r.tags.get(Tags.GIT_COMMIT) or UNKNOWN_COMMIT) == commit]
        shown = ", ".join(names[:6]) + (f", … {len(names) - 6} more" if len(names) > 6 else "")
        lines.append(f"  {commit}: {n} run{'s' if n != 1 else ''}: {shown}")
    raise ConfigError("--require-clean: " + warning.split(":")[0] + ". Runs by commit:\n"
                      + "\n".join(lines) + "\nNothing was written. Narrow the selection "
                      "(e.g. --filter \"tags.git_commit = '<commit>'\") or re-run the "
                      "others from that commit.")


def _section(task: str, kind: str, variant: dict[str, str], runs: list[RunRecord],
             selection: Selection, options: ReportOptions, history: History) -> TaskSection:
    metric, mode, note = _ranking_metric(runs, options)
    section = TaskSection(task=task, family=_family(runs), variant=variant, kind=kind,
                          metric=metric, mode=mode, metric_note=note,
                          runs=sorted(runs, key=run_sort_key))
    objective = trial_objective(runs, selection) if kind == RunKind.TRIAL else None
    _rows(section, runs, options, history, objective)
    rank_rows(section)
    compare_unpaired(section, options)
    compare_paired(section, options)
    trivial = defaultdict(list)
    for run in section.runs:
        for k, v in run.metrics.items():
            if k.startswith(Metrics.BASELINE_PREFIX) and math.isfinite(v):
                trivial[k.removeprefix(Metrics.BASELINE_PREFIX)].append(v)
    section.trivial = {k: mean_of(v) for k, v in sorted(trivial.items())}
    section.excluded.sort(key=lambda e: (e.row, run_sort_key(e.run)))
    if kind == RunKind.TRIAL:
        name, obj_mode = objective
        section.selection_note = (
            f"Each row averages the best {options.trial_fraction:.0%} of its finished trials "
            f"(at least one), ranked by `{name}` ({'lowest' if obj_mode == 'min' else 'highest'}"
            f" first), as Greff et al. (2017) do; the test metric of those trials is reported.")
        section.importance = importance(section, objective, history)
        section.history = history_points(section.runs, objective, history)
        section.history_objective = objective
        analyse_budget(section, options, history, objective)
    else:
        section.selection_note = "Each row averages its finished runs over seeds."
    return section


def _most_common(values: Iterable[str]) -> str | None:
    """The most frequent value (ties: the first in sort order), None when there is none."""
    counts = Counter(values)
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0] if counts else None


def _family(runs: list[RunRecord]) -> str:
    return Counter(r.tags.get(Tags.TASK_FAMILY, "") for r in runs).most_common(1)[0][0]


def _log_keys(options: ReportOptions) -> set[str]:
    """The ``test_ln_*`` metrics the report compares: asked with --metric ln_X, or by a
    ratio margin (--equivalence-margin test_X=xF)."""
    keys = {k for k in options.equivalence_margins if verdicts.is_log_metric(k)}
    if options.metric:
        name = Metrics.TEST_PREFIX + options.metric.removeprefix(Metrics.TEST_PREFIX)
        if verdicts.is_log_metric(name):
            keys.add(name)
    return keys


def _add_log_metrics(runs: list[RunRecord], options: ReportOptions) -> None:
    """``test_ln_X = ln(test_X)`` on every run that has ``test_X`` (NaN where it is not
    positive: such a run is listed as not averaged in, with the value)."""
    for key in _log_keys(options):
        source = Metrics.TEST_PREFIX + key.removeprefix(verdicts.LOG_PREFIX)
        for run in runs:
            value = run.metrics.get(source)
            if value is not None:
                run.metrics[key] = (math.log(value) if math.isfinite(value) and value > 0
                                    else math.nan)


def _on_log_scale(choice: tuple[str, str, str],
                  options: ReportOptions) -> tuple[str, str, str]:
    """The ranking metric as ``ln_<metric>`` when a ratio margin was given for it."""
    metric, mode, note = choice
    key = verdicts.LOG_PREFIX + metric
    if key not in options.equivalence_margins:
        return choice
    factor = math.exp(options.equivalence_margins[key])
    return "ln_" + metric, mode, (
        f"{note}, compared as `ln(test_{metric})` (the log scale that "
        f"--equivalence-margin test_{metric}=x{factor:.4g} asks for: a difference of logs "
        f"is the log of a ratio, and exp of a mean of logs a geometric mean)")


def _ranking_metric(runs: list[RunRecord], options: ReportOptions) -> tuple[str, str, str]:
    """The test metric a section ranks by (without ``test_``), its mode, and a note saying
    why: chosen with --metric, the task's primary metric (its tags), else the loss."""
    primary = _most_common(r.tags[Tags.PRIMARY_METRIC] for r in runs
                           if r.tags.get(Tags.PRIMARY_METRIC))
    primary_mode = _most_common(r.tags[Tags.PRIMARY_MODE] for r in runs
                                if r.tags.get(Tags.PRIMARY_METRIC) == primary
                                and r.tags.get(Tags.PRIMARY_MODE))
    if options.metric:
        metric = options.metric.removeprefix(Metrics.TEST_PREFIX)
        mode = options.mode or (primary_mode if metric == primary and primary_mode
                                else guess_mode(metric))
        return _on_log_scale((metric, mode, (
            f"`test_{metric}` ({'lower' if mode == 'min' else 'higher'} is better), chosen "
            f"with --metric")), options)
    if primary:
        mode = options.mode or primary_mode or guess_mode(primary)
        return _on_log_scale((primary, mode, (
            f"`test_{primary}` ({'lower' if mode == 'min' else 'higher'} is better), the "
            f"task's primary metric")), options)
    return "loss", options.mode or "min", ("`test_loss` (lower is better): the runs name no "
                                           "primary metric")


def _rows(section: TaskSection, runs: list[RunRecord], options: ReportOptions,
          history: History, objective: tuple[str, str] | None) -> None:
    """The section's rows: cell x implementation x any other parameter that differs
    between the runs of a cell that give a number (a diverged run with an extreme setting
    joins its cell's row as "not averaged in" instead of making a row of its own)."""
    key = Metrics.TEST_PREFIX + section.metric
    by_cell: dict[str, list[RunRecord]] = defaultdict(list)
    for run in runs:
        if not exclusion(run, key):
            by_cell[run.cell or "?"].append(run)
    row_keys = sorted({k for cell_runs in by_cell.values()
                       for k in (varying(cell_runs, is_row_param)
                                 if section.kind == RunKind.RUN else [])})
    groups: dict[tuple, list[RunRecord]] = defaultdict(list)
    for run in runs:
        impl = run.tags.get(Tags.IMPL, "")
        groups[(run.cell or "?", impl, tuple(run.params.get(k, "") for k in row_keys))].append(run)
    impls_per_cell = Counter(cell for cell, _, _ in {(c, i, 0) for c, i, _ in groups})

    def order(k: tuple) -> tuple:
        cell, impl, vals = k
        return (cell != options.baseline, cell, impl, tuple(natural_key(v) for v in vals))

    for gkey in sorted(groups, key=order):
        cell, impl, vals = gkey
        variant_row = dict(zip(row_keys, vals))
        label = cell + (f" [{impl}]" if impls_per_cell[cell] > 1 else "")
        if variant_row:
            label += " · " + ", ".join(f"{k}={v}" for k, v in variant_row.items())
        row = Row(label=label, cell=cell, impl=impl, variant=variant_row,
                  runs=sorted(groups[gkey], key=run_sort_key))
        for run in row.runs:
            reason = exclusion(run, key)
            if reason:
                section.excluded.append(Excluded(run, label, reason))
        _choose_used(row, key, options, history, objective)
        _fill_row(row, key, options, history)
        section.rows.append(row)


def _choose_used(row: Row, key: str, options: ReportOptions, history: History,
                 objective: tuple[str, str] | None) -> None:
    """The runs a row averages: every finished one (over seeds), or for sweep trials the
    best ``trial_fraction`` of them by the sweep's objective."""
    good = [r for r in row.runs if not exclusion(r, key)]
    if objective is not None and good:
        name, obj_mode = objective
        scored = [(r, objective_value(r, name, obj_mode, history)) for r in good]
        best = stats.best_fraction(scored, lambda pair: pair[1], obj_mode,
                                   options.trial_fraction)
        row.used = sorted((r for r, _ in best), key=run_sort_key)
        row.basis = (f"best {len(row.used)} of {len(good)} trials by {name}"
                     if row.used else f"no trial has {name}")
    else:
        row.used = good
        seeds = sorted({r.seed for r in good}, key=natural_key)
        row.basis = f"seeds {', '.join(seeds)}" if seeds else "no finished run"


def _fill_row(row: Row, key: str, options: ReportOptions, history: History) -> None:
    """Every number of a row, from the runs it uses (``row.used``)."""
    row.values = [r.metric(key) for r in row.used]
    row.interval = interval(row.values, options.confidence)
    n_params = Metrics.PARAMS_COUNT
    counts = sorted({int(r.metrics[n_params]) for r in (row.used or row.runs)
                     if n_params in r.metrics and math.isfinite(r.metrics[n_params])})
    row.params_count = (f"{counts[0]:,}" if len(counts) == 1
                        else f"{counts[0]:,}–{counts[-1]:,}" if counts else "")
    row.sec_per_epoch = mean_of(steady(history.metric(r.run_id, Metrics.EPOCH_TIME_S))
                                for r in row.used)
    row.throughput = mean_of(steady(history.metric(r.run_id, Metrics.THROUGHPUT))
                             for r in row.used)
    ran = []
    for r in row.used or row.runs:
        bits = [r.tags.get(Tags.IMPL, "?"), f"XLA {r.tags.get(Tags.XLA, '?')}"]
        cudnn = r.tags.get(Tags.CUDNN)
        bits.append("cuDNN" if cudnn == "true" else "no cuDNN")
        ran.append(" · ".join(bits))
    row.ran = "; ".join(sorted(set(ran)))
    others = defaultdict(list)
    for r in row.used:
        for k, v in r.metrics.items():
            if k.startswith(Metrics.TEST_PREFIX) and k != key:
                others[k.removeprefix(Metrics.TEST_PREFIX)].append(v)
    row.other_metrics = {k: mean_of(v) for k, v in sorted(others.items())}
    curves: dict[int, list[float]] = defaultdict(list)
    for r in row.used:
        for step, value in history.metric(r.run_id, Metrics.VAL_LOSS):
            if math.isfinite(value):
                curves[step].append(value)
    row.curves = dict(sorted(curves.items()))
    fill_gradient_flow(row, history)
