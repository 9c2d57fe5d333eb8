"""Best-tuned comparisons at equal search budgets, for a section of sweep trials.

Each row's expected best score as a function of the number of trials k (Dodge et al.
2019), with bootstrap intervals; every row against the baseline at the same k (by
default the smallest search's size), so that a search of 65 trials is never compared
with one of 20 by their top fractions. Where a row's trials come from several searches
(oracle seeds), the searches are the replicates: the best of the first k trials of each.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from rnnbench.report import stats, verdicts
from rnnbench.report.collect import History, RunRecord
from rnnbench.report.content import (BudgetComparison, BudgetCurve, ReportOptions, Row,
                                     TaskSection)
from rnnbench.report.runs import exclusion
from rnnbench.report.sweeps import objective_value
from rnnbench.tracking import Metrics, Tags

def _scored(row: Row, key: str, objective: tuple[str, str],
            history: History) -> list[tuple[RunRecord, float, float]]:
    """The row's finished trials with a finite objective and test metric, in the order
    they ran: (run, objective, test value)."""
    name, mode = objective
    out = []
    for run in sorted(row.runs, key=lambda r: (r.start_ms, r.run_id)):
        if exclusion(run, key):
            continue
        obj = objective_value(run, name, mode, history)
        if math.isfinite(obj) and math.isfinite(run.metric(key)):
            out.append((run, obj, run.metric(key)))
    return out


def search_of(run: RunRecord) -> str:
    """Which search a trial belongs to: its sweep (a resumed sweep stays one search;
    another oracle seed, ``rnnbench-tune -m seed=0,1,2``, makes another sweep id)."""
    return run.tags.get(Tags.SWEEP_ID) or run.parent_id or ""


def analyse_budget(section: TaskSection, options: ReportOptions, history: History,
                   objective: tuple[str, str]) -> None:
    """Fill ``section.budget_curves``, ``budget`` and ``budget_note``."""
    from rnnbench.report.compare import baseline_of

    key = Metrics.TEST_PREFIX + section.metric
    name, mode = objective
    scored = {row.label: _scored(row, key, objective, history) for row in section.rows}
    boots: dict[str, np.ndarray] = {}
    for i, row in enumerate(section.rows):
        trials = scored[row.label]
        if not trials:
            continue
        obj = [o for _, o, _ in trials]
        test = [t for _, _, t in trials]
        ks = list(range(1, len(trials) + 1))
        e_obj = verdicts.expected_best(obj, ks, mode)
        e_test = verdicts.expected_best(obj, ks, mode, test)
        b_obj = verdicts.bootstrap_best(obj, ks, mode, seed=verdicts.BOOTSTRAP_SEED + i)
        b_test = verdicts.bootstrap_best(obj, ks, mode, test, seed=verdicts.BOOTSTRAP_SEED + i)
        boots[row.label] = b_test
        q = [(1 - options.confidence) / 2, (1 + options.confidence) / 2]
        lo_o, hi_o = np.quantile(b_obj, q, axis=0)
        lo_t, hi_t = np.quantile(b_test, q, axis=0)
        section.budget_curves.append(BudgetCurve(
            row, len(trials), ks, e_obj.tolist(), lo_o.tolist(), hi_o.tolist(),
            e_test.tolist(), lo_t.tolist(), hi_t.tolist()))
    curves = {c.row.label: c for c in section.budget_curves}
    if not curves:
        return
    bases = [r for r in section.rows if r.cell == options.baseline and r.label in curves]
    smallest = min(c.n for c in section.budget_curves)
    if options.budget_k is not None and options.budget_k > smallest:
        from rnnbench.errors import ConfigError

        raise ConfigError(
            f"--budget-k {options.budget_k}: {section.title} has a search of only {smallest} "
            f"finished trials, and the expected best of more trials than a search ran would "
            f"be extrapolated. Give --budget-k {smallest} or less (or leave it out: the "
            f"smallest search's size).")
    section.budget_k = options.budget_k or smallest
    margin = options.equivalence_margins.get(key)
    for row in section.rows:
        if row.cell == options.baseline or row.label not in curves:
            continue
        base = baseline_of(row, bases)
        if base is None:
            continue
        searches = _by_search(scored[row.label]), _by_search(scored[base.label])
        if min(len(searches[0]), len(searches[1])) >= 2:
            comp = _searches_comparison(row, base, *searches, mode, options, margin,
                                        options.budget_k)
        else:
            k = section.budget_k
            a, b = curves[row.label], curves[base.label]
            diffs = boots[row.label][:, k - 1] - boots[base.label][:, k - 1]
            low, high = verdicts.percentile_interval(diffs, options.confidence)
            comp = BudgetComparison(row, base, k, a.test[k - 1], b.test[k - 1],
                                    a.test[k - 1] - b.test[k - 1], low, high,
                                    verdicts.bootstrap_p(diffs))
            comp.p_tost = verdicts.tost_bootstrap(diffs, margin) if margin else math.nan
        comp.margin = margin
        section.budget.append(comp)
    adjusted = stats.holm([c.p for c in section.budget])
    for comp, p in zip(section.budget, adjusted):
        comp.p_holm = p
        if math.isnan(p):
            comp.verdict = "n/a (fewer than 3 searches a side, or no spread)"
            continue
        comp.significant = p < options.alpha
        if comp.significant:
            better = (comp.diff < 0) == (mode == "min")
            comp.verdict = ("better" if better else "worse") + " (significant)"
        else:
            comp.verdict = verdicts.equivalence_verdict(False, comp.p_tost, options.alpha,
                                                        comp.margin, key, comp.low, comp.high)
    by_search = [c for c in section.budget if c.replicates.startswith("searches")]
    pooled = [c for c in section.budget if not c.replicates.startswith("searches")]
    head = (
        f"Expected best of a search of k trials (Dodge et al. 2019): with a row's n trials "
        f"sorted by `{name}`, the best of k draws is the i-th with probability "
        f"(i/n)^k − ((i−1)/n)^k; the table gives the expected `{name}` of that trial and "
        f"its `{key}`, with {options.confidence:.0%} bootstrap intervals "
        f"({verdicts.BOOTSTRAP} resamples of the trials). ")
    tail = (f"Holm's correction over the table, significant means corrected "
            f"p < {options.alpha:g}. A comparison that is not significant is 'equivalent' "
            f"when two one-sided tests at level {options.alpha:g} put Δ inside ±δ "
            f"(--equivalence-margin), else 'inconclusive' ("
            + verdicts.tost_interval_note(options.alpha, options.confidence, "δ") + ").")
    parts = [head]
    if pooled:
        parts.append(
            f"{'Every cell' if not by_search else 'A cell from one search'} is compared "
            f"with `{options.baseline}` at the same k = {section.budget_k} "
            + ("(--budget-k): " if options.budget_k else "(the smallest row's trials): ")
            + f"Δ is the difference of the expected `{key}`, its interval and two-sided p "
              f"from the bootstrap. ")
    if by_search:
        ks = ", ".join(str(k) for k in sorted({c.k for c in by_search}))
        parts.append(
            f"{'Every cell' if not pooled else 'A cell'} whose trials come from several "
            f"searches (oracle seeds: `rnnbench-tune -m seed=0,1,2`) is compared with "
            f"`{options.baseline}` with the searches as the replicates: the best trial by "
            f"`{name}` of each search's first k trials (k = {ks}: the smallest search of the "
            f"two{', or --budget-k' if options.budget_k else ''}), its `{key}`, Welch's t-test "
            f"of the two sets of searches. ")
    section.budget_note = "".join(parts) + tail


def _by_search(trials: list[tuple[RunRecord, float, float]]
               ) -> dict[str, list[tuple[RunRecord, float, float]]]:
    out: dict[str, list] = defaultdict(list)
    for t in trials:
        out[search_of(t[0])].append(t)
    return dict(out)


def _searches_comparison(row: Row, base: Row, mine: dict, theirs: dict, mode: str,
                         options: ReportOptions, margin: float | None,
                         budget_k: int | None) -> BudgetComparison:
    """One best trial per search (of its first k, k the smallest search here), Welch."""
    from scipy import stats as sps

    k = min(len(v) for v in list(mine.values()) + list(theirs.values()))
    k = min(k, budget_k or k)
    sign = 1.0 if mode == "min" else -1.0

    def best(searches: dict) -> list[float]:
        return [min(v[:k], key=lambda t: sign * t[1])[2] for _, v in sorted(searches.items())]

    a, b = best(mine), best(theirs)
    ia, ib = stats.mean_ci(a), stats.mean_ci(b)
    welch = stats.welch_t(a, b)
    diff = ia.mean - ib.mean
    se = math.sqrt(ia.sd ** 2 / len(a) + ib.sd ** 2 / len(b))
    half = (float(sps.t.ppf(0.5 + options.confidence / 2, welch.df)) * se
            if se > 0 and math.isfinite(welch.df) else math.nan)
    few = min(len(a), len(b)) < stats.MIN_INTERVAL_N
    comp = BudgetComparison(row, base, k, ia.mean, ib.mean, diff, diff - half, diff + half,
                            math.nan if few else welch.p,
                            replicates=f"searches ({len(a)} and {len(b)})")
    if margin and not few:
        comp.p_tost = verdicts.tost_t(diff, se, welch.df, margin)
    return comp
