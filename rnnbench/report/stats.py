"""Statistics of a benchmark report: confidence intervals, Welch's t-test, Holm's
correction, and the best fraction of a sweep's trials.

Pure NumPy/SciPy: nothing here knows about MLflow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Interval:
    """A sample mean with the half-width of its Student-t confidence interval.

    Args:
        mean: the sample mean (NaN for an empty sample).
        half_width: the half-width of the interval; NaN when ``n < 2``.
        n: the sample size.
        sd: the sample standard deviation (``ddof=1``); NaN when ``n < 2``.
        confidence: the confidence level, e.g. 0.95.
    """

    mean: float
    half_width: float
    n: int
    sd: float
    confidence: float

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width


@dataclass(frozen=True)
class WelchResult:
    """The outcome of Welch's unequal-variances t-test (two-sided).

    Args:
        t: the t statistic of ``mean(a) - mean(b)``.
        df: the Welch–Satterthwaite degrees of freedom.
        p: the two-sided p-value; NaN when the test is undefined (a sample with fewer
            than two values, or both samples without any spread).
    """

    t: float
    df: float
    p: float


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean and Student-t confidence interval of ``values`` (``n - 1`` degrees of freedom)."""
    from scipy import stats

    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        return Interval(math.nan, math.nan, 0, math.nan, confidence)
    mean = math.fsum(xs) / n
    if n < 2:
        return Interval(mean, math.nan, 1, math.nan, confidence)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    tq = float(stats.t.ppf(0.5 + confidence / 2.0, n - 1))
    return Interval(mean, tq * sd / math.sqrt(n), n, sd, confidence)


def welch_t(a: Sequence[float], b: Sequence[float]) -> WelchResult:
    """Welch's t-test of the means of ``a`` and ``b`` (``scipy.stats.ttest_ind``,
    ``equal_var=False``), two-sided."""
    from scipy import stats

    xa = [float(v) for v in a]
    xb = [float(v) for v in b]
    if len(xa) < 2 or len(xb) < 2:
        return WelchResult(math.nan, math.nan, math.nan)
    va = _var(xa) / len(xa)
    vb = _var(xb) / len(xb)
    if va + vb == 0.0:
        return WelchResult(math.nan, math.nan, math.nan)
    res = stats.ttest_ind(xa, xb, equal_var=False)
    df = (va + vb) ** 2 / (va**2 / (len(xa) - 1) + vb**2 / (len(xb) - 1))
    return WelchResult(float(res.statistic), float(df), float(res.pvalue))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the order given.

    NaN p-values (tests that could not be run) stay NaN and do not count in the family.
    The k-th smallest of m valid p-values is multiplied by ``m - k + 1``; the adjusted
    values are then made non-decreasing in that order and capped at 1.
    """
    valid = sorted((p, i) for i, p in enumerate(pvalues) if not math.isnan(p))
    out = [math.nan] * len(pvalues)
    m = len(valid)
    running = 0.0
    for k, (p, i) in enumerate(valid):
        running = max(running, min(1.0, (m - k) * p))
        out[i] = running
    return out


def best_fraction(items: Sequence[T], score: Callable[[T], float], mode: str,
                  fraction: float = 0.1) -> list[T]:
    """The best ``ceil(fraction * m)`` of the ``m`` items with a finite ``score``
    (``mode``: ``min`` or ``max``), at least one; ties keep the given order."""
    finite = [it for it in items if math.isfinite(score(it))]
    if not finite:
        return []
    k = max(1, math.ceil(fraction * len(finite) - 1e-9))
    sign = 1.0 if mode == "min" else -1.0
    ranked = sorted(enumerate(finite), key=lambda pair: (sign * score(pair[1]), pair[0]))
    return [it for _, it in ranked[:k]]


def _var(xs: Sequence[float]) -> float:
    mean = math.fsum(xs) / len(xs)
    return math.fsum((x - mean) ** 2 for x in xs) / (len(xs) - 1)
