"""Statistics of a benchmark report: confidence intervals, Welch's t-test, paired tests
(paired t and Wilcoxon signed-rank), Holm's correction, minimum detectable effects, and
the best fraction of a sweep's trials.

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


@dataclass(frozen=True)
class PairedResult:
    """Paired comparison of ``a`` and ``b`` over shared design points: the differences
    ``d = a - b`` tested with the paired t-test and the Wilcoxon signed-rank test
    (both two-sided, ``scipy.stats.ttest_rel`` / ``scipy.stats.wilcoxon``).

    Args:
        n: the number of pairs.
        mean: mean difference.
        sd: sample standard deviation of the differences (NaN when ``n < 2``).
        half_width: half-width of the t confidence interval of ``mean`` (NaN when
            ``n < 3``: with fewer pairs no interval, and no test, is meaningful).
        dz: the effect size ``mean / sd`` (Cohen's d_z; NaN when ``sd`` is 0 or NaN).
        t: the paired t statistic; NaN when undefined.
        p_t: its p-value.
        w: the Wilcoxon statistic (sum of ranks of the smaller sign); NaN when undefined.
        p_w: its p-value (exact for small samples without ties, as SciPy decides).
        positive: how many differences are > 0.
        negative: how many differences are < 0.
    """

    n: int
    mean: float
    sd: float
    half_width: float
    dz: float
    t: float
    p_t: float
    w: float
    p_w: float
    positive: int
    negative: int


MIN_INTERVAL_N = 3


def paired(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> PairedResult:
    """Paired tests of ``a[i] - b[i]`` (the two lists are aligned on design points)."""
    import warnings

    from scipy import stats

    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} and {len(b)}")
    d = [float(x) - float(y) for x, y in zip(a, b)]
    n = len(d)
    pos, neg = sum(1 for x in d if x > 0), sum(1 for x in d if x < 0)
    iv = mean_ci(d, confidence)
    nan = math.nan
    half = iv.half_width if n >= MIN_INTERVAL_N else nan
    if n < MIN_INTERVAL_N or not iv.sd > 0:  # no test is meaningful
        return PairedResult(n, iv.mean, iv.sd, half if iv.sd > 0 else nan,
                            iv.mean / iv.sd if iv.sd > 0 else nan, nan, nan, nan, nan,
                            pos, neg)
    res = stats.ttest_rel(a, b)
    w, p_w = nan, nan
    if pos + neg > 0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wres = stats.wilcoxon(d)
        w, p_w = float(wres.statistic), float(wres.pvalue)
    return PairedResult(n, iv.mean, iv.sd, half, iv.mean / iv.sd, float(res.statistic),
                        float(res.pvalue), w, p_w, pos, neg)


def _solve_mde(power_at: Callable[[float], float], scale: float, power: float) -> float:
    """The smallest effect (in units of ``scale``) whose power reaches ``power``."""
    from scipy.optimize import brentq

    if not (scale > 0 and math.isfinite(scale)):
        return math.nan
    hi = scale
    while power_at(hi) < power:
        hi *= 2
        if hi > 1e6 * scale:
            return math.nan
    return float(brentq(lambda x: power_at(x) - power, 0.0, hi, xtol=scale * 1e-9))


def _t_power(delta: float, se: float, df: float, alpha: float) -> float:
    """Power of a two-sided t-test at level ``alpha`` when the true effect is ``delta``
    and the estimate's standard error ``se`` (non-central t with ``df`` degrees)."""
    from scipy import stats

    crit = float(stats.t.ppf(1 - alpha / 2, df))
    nc = delta / se
    upper = float(stats.nct.sf(crit, df, nc))
    lower = float(stats.nct.cdf(-crit, df, nc))
    # SciPy's non-central t gives NaN far in its tails (large nc); there the normal
    # approximation is exact to many digits
    if not math.isfinite(upper):
        upper = float(stats.norm.sf(crit - nc))
    if not math.isfinite(lower):
        lower = float(stats.norm.cdf(-crit - nc))
    return upper + lower


def mde_paired(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Minimum detectable mean difference of a two-sided paired t-test at level ``alpha``
    with ``power``, for ``n`` pairs whose differences have standard deviation ``sd``
    (the observed one): exact, from the non-central t distribution. NaN when ``n < 3``."""
    if n < MIN_INTERVAL_N or not sd > 0:
        return math.nan
    se = sd / math.sqrt(n)
    return _solve_mde(lambda x: _t_power(x, se, n - 1, alpha), se, power)


def mde_welch(a: Sequence[float], b: Sequence[float], alpha: float = 0.05,
              power: float = 0.8) -> float:
    """Minimum detectable difference of means of Welch's two-sided t-test at level
    ``alpha`` with ``power``, with the samples' own variances (Welch–Satterthwaite
    degrees of freedom). NaN with fewer than 3 values a side."""
    if min(len(a), len(b)) < MIN_INTERVAL_N:
        return math.nan
    va, vb = _var([float(x) for x in a]) / len(a), _var([float(x) for x in b]) / len(b)
    if va + vb == 0.0:
        return math.nan
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    se = math.sqrt(va + vb)
    return _solve_mde(lambda x: _t_power(x, se, df, alpha), se, power)


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
