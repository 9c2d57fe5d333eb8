"""A report document built from an analysis: the summary, one part per task section
(results, significance, learning curves, gradient flow, importance, runs not averaged
in), the environment, the commands that reproduce it and the list of runs.

What a document is, and how numbers are formatted, is :mod:`rnnbench.report.document`;
writing it out is :mod:`rnnbench.report.writers`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from rnnbench.report import figures, verdicts
from rnnbench.report.content import Analysis, TaskSection
from rnnbench.report.document import (Code, Document, Figure, Heading, Para, Table, code, fmt,
                                      fmt_ci, fmt_interval, fmt_p, fmt_pct, raw, slug, utc)
from rnnbench.report.render_budget import budget_part
from rnnbench.report.runs import natural_key, shorten
from rnnbench.tracking import Metrics, RunKind, Tags


def build(analysis: Analysis, title: str, command: str) -> Document:
    """The report document of ``analysis``; ``command`` is the report's own command line."""
    doc = Document(title)
    _introduction(doc, analysis)
    _summary(doc, analysis)
    for section in analysis.sections:
        _section(doc, section, analysis.options)
    _environment(doc, analysis)
    _reproduce(doc, analysis, command)
    _runs(doc, analysis)
    return doc


def _introduction(doc: Document, analysis: Analysis) -> None:
    """The title, what was selected, the code versions, and how to read the tables."""
    sel = analysis.selection
    opts = analysis.options
    runs = [r for r in sel.runs if r.kind != RunKind.SWEEP]
    counts = ", ".join(f"{n} {s}" for s, n in analysis.status_counts.items())
    doc.add(Heading(1, doc.title))
    started = [r.start_ms for r in runs if r.start_ms]
    span = (f" The runs started between {utc(min(started))} and {utc(max(started))}."
            if started else "")
    doc.add(Para(f"{len(runs)} runs ({counts}) from {sel.described}.{span}"))
    commits = "; ".join(f"{code(c)} ({n} run{'s' if n != 1 else ''})"
                        for c, n in analysis.commits)
    if analysis.provenance_warning:
        doc.add(Para(f"**Warning: mixed code versions.** {analysis.provenance_warning} "
                     f"Commits: {commits}."))
    elif commits:
        doc.add(Para(f"Code version: every run comes from commit {commits}, a clean tree."))
    doc.add(Para(
        f"Each table ranks the cells of one task by its test metric: the mean with a "
        f"{opts.confidence:.0%} confidence interval (Student's t, n − 1 degrees of freedom) "
        f"over seeds, or over the best {opts.trial_fraction:.0%} of a sweep's trials (with "
        f"fewer than 3 values no interval is given: none would be meaningful). Runs "
        f"that FAILED, were KILLED or have no test metric are listed under each task, not "
        f"averaged in. Time per epoch and throughput are medians over epochs without the "
        f"first (which includes compilation), averaged over runs."))


def _summary(doc: Document, analysis: Analysis) -> None:
    """One line per task section: its best cell against the baseline."""
    opts = analysis.options
    summary_rows, summary_csv = [], []
    for section in analysis.sections:
        best = next((r for r in section.rows if r.rank == 1), None)
        base = next((r for r in section.rows if r.cell == opts.baseline and r.values), None)
        finished = sum(len(r.used) for r in section.rows)
        summary_rows.append([section.title, f"test_{section.metric} ({section.mode})",
                             best.label if best else "—",
                             fmt_interval(best.interval) if best else "—",
                             fmt_interval(base.interval) if base else "—",
                             str(finished), str(len(section.excluded))])
        summary_csv.append([section.title, section.metric, section.mode,
                            best.label if best else "", raw(best.interval.mean if best else None),
                            raw(base.interval.mean if base else None), finished,
                            len(section.excluded)])
    doc.add(Heading(2, "Summary"))
    if summary_rows:
        doc.add(Table(doc.unique("summary"),
                      ["task", "metric", "best cell", "best", opts.baseline + " (baseline)",
                       "runs averaged", "runs not averaged"], summary_rows,
                      ["task", "metric", "mode", "best_cell", "best_mean", "baseline_mean",
                       "runs_averaged", "runs_not_averaged"], summary_csv))
    else:
        doc.add(Para("No run carries rnnbench's `task` and `cell` tags."))


def _section(doc: Document, s: TaskSection, opts: Any) -> None:
    """Everything the report says about one task section, in reading order."""
    key = slug(s.title)
    doc.add(Heading(2, f"Task: {s.title}"))
    family = f" ({s.family})" if s.family else ""
    doc.add(Para(f"Task {code(s.task)}{family}, ranked by {s.metric_note}. {s.selection_note}"))
    if s.trivial:
        doc.add(Para("Trivial baselines of the task (`baseline_*`): " + ", ".join(
            f"{k} {fmt(v)}" for k, v in s.trivial.items()) + "."))
    _results(doc, s, opts, key)
    _significance(doc, s, opts, key)
    budget_part(doc, s, opts, key)
    _learning_curves(doc, s, key)
    _gradient_flow(doc, s, key)
    if s.importance is not None:
        _importance(doc, s, key)
    _history(doc, s, key)
    _not_averaged(doc, s, key)


def _results(doc: Document, s: TaskSection, opts: Any, key: str) -> None:
    """The ranked table of the rows, and the rows' other test metrics."""
    metric = Metrics.TEST_PREFIX + s.metric
    log = verdicts.is_log_metric(metric)
    rows, csv_rows = [], []
    for r in s.rows:
        iv = r.interval
        rows.append([str(r.rank) if r.rank else "—", r.label,
                     fmt_interval(iv), str(iv.n), r.basis, r.params_count or "—",
                     fmt(r.sec_per_epoch, 3), fmt(r.throughput, 4), r.ran])
        csv_rows.append([r.rank or "", r.label, r.cell, r.impl, raw(iv.mean), raw(iv.half_width),
                         raw(iv.sd), iv.n, r.basis, r.params_count.replace(",", ""),
                         raw(r.sec_per_epoch), raw(r.throughput), r.ran,
                         " ".join(x.run_id for x in r.used)])
        if log:  # the mean of the logs read back: the geometric mean, with its interval
            geo = [math.exp(x) for x in (iv.mean, iv.mean - iv.half_width,
                                         iv.mean + iv.half_width)]
            rows[-1][3:3] = [fmt(geo[0], 3) + ("" if math.isnan(geo[1]) else
                             f" ({fmt(geo[1], 3)}–{fmt(geo[2], 3)})")]
            csv_rows[-1][7:7] = [raw(x) for x in geo]
    head = ["rank", "cell", f"{metric} (mean ± {opts.confidence:.0%} CI)", "n", "over",
            "params", "s/epoch", "samples/s", "ran"]
    columns = ["rank", "row", "cell", "impl", f"{metric}_mean", f"{metric}_ci_half_width",
               f"{metric}_sd", "n", "over", "params_count", "seconds_per_epoch",
               "samples_per_second", "ran", "run_ids"]
    if log:
        plain = "test_" + s.metric.removeprefix("ln_")
        head[3:3] = [f"{plain}, geometric mean ({opts.confidence:.0%} CI)"]
        columns[7:7] = ["geomean", "geomean_ci_low", "geomean_ci_high"]
    doc.add(Heading(3, "Results"))
    doc.add(Table(doc.unique(f"{key}-results"), head, rows, columns, csv_rows))

    others = sorted({k for r in s.rows for k in r.other_metrics})
    if others:
        doc.add(Para("Other test metrics of the same runs (mean):"))
        doc.add(Table(doc.unique(f"{key}-other-metrics"),
                      ["cell"] + [f"test_{k}" for k in others],
                      [[r.label] + [fmt(r.other_metrics.get(k)) for k in others]
                       for r in s.rows],
                      ["row"] + [f"test_{k}_mean" for k in others],
                      [[r.label] + [raw(r.other_metrics.get(k, math.nan)) for k in others]
                       for r in s.rows]))


def _learning_curves(doc: Document, s: TaskSection, key: str) -> None:
    curve_rows = [r for r in s.rows if r.curves]
    doc.add(Heading(3, "Learning curves"))
    png = figures.learning_curves(s)
    if png:
        doc.add(Figure(doc.unique(f"{key}-learning-curves", "figure"), png,
                       f"{s.title}: validation loss per epoch, mean over runs (band: min–max)"))
        doc.add(Table(doc.unique(f"{key}-learning-curves"),
                      ["cell", "epoch", "val_loss (mean)", "n"],
                      [], ["row", "epoch", "val_loss_mean", "n"],
                      [[r.label, e, raw(math.fsum(v) / len(v)), len(v)]
                       for r in curve_rows for e, v in r.curves.items()]))
    else:
        doc.add(Para("No run logged `val_loss` per epoch."))


def _gradient_flow(doc: Document, s: TaskSection, key: str) -> None:
    """The rows' mean profiles (figure and data) and their summary metrics."""
    doc.add(Heading(3, "Gradient flow"))
    flow_keys = sorted({k for r in s.rows for k in r.grad_flow})
    png = figures.gradient_flow(s)
    if png:
        doc.add(Figure(doc.unique(f"{key}-gradient-flow", "figure"), png,
                       f"{s.title}: gradient norm g(k) at lag k per evaluated epoch, mean over "
                       f"runs; dotted: the weights the test metrics come from"))
        doc.add(Table(doc.unique(f"{key}-gradient-flow-profiles"),
                      ["cell", "epoch", "lag", "g"], [],
                      ["row", "epoch", "lag", "g_mean"],
                      [[r.label, e, raw(lag), raw(g)] for r in s.rows
                       for e, (lags, gs) in r.profiles.items() for lag, g in zip(lags, gs)]
                      + [[r.label, "tested", raw(lag), raw(g)] for r in s.rows
                         if r.final_profile for lag, g in zip(*r.final_profile)]))
    if flow_keys:
        doc.add(Para("Gradient-flow summaries (`grad_flow/*`, mean over runs) of the weights "
                     "the test metrics come from: those early stopping restored, from epoch "
                     "`weights_epoch` (runs from before that was recorded: the last "
                     "evaluated epoch). Each lag averages the sequences that have a real "
                     "step there; on padded tasks the largest lags rest on few sequences."))
        doc.add(Table(doc.unique(f"{key}-gradient-flow"), ["cell"] + flow_keys,
                      [[r.label] + [fmt(r.grad_flow.get(k)) for k in flow_keys] for r in s.rows],
                      ["row"] + flow_keys,
                      [[r.label] + [raw(r.grad_flow.get(k, math.nan)) for k in flow_keys]
                       for r in s.rows]))
    if not png and not flow_keys:
        doc.add(Para("These runs have no gradient-flow diagnostics "
                     "(no `diagnostics/grad_flow.json` artifact, no `grad_flow/*` metrics)."))


def _importance(doc: Document, s: TaskSection, key: str) -> None:
    imp = s.importance
    doc.add(Heading(3, "Hyperparameter importance"))
    if not imp.values:
        doc.add(Para(imp.note))
        return
    doc.add(Para(f"fANOVA (optuna's `FanovaImportanceEvaluator`, seed 0) over "
                 f"{imp.n_trials} finished trials at {imp.n_points} distinct "
                 f"hyperparameter points, objective {code(imp.objective)}: each "
                 f"hyperparameter's main effect as a share of the objective's "
                 f"variance (not normalised); the rest, "
                 f"{imp.interactions:.3f}, is left to interactions between them."))
    for warning in imp.warnings:
        doc.add(Para(f"**Warning:** {warning}"))
    table = [*imp.values, ("(interactions)", imp.interactions)]
    doc.add(Table(doc.unique(f"{key}-importance"),
                  ["hyperparameter", "main-effect share of variance"],
                  [[k, f"{v:.3f}"] for k, v in table],
                  ["hyperparameter", "main_effect_share"],
                  [[k, raw(v)] for k, v in table]))
    png = figures.importance(s)
    if png:
        doc.add(Figure(doc.unique(f"{key}-importance", "figure"), png,
                       f"{s.title}: fANOVA hyperparameter importance"))


def _history(doc: Document, s: TaskSection, key: str) -> None:
    """The optimisation history of a sweep or a Hydra-Optuna study, as a figure."""
    from rnnbench.report.importance import history_figure

    name, mode = s.history_objective
    png = history_figure(s.history, s.title, name, mode) if s.history else None
    if png:
        doc.add(Heading(3, "Optimisation history"))
        doc.add(Figure(doc.unique(f"{key}-history", "figure"), png,
                       f"{s.title}: each trial's {name} (in the order the trials ran) and the "
                       f"best so far"))


def _not_averaged(doc: Document, s: TaskSection, key: str) -> None:
    doc.add(Heading(3, "Runs not averaged in"))
    if s.excluded:
        doc.add(Table(doc.unique(f"{key}-not-averaged"),
                      ["run", "cell", "seed", "status", "reason"],
                      [[f"{e.run.name} ({e.run.run_id[:8]})", e.row, e.run.seed, e.run.status,
                        shorten(e.reason)] for e in s.excluded],
                      ["run_id", "run_name", "row", "seed", "status", "reason"],
                      [[e.run.run_id, e.run.name, e.row, e.run.seed, e.run.status, e.reason]
                       for e in s.excluded]))
    else:
        doc.add(Para("None: every run of this task finished with a test metric."))


def _verdict_with_mde(verdict: str, mde: float) -> str:
    if verdict == "not significant" and not math.isnan(mde):
        return f"not significant (MDE {fmt(mde, 3)})"
    return verdict


def _significance(doc: Document, s: TaskSection, opts: Any, key: str) -> None:
    """The paired table where runs share design points, and the unpaired (Welch) one:
    for sweep trials both, each saying which question it answers."""
    trial = s.kind == "trial"
    if s.paired:
        doc.add(Heading(3, f"Paired comparison against {opts.baseline}"
                        + (" across the search space" if trial else "")))
        if trial:
            doc.add(Para("Question answered: how does each variant behave across the search "
                         "space, point for point against the baseline at the same "
                         "hyperparameters? Every shared trial counts, good and bad settings "
                         "alike."))
        doc.add(Para(s.paired_note))
        rows, csv_rows = [], []
        log = verdicts.is_log_metric(Metrics.TEST_PREFIX + s.metric)
        for c in s.paired:
            r = c.result
            worse = r.positive if s.mode == "min" else r.negative
            rows.append([c.row.label, c.base.label, str(r.n), fmt_ci(r.mean, r.half_width)
                         if r.n >= 3 else f"{fmt(r.mean)} (n={r.n}: no CI)",
                         fmt(r.dz, 3), f"{worse} of {r.n}", fmt_p(r.p_t), fmt_p(c.p_t_holm),
                         fmt_p(r.p_w), fmt_p(c.p_w_holm), fmt_p(c.p_perm), fmt(c.mde, 3),
                         fmt_p(c.p_tost), _verdict_with_mde(c.verdict, c.mde)])
            csv_rows.append([c.row.label, c.base.label, r.n, raw(r.mean), raw(r.half_width),
                             raw(r.sd), raw(r.dz), r.positive, r.negative, raw(r.t),
                             raw(r.p_t), raw(c.p_t_holm), raw(r.w), raw(r.p_w),
                             raw(c.p_w_holm), raw(c.p_perm), raw(c.mde), raw(c.mde_alpha),
                             "" if c.margin is None else raw(c.margin), raw(c.p_tost),
                             "" if c.significant is None else str(c.significant).lower(),
                             c.verdict, " | ".join(c.points)])
            if log:  # the log scale read back as ratios (exp of the difference of logs)
                ratio = [math.exp(x) for x in (r.mean, r.mean - r.half_width,
                                               r.mean + r.half_width, c.mde)]
                rows[-1][4:4] = [fmt(ratio[0], 3) + ("" if math.isnan(ratio[1]) else
                                 f" ({fmt(ratio[1], 3)}–{fmt(ratio[2], 3)})")]
                rows[-1][-2:-2] = [f"×{fmt(ratio[3], 3)}"]
                csv_rows[-1][6:6] = [raw(x) for x in ratio[:3]]
                csv_rows[-1][-5:-5] = [raw(ratio[3])]
        head = ["cell", "baseline", "pairs", "Δ mean (95% CI)", "d_z", "worse at", "p (t)",
                "p (t, Holm)", "p (Wilcoxon)", "p (Wilcoxon, Holm)", "p (sign-flip, exact)",
                "MDE", "TOST p", "verdict"]
        columns = ["row", "baseline", "pairs", "diff_mean", "diff_ci_half_width", "diff_sd",
                   "d_z", "n_diff_positive", "n_diff_negative", "t", "p_t", "p_t_holm",
                   "wilcoxon_w", "p_wilcoxon", "p_wilcoxon_holm", "p_sign_flip", "mde",
                   "mde_alpha", "margin", "p_tost", "significant", "verdict", "points"]
        if log:
            head[4:4] = ["ratio (95% CI)"]
            head[-2:-2] = ["MDE (factor)"]
            columns[6:6] = ["ratio", "ratio_ci_low", "ratio_ci_high"]
            columns[-5:-5] = ["mde_factor"]
        doc.add(Table(doc.unique(f"{key}-paired"), head, rows, columns, csv_rows))
    elif s.paired_note:
        doc.add(Para(s.paired_note))
    if s.paired and not trial:
        return  # the runs share their seeds: the paired table is the comparison
    if trial:
        doc.add(Heading(3, f"Best-tuned comparison against {opts.baseline} (Greff et al.'s "
                        f"protocol)"))
        doc.add(Para(f"Question answered: how good is each variant when tuned well? The best "
                     f"{opts.trial_fraction:.0%} of each variant's trials by the sweep's "
                     f"objective, compared unpaired (the best points differ between "
                     f"variants)."))
        doc.add(Para("Caveat: this test is pseudo-replicated. The best trials of one search "
                     "are not independent replicates (every trial shares one seed and one "
                     "oracle seed, so the spread between repeated searches is never "
                     "measured), and searches of different sizes give top fractions of "
                     "different quality. Kept as Greff et al.'s protocol; the comparison at "
                     "equal budgets below is the one to read."))
    else:
        doc.add(Heading(3, f"Significance against {opts.baseline}"))
    doc.add(Para(s.baseline_note))
    if s.comparisons:
        doc.add(Table(
            doc.unique(f"{key}-significance"),
            ["cell", "baseline", "Δ mean", "Δ %", "t", "df", "p", "p (Holm)", "MDE", "TOST p",
             "verdict"],
            [[c.row.label, c.base.label, fmt(c.diff), fmt_pct(c.rel), fmt(c.welch.t, 3),
              fmt(c.welch.df, 3), fmt_p(c.welch.p), fmt_p(c.p_holm), fmt(c.mde, 3),
              fmt_p(c.p_tost), _verdict_with_mde(c.verdict, c.mde)]
             for c in s.comparisons],
            ["row", "baseline", "diff", "rel_diff", "t", "df", "p", "p_holm", "mde", "margin",
             "p_tost", "significant", "verdict"],
            [[c.row.label, c.base.label, raw(c.diff), raw(c.rel), raw(c.welch.t),
              raw(c.welch.df), raw(c.welch.p), raw(c.p_holm), raw(c.mde),
              "" if c.margin is None else raw(c.margin), raw(c.p_tost),
              "" if c.significant is None else str(c.significant).lower(), c.verdict]
             for c in s.comparisons]))


def _environment(doc: Document, analysis: Analysis) -> None:
    doc.add(Heading(2, "Environment"))
    doc.add(Para("What the runs ran on, from their tags (value, and how many runs):"))
    doc.add(Table(doc.unique("environment"), ["tag", "values"],
                  [[k, "; ".join(f"{v} ({n})" for v, n in vals)]
                   for k, vals in analysis.environment],
                  ["tag", "value", "runs"],
                  [[k, v, n] for k, vals in analysis.environment for v, n in vals]))


def _reproduce(doc: Document, analysis: Analysis, command: str) -> None:
    doc.add(Heading(2, "Reproduce"))
    doc.add(Para("Every number above comes from the runs these commands log (the `command` "
                 "tag of each run, grouped by task and sweep; run them in the folder that "
                 "holds the MLflow store). Then make this report again with:"))
    doc.add(Code(command))
    groups: dict[tuple[str, str], set[str]] = defaultdict(set)
    for s in analysis.sections:
        for r in s.runs:
            sweep = r.tags.get(Tags.SWEEP_ID) or ""
            parent = r.parent_id
            if r.kind == RunKind.TRIAL and parent in analysis.selection.sweep_parents:
                cmd = analysis.selection.sweep_parents[parent].tags.get(Tags.COMMAND)
                sweep = sweep or f"parent run {parent}"
            else:
                cmd = r.tags.get(Tags.COMMAND)
            groups[(s.title, sweep)].add(cmd or f"(run {r.run_id} has no command tag)")
    csv_rows = []
    for (title, sweep) in sorted(groups):
        where = f" (sweep {code(sweep)})" if sweep else " (single runs)"
        doc.add(Para(f"**{title}**{where}:"))
        cmds = sorted(groups[(title, sweep)], key=lambda c: [natural_key(t) for t in c.split()])
        doc.add(Code("\n".join(cmds)))
        csv_rows += [[title, sweep, c] for c in cmds]
    doc.add(Table(doc.unique("commands"), [], [], ["task", "sweep_id", "command"], csv_rows))


def _runs(doc: Document, analysis: Analysis) -> None:
    doc.add(Heading(2, "Runs"))
    rows, csv_rows = [], []
    for s in analysis.sections:
        metric = Metrics.TEST_PREFIX + s.metric
        for r in s.runs:
            value = r.metrics.get(metric)
            rows.append([s.title, r.name, r.cell or "", r.seed, r.status,
                         f"{metric} {fmt(value)}" if value is not None else "—",
                         code(r.run_id), r.tags.get(Tags.CONFIG_HASH, "—"),
                         r.tags.get(Tags.GIT_COMMIT, "—")[:12]
                         + ("-dirty" if r.tags.get(Tags.GIT_COMMIT, "").endswith("-dirty")
                            else "")])
            csv_rows.append([s.title, r.run_id, r.name, r.experiment, r.cell or "", r.seed,
                             r.kind, r.status, metric, raw(value),
                             r.tags.get(Tags.CONFIG_HASH, ""), r.tags.get(Tags.GIT_COMMIT, ""),
                             r.tags.get(Tags.SWEEP_ID, ""), r.parent_id or "",
                             r.tags.get(Tags.COMMAND, "")])
    doc.add(Table(doc.unique("runs"), ["task", "run", "cell", "seed", "status", "test metric",
                                   "run id", "config hash", "commit"], rows,
                  ["task", "run_id", "run_name", "experiment", "cell", "seed", "run_kind",
                   "status", "metric", "value", "config_hash", "git_commit", "sweep_id",
                   "parent_run_id", "command"], csv_rows))
    if analysis.ignored:
        doc.add(Para("Ignored (not rnnbench runs: no `task`/`cell` tags): " + ", ".join(
            f"{code(r.name)} ({r.run_id})" for r in analysis.ignored) + "."))
