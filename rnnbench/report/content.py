"""The content of a report as plain data: what to put in it (:class:`ReportOptions`) and
what the analysis found, per task section and per row, before it is rendered.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from rnnbench.report import stats
from rnnbench.report.collect import RunRecord, Selection

TRIAL_FRACTION = 0.1
ALPHA = 0.05
DESIGNS = ("auto", "paired", "unpaired")


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
        equivalence_margins: per test metric (``test_mse``), the margin δ in its units
            within which a comparison that is not significant is called equivalent (TOST).
        budget_k: the search size k at which sweeps are compared at equal budgets; None:
            the smallest search's size.
    """

    baseline: str = "lstm"
    metric: str | None = None
    mode: str | None = None
    confidence: float = 0.95
    alpha: float = ALPHA
    trial_fraction: float = TRIAL_FRACTION
    design: str = "auto"
    equivalence_margins: dict[str, float] = field(default_factory=dict)
    budget_k: int | None = None


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
    margin: float | None = None
    p_tost: float = math.nan


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
    margin: float | None = None
    p_tost: float = math.nan
    p_perm: float = math.nan  # exact sign-flip permutation test, with fewer than 6 pairs


@dataclass
class BudgetCurve:
    """A row's expected best score as a function of the search's size k = 1..n: of the
    sweep's objective, and the test metric of the trial that objective picks, each with
    bootstrap interval bounds."""

    row: Row
    n: int
    ks: list[int]
    objective: list[float]
    objective_low: list[float]
    objective_high: list[float]
    test: list[float]
    test_low: list[float]
    test_high: list[float]


@dataclass
class BudgetComparison:
    """A row against the baseline at the same search size k: the expected test metric of
    the best-by-objective trial of k, their difference with its bootstrap interval."""

    row: Row
    base: Row
    k: int
    value: float
    base_value: float
    diff: float
    low: float
    high: float
    p: float
    p_holm: float = math.nan
    significant: bool | None = None
    margin: float | None = None
    p_tost: float = math.nan
    verdict: str = ""
    replicates: str = "trials (bootstrap)"


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
    #: a sweep's optimisation history: (trial number, objective, best so far), and the
    #: objective's name and mode
    history: list[tuple[int, float, float]] = field(default_factory=list)
    history_objective: tuple[str, str] = ("", "min")
    budget_curves: list[BudgetCurve] = field(default_factory=list)
    budget: list[BudgetComparison] = field(default_factory=list)
    budget_k: int = 0
    budget_note: str = ""
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
