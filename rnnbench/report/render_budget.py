"""The part of a report on best-tuned comparisons at equal search budgets: the expected
best score against the number of trials k (figure and table), and every cell against
the baseline at the same k (:mod:`rnnbench.report.budget` computes them).
"""

from __future__ import annotations

from typing import Any

from rnnbench.report.content import TaskSection
from rnnbench.report.document import Figure, Heading, Para, Table, fmt, fmt_p, raw

# the k shown in the report's table (the CSV has every k)
SHOWN_K = (1, 2, 3, 5, 10, 15, 20, 30, 40, 50, 65, 100)


def shown_ks(n_max: int, k_eq: int) -> list[int]:
    return sorted({k for k in SHOWN_K if k <= n_max} | {k_eq, n_max} - {0})


def comparison_k(s: TaskSection) -> int:
    """The k the equal-budget table compares at: that of its comparisons when they share
    one (with several searches a side, each search's size), else the section's k."""
    ks = {c.k for c in s.budget}
    return ks.pop() if len(ks) == 1 else s.budget_k


def budget_part(doc: Any, s: TaskSection, opts: Any, key: str) -> None:
    """Heading, note, figure, the expected-best table and the equal-k comparison."""
    if not s.budget_curves:
        return
    metric = "test_" + s.metric
    doc.add(Heading(3, f"Best-tuned comparison against {opts.baseline} at equal budgets"))
    doc.add(Para("Question answered: how good is each variant when tuned with the same "
                 "number of trials? " + s.budget_note))
    png = expected_best_figure(s)
    if png:
        doc.add(Figure(doc.unique(f"{key}-expected-best", "figure"), png,
                       f"{s.title}: expected best of k trials (validation objective, left; "
                       f"{metric} of the trial it picks, right), {opts.confidence:.0%} "
                       f"bootstrap bands; dotted: k = {comparison_k(s)}, the comparison's"))
    n_max = max(c.n for c in s.budget_curves)
    ks = shown_ks(n_max, comparison_k(s))
    rows = []
    for c in s.budget_curves:
        rows.append([c.row.label, str(c.n)] + [
            f"{fmt(c.test[k - 1])} [{fmt(c.test_low[k - 1])}, {fmt(c.test_high[k - 1])}]"
            if k <= c.n else "—" for k in ks])
    csv_rows = [[c.row.label, c.n, k, raw(c.objective[k - 1]), raw(c.objective_low[k - 1]),
                 raw(c.objective_high[k - 1]), raw(c.test[k - 1]), raw(c.test_low[k - 1]),
                 raw(c.test_high[k - 1])] for c in s.budget_curves for k in c.ks]
    doc.add(Para(f"Expected {metric} of the best-by-objective trial of k (with its "
                 f"{opts.confidence:.0%} bootstrap interval):"))
    doc.add(Table(doc.unique(f"{key}-expected-best"),
                  ["cell", "trials"] + [f"k={k}" for k in ks], rows,
                  ["row", "n_trials", "k", "objective_expected", "objective_low",
                   "objective_high", f"{metric}_expected", f"{metric}_low", f"{metric}_high"],
                  csv_rows))
    if not s.budget:
        return
    doc.add(Table(
        doc.unique(f"{key}-equal-budget"),
        ["cell", "baseline", "k", "replicates", f"{metric} at k", "baseline at k",
         "Δ (95% CI)", "p", "p (Holm)", "TOST p", "verdict"],
        [[c.row.label, c.base.label, str(c.k), c.replicates, fmt(c.value), fmt(c.base_value),
          f"{fmt(c.diff)} [{fmt(c.low)}, {fmt(c.high)}]", fmt_p(c.p), fmt_p(c.p_holm),
          fmt_p(c.p_tost), c.verdict] for c in s.budget],
        ["row", "baseline", "k", "replicates", "value", "baseline_value", "diff", "diff_low",
         "diff_high", "p", "p_holm", "margin", "p_tost", "significant", "verdict"],
        [[c.row.label, c.base.label, c.k, c.replicates, raw(c.value), raw(c.base_value),
          raw(c.diff), raw(c.low), raw(c.high), raw(c.p), raw(c.p_holm),
          "" if c.margin is None else raw(c.margin), raw(c.p_tost),
          "" if c.significant is None else str(c.significant).lower(), c.verdict]
         for c in s.budget]))


def expected_best_figure(s: TaskSection) -> bytes | None:
    """Expected best objective (left) and test metric (right) against k, one line per row
    with its bootstrap band; a dotted line at the k of the comparison."""
    from rnnbench.report.figures import _png, _pyplot, _style

    plt = _pyplot()
    with _style():
        fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.6))
        for c in s.budget_curves:
            line, = axes[0].plot(c.ks, c.objective, label=f"{c.row.label} (n={c.n})")
            axes[0].fill_between(c.ks, c.objective_low, c.objective_high,
                                 color=line.get_color(), alpha=0.15, linewidth=0)
            axes[1].plot(c.ks, c.test, color=line.get_color())
            axes[1].fill_between(c.ks, c.test_low, c.test_high, color=line.get_color(),
                                 alpha=0.15, linewidth=0)
        for ax, what in zip(axes, ("expected best objective", f"test_{s.metric} of it")):
            ax.axvline(comparison_k(s), color="grey", linestyle=":", linewidth=1)
            ax.set_xlabel("trials k")
            ax.set_ylabel(what)
        axes[0].legend(fontsize=7)
        fig.suptitle(f"{s.title}: expected best of k trials", fontsize=9)
        fig.tight_layout()
        return _png(fig)
