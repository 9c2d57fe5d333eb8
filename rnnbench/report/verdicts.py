"""Statistics behind a report's verdicts: the expected best score of a search of k trials
(Dodge et al. 2019, "Show Your Work") with bootstrap intervals, equivalence tests (TOST),
the exact sign-flip permutation test for a few pairs, and the Wilcoxon test's floor.

Pure NumPy/SciPy: nothing here knows about MLflow.
"""

from __future__ import annotations

import itertools
import math
from typing import Sequence

import numpy as np

BOOTSTRAP = 2000
BOOTSTRAP_SEED = 0
# below this many pairs the report adds the exact sign-flip permutation test
FEW_PAIRS = 6


def max_weights(n: int, k: int) -> np.ndarray:
    """P(the best of k iid draws from n sorted values is the i-th), worst first:
    ``(i/n)^k - ((i-1)/n)^k`` for i = 1..n (Dodge et al. 2019)."""
    i = np.arange(1, n + 1, dtype=float)
    return (i / n) ** k - ((i - 1) / n) ** k


def _order(objective: np.ndarray, mode: str) -> np.ndarray:
    """Indices from the worst to the best objective (stable: ties keep their order)."""
    return np.argsort(-objective if mode == "min" else objective, kind="stable")


def expected_best(objective: Sequence[float], ks: Sequence[int], mode: str,
                  values: Sequence[float] | None = None) -> np.ndarray:
    """For each k, the expected best ``objective`` of k draws (with replacement) from the
    trials (the expected minimum when ``mode`` is ``min``); with ``values``, the expected
    ``values`` (e.g. a test metric) of the trial that is best by ``objective``."""
    obj = np.asarray(objective, dtype=float)
    val = obj if values is None else np.asarray(values, dtype=float)
    order = _order(obj, mode)
    w = np.stack([max_weights(len(obj), k) for k in ks])
    return w @ val[order]


def bootstrap_best(objective: Sequence[float], ks: Sequence[int], mode: str,
                   values: Sequence[float] | None = None, n_boot: int = BOOTSTRAP,
                   seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """``expected_best`` of ``n_boot`` resamples of the trials (rows), for each k (columns)."""
    obj = np.asarray(objective, dtype=float)
    val = obj if values is None else np.asarray(values, dtype=float)
    n = len(obj)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    o, v = obj[idx], val[idx]
    order = np.argsort(-o if mode == "min" else o, axis=1, kind="stable")
    v_sorted = np.take_along_axis(v, order, axis=1)
    w = np.stack([max_weights(n, k) for k in ks])
    return v_sorted @ w.T


def percentile_interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    lo, hi = np.quantile(samples, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(lo), float(hi)


def bootstrap_p(diffs: np.ndarray) -> float:
    """Two-sided bootstrap p-value of ``mean(diff) = 0`` from the resampled differences."""
    return min(1.0, 2 * min(_share(diffs <= 0), _share(diffs >= 0)))


def _share(hits: np.ndarray) -> float:
    """A bootstrap tail share, (hits + 1) / (B + 1): never 0 from a finite resample."""
    return (float(np.sum(hits)) + 1.0) / (len(hits) + 1.0)


def tost_t(mean: float, se: float, df: float, margin: float) -> float:
    """Two one-sided t-tests of ``|true difference| < margin``: the larger of the two
    one-sided p-values (H0: diff <= -margin; H0: diff >= margin). NaN when undefined."""
    from scipy import stats

    if not (se > 0 and df > 0 and margin > 0) or not math.isfinite(mean):
        return math.nan
    p_low = float(stats.t.sf((mean + margin) / se, df))
    p_high = float(stats.t.cdf((mean - margin) / se, df))
    return max(p_low, p_high)


def tost_bootstrap(diffs: np.ndarray, margin: float) -> float:
    """TOST from resampled differences: the larger share beyond either margin."""
    if not margin > 0 or len(diffs) == 0:
        return math.nan
    return max(_share(diffs <= -margin), _share(diffs >= margin))


def sign_flip_p(diffs: Sequence[float]) -> float:
    """Exact two-sided sign-flip permutation test of the mean paired difference: the share
    of the 2^n sign patterns whose |sum| is at least the observed one."""
    d = [float(x) for x in diffs]
    if not d:
        return math.nan
    observed = abs(math.fsum(d))
    tol = 1e-12 * max(1.0, sum(abs(x) for x in d))
    hits = sum(1 for signs in itertools.product((1, -1), repeat=len(d))
               if abs(math.fsum(s * x for s, x in zip(signs, d))) >= observed - tol)
    return hits / 2 ** len(d)


def wilcoxon_floor(n: int) -> float:
    """The smallest two-sided p-value the exact Wilcoxon signed-rank test can give with
    n pairs (every difference of one sign): 2 / 2^n."""
    return 1.0 / 2 ** (n - 1) if n > 0 else math.nan


def tost_interval_note(alpha: float, confidence: float, margin: str) -> str:
    """Why an 'equivalent' comparison's printed interval may reach past its margin."""
    return (f"TOST at level {alpha:g} is the {1 - 2 * alpha:.0%} interval inside ±{margin}: "
            f"the {confidence:.0%} interval printed may reach a little past {margin}")


def equivalence_verdict(significant: bool | None, p_tost: float, alpha: float,
                        margin: float | None, metric: str, low: float, high: float) -> str:
    """The verdict of a comparison that is not significant: 'equivalent within ±δ' (TOST
    at ``alpha``) or 'inconclusive' (the interval [low, high] reaches 0 and a margin);
    without a margin it says so rather than 'no difference'."""
    from rnnbench.report.document import fmt

    if significant:
        raise ValueError("equivalence_verdict is for comparisons that are not significant")
    if margin is None:
        return f"inconclusive (no --equivalence-margin given for {metric})"
    within = margin_text(metric, margin)
    if math.isfinite(p_tost) and p_tost < alpha:
        return f"equivalent within {within} (TOST p {fmt(p_tost, 2)})"
    has_zero = low <= 0 <= high
    if is_log_metric(metric):  # the interval as a ratio: it reaches 1, not 0
        return (f"inconclusive (ratio CI [{fmt(math.exp(low), 3)}, {fmt(math.exp(high), 3)}] "
                + ("includes 1 and " if has_zero else "")
                + f"reaches {within}"
                + ("" if has_zero else "; not significant after Holm's correction") + ")")
    return (f"inconclusive (CI [{fmt(low, 3)}, {fmt(high, 3)}] "
            + ("includes 0 and " if has_zero else "")
            + f"reaches {within}"
            + ("" if has_zero else "; not significant after Holm's correction") + ")")


LOG_PREFIX = "test_ln_"


def is_log_metric(metric: str) -> bool:
    """Whether ``metric`` (``test_ln_mse``) is compared on the log scale."""
    return metric.startswith(LOG_PREFIX)


def margin_text(metric: str, margin: float) -> str:
    """A margin as the user gave it: ``±0.05``, or ``a factor of 2`` on the log scale."""
    from rnnbench.report.document import fmt

    if is_log_metric(metric):
        return f"a factor of {fmt(math.exp(margin), 3)}"
    return f"±{fmt(margin, 3)}"


def parse_margins(items: Sequence[str] | None) -> dict[str, float]:
    """``--equivalence-margin test_mse=0.05`` (repeatable) as ``{"test_mse": 0.05}``.

    A margin written as a factor, ``test_mse=x2``, asks for the comparison on the log
    scale: it becomes ``{"test_ln_mse": ln 2}``, and the sections ranked by ``test_mse``
    compare ``ln(test_mse)`` instead (a difference of logs is a ratio). A missing ``=``, a
    non-numeric, negative, zero or infinite margin, or a factor not above 1, is a
    ``ConfigError``."""
    from rnnbench.errors import ConfigError

    out: dict[str, float] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name:
            raise ConfigError(f"--equivalence-margin {item!r}: give METRIC=VALUE in the "
                              f"metric's units, e.g. --equivalence-margin test_mse=0.05, or "
                              f"METRIC=xFACTOR for a ratio, e.g. test_mse=x2.")
        if not name.startswith("test_"):
            name = "test_" + name
        factor = value[:1] in ("x", "×")
        try:
            margin = float(value[1:] if factor else value)
        except ValueError:
            margin = math.nan
        if factor:
            if not (math.isfinite(margin) and margin > 1):
                raise ConfigError(f"--equivalence-margin {item!r}: a ratio margin is a "
                                  f"factor above 1, e.g. {name}=x2 (within a factor of 2).")
            if not is_log_metric(name):
                name = LOG_PREFIX + name.removeprefix("test_")
            out[name] = math.log(margin)
            continue
        if not (math.isfinite(margin) and margin > 0):
            raise ConfigError(f"--equivalence-margin {item!r}: the margin must be a positive "
                              f"number in the metric's units, e.g. {name}=0.05 (or a "
                              f"factor, {name}=x2).")
        out[name] = margin
    return out
