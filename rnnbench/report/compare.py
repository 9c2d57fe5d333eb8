"""Ranking the rows of a task section and testing each against the baseline row:
unpaired (Welch's t-test) and, where runs share design points, paired (t and Wilcoxon),
each with Holm's correction over its table and the minimum detectable effect.
"""

from __future__ import annotations

import math

from rnnbench.errors import ConfigError
from rnnbench.report import stats, verdicts
from rnnbench.report.content import Comparison, PairedComparison, ReportOptions, Row, TaskSection
from rnnbench.report.runs import design_point, exclusion, is_task_param, natural_key, varying
from rnnbench.tracking import Metrics, RunKind, Tags

POWER = 0.8


def interval(values: list[float], confidence: float) -> stats.Interval:
    """The mean with its t interval; with fewer than 3 values no interval is meaningful
    (the half-width is NaN and the report says so)."""
    iv = stats.mean_ci(values, confidence)
    if iv.n < stats.MIN_INTERVAL_N:
        return stats.Interval(iv.mean, math.nan, iv.n, iv.sd, confidence)
    return iv


def rank_rows(section: TaskSection) -> None:
    sign = 1.0 if section.mode == "min" else -1.0
    ranked = sorted((r for r in section.rows if r.interval and math.isfinite(r.interval.mean)),
                    key=lambda r: (sign * r.interval.mean, r.label))
    for i, row in enumerate(ranked, 1):
        row.rank = i
    section.rows.sort(key=lambda r: (r.rank is None, r.rank or 0, r.label))


def baseline_of(row: Row, bases: list[Row]) -> Row | None:
    """The baseline row ``row`` is compared with: the same setting, the same
    implementation where there is one."""
    matches = [b for b in bases if b.variant == row.variant]
    if not matches:
        return None
    return next((b for b in matches if b.impl == row.impl), matches[0])


def _verdict(diff: float, significant: bool, mode: str) -> str:
    better = (diff < 0) == (mode == "min")
    return ("better" if better else "worse") + " (significant)" if significant \
        else "not significant"


def compare_unpaired(section: TaskSection, options: ReportOptions) -> None:
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
        base = baseline_of(row, bases)
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
        _welch_equivalence(comp, section, options)
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
        f"p < {options.alpha:g}. MDE (a design figure, not evidence of no effect): the "
        f"smallest difference of means this test finds with {POWER:.0%} power at level "
        f"α/m = {options.alpha:g}/{n_tests} (Holm's first step), given the samples' spread, "
        f"in the metric's units. " + equivalence_note(section, options))


def _points(row: Row, key: str, kind: str) -> dict[str, float]:
    """Each design point of ``row`` with its value of ``key`` (the latest finished run
    at that point: a retried trial counts once)."""
    out: dict[str, float] = {}
    for run in sorted(row.runs, key=lambda r: (r.start_ms, r.run_id)):
        point = design_point(run, kind)
        if point is not None and not exclusion(run, key):
            out[point] = run.metric(key)
    return out


def _check_pairable(section: TaskSection, options: ReportOptions) -> None:
    """A paired test compares one metric of one task setting: refuse a selection that
    would mix tasks settings or metrics into one."""
    task_keys = varying(section.runs, is_task_param)
    if task_keys:
        raise ConfigError(
            f"{section.title}: the selected runs differ in {', '.join(task_keys)}, so a "
            f"paired test would mix task settings. Narrow the selection with --filter "
            f"(e.g. \"params.{task_keys[0]} = '...'\") or report them with --design unpaired.")
    if not options.metric:
        metrics = sorted({r.tags[Tags.PRIMARY_METRIC] for r in section.runs
                          if r.tags.get(Tags.PRIMARY_METRIC)})
        if len(metrics) > 1:
            raise ConfigError(
                f"{section.title}: the selected runs rank by different metrics "
                f"({', '.join(metrics)}), so a paired test would mix them. Choose one with "
                f"--metric, or narrow the selection with --filter.")


def compare_paired(section: TaskSection, options: ReportOptions) -> None:
    """Paired t and Wilcoxon signed-rank tests of each row against the baseline over the
    design points both have, Holm's correction over each family (table)."""
    if options.design == "unpaired":
        section.paired_note = "Paired analysis not asked for (--design unpaired)."
        return
    bases = [r for r in section.rows if r.cell == options.baseline]
    key = Metrics.TEST_PREFIX + section.metric
    unpairable = []
    candidates = []
    for row in section.rows:
        if row.cell == options.baseline:
            continue
        base = baseline_of(row, bases)
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
            "seed and search space)" if section.kind == RunKind.TRIAL else "seeds")
    if options.design == "paired" and unpairable:
        row, base, a, b, n = unpairable[0]
        raise ConfigError(
            f"{section.title}: --design paired, but `{row.label}` and `{base.label}` share "
            f"{n} of their {what} ({a} and {b} finished with `{key}`); a paired test needs "
            f"at least 2 shared points. "
            + ("Run the sweeps with the same seed (the oracle's) and search space."
               if section.kind == RunKind.TRIAL else "Run the cells with the same seeds.")
            + " Or use --design unpaired.")
    for row, base, shared, mine, theirs in candidates:
        a, b = [mine[p] for p in shared], [theirs[p] for p in shared]
        comp = PairedComparison(row, base, shared, a, b, stats.paired(a, b, options.confidence))
        if len(shared) < verdicts.FEW_PAIRS:
            comp.p_perm = verdicts.sign_flip_p([x - y for x, y in zip(a, b)])
        section.paired.append(comp)
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
        _paired_equivalence(comp, section, options)
    if section.paired:
        section.design = "paired"
        section.paired_note = (
            f"Paired over the {what} that each cell shares with `{options.baseline}`: "
            f"Δ is the cell's value minus the baseline's at the same point, with its "
            f"{options.confidence:.0%} t interval and effect size d_z = mean(Δ)/sd(Δ). "
            f"Paired t-test and Wilcoxon signed-rank test (two-sided, scipy), each corrected "
            f"with Holm's method over the {m} comparison{'s' if m != 1 else ''} of this "
            f"table; significant means the paired t-test's corrected p < {options.alpha:g}. "
            f"MDE (a design figure, not evidence of no effect): the smallest mean difference "
            f"the paired t-test finds with {POWER:.0%} power at level α/m = "
            f"{options.alpha:g}/{max(m, 1)} (Holm's first step), given the spread of the "
            f"differences, in the metric's units. " + equivalence_note(section, options))
        few = sorted({c.result.n for c in section.paired if c.result.n < verdicts.FEW_PAIRS})
        if few:
            section.paired_note += (
                " With fewer than 6 pairs the Wilcoxon signed-rank test cannot reach 0.05: "
                "its smallest two-sided p is 1/2^(n−1) (" + ", ".join(
                    f"n={n}: {verdicts.wilcoxon_floor(n):.4g}" for n in few)
                + "); the exact sign-flip permutation test of the mean difference (all 2^n "
                "sign patterns) is added for those rows.")
        if unpairable:
            section.paired_note += " Not paired (fewer than 2 shared points): " + ", ".join(
                f"`{row.label}` ({n} shared)" for row, _, _, _, n in unpairable) + "."
    elif unpairable:
        row, base, a, b, n = unpairable[0]
        section.paired_note = (
            f"No paired test: `{row.label}` and `{base.label}` share {n} of their {what}; "
            f"pairing needs at least 2. The unpaired table is the comparison.")


def equivalence_note(section: TaskSection, options: ReportOptions) -> str:
    """How a comparison that is not significant is judged, with the margin used."""
    key = Metrics.TEST_PREFIX + section.metric
    margin = options.equivalence_margins.get(key)
    if margin is None:
        return (f"No --equivalence-margin for `{key}` was given, so a comparison that is not "
                f"significant is 'inconclusive', never 'no difference'.")
    if verdicts.is_log_metric(key):
        factor = math.exp(margin)
        plain = "test_" + key.removeprefix(verdicts.LOG_PREFIX)
        return (f"Δ is a difference of logs, so exp(Δ) is the ratio of the cell's "
                f"`{plain}` to the baseline's (of their geometric means), and the ratio "
                f"columns give it with its interval; the MDE is given as a factor too. A "
                f"comparison that is not significant is 'equivalent within a factor of "
                f"{factor:g}' (--equivalence-margin {plain}=x{factor:g}) when two one-sided "
                f"t-tests at level {options.alpha:g} (TOST) put Δ inside ±ln {factor:g} = "
                f"±{margin:.4g}, else 'inconclusive'. "
                + verdicts.tost_interval_note(options.alpha, options.confidence,
                                              f"{margin:.4g}") + ".")
    return (f"A comparison that is not significant is 'equivalent within ±{margin:g}' "
            f"(--equivalence-margin {key}={margin:g}) when two one-sided t-tests at level "
            f"{options.alpha:g} (TOST) put the difference inside the margin, else "
            f"'inconclusive'. "
            + verdicts.tost_interval_note(options.alpha, options.confidence, f"{margin:g}")
            + ".")


def _welch_equivalence(comp: Comparison, section: TaskSection, options: ReportOptions) -> None:
    if comp.significant:
        return
    key = Metrics.TEST_PREFIX + section.metric
    comp.margin = options.equivalence_margins.get(key)
    a, b = comp.row.values, comp.base.values
    se = math.sqrt(stats._var(a) / len(a) + stats._var(b) / len(b))
    low, high = _ci(comp.diff, se, comp.welch.df, options.confidence)
    if comp.margin:
        comp.p_tost = verdicts.tost_t(comp.diff, se, comp.welch.df, comp.margin)
    comp.verdict = verdicts.equivalence_verdict(False, comp.p_tost, options.alpha,
                                                comp.margin, key, low, high)


def _paired_equivalence(comp: PairedComparison, section: TaskSection,
                        options: ReportOptions) -> None:
    if comp.significant:
        return
    key = Metrics.TEST_PREFIX + section.metric
    comp.margin = options.equivalence_margins.get(key)
    r = comp.result
    se = r.sd / math.sqrt(r.n)
    if comp.margin:
        comp.p_tost = verdicts.tost_t(r.mean, se, r.n - 1, comp.margin)
    comp.verdict = verdicts.equivalence_verdict(False, comp.p_tost, options.alpha,
                                                comp.margin, key, r.mean - r.half_width,
                                                r.mean + r.half_width)


def _ci(mean: float, se: float, df: float, confidence: float) -> tuple[float, float]:
    from scipy import stats as sps

    half = float(sps.t.ppf(0.5 + confidence / 2, df)) * se
    return mean - half, mean + half
