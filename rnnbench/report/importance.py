"""Hyperparameter importance of a sweep with optuna's fANOVA implementation.

The trials of a sweep are MLflow child runs; they are replayed into an in-memory optuna
study (``optuna.trial.create_trial``) and ``FanovaImportanceEvaluator`` measures how much
of the objective's variance each hyperparameter explains on its own (its main effect,
Hutter et al. 2014, the method Greff et al. 2017 use). The shares are NOT normalised:
what they leave of 1 is the variance of interactions between hyperparameters.
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _distribution(values: Sequence[str]):
    """An optuna distribution that covers ``values`` (strings, as MLflow stores params):
    integers → IntDistribution, numbers → FloatDistribution (log scale when they span a
    factor of 10 or more and are positive), anything else → CategoricalDistribution."""
    from optuna.distributions import (CategoricalDistribution, FloatDistribution,
                                      IntDistribution)

    numbers = [_number(v) for v in values]
    if all(n is not None for n in numbers):
        low, high = min(numbers), max(numbers)
        log = low > 0 and high / low >= 10
        if all(v.lstrip("-").isdigit() for v in values):
            return IntDistribution(int(low), int(high), log=log), [int(v) for v in values]
        return FloatDistribution(low, high, log=log), numbers
    choices = tuple(sorted(set(values)))
    return CategoricalDistribution(choices), list(values)


def fanova(params: Sequence[dict[str, str]], objective: Sequence[float], keys: Sequence[str],
           mode: str, seed: int = 0) -> list[tuple[str, float]]:
    """fANOVA importance of ``keys`` over trials with these ``params`` and ``objective``.

    Args:
        params: each trial's params (MLflow strings).
        objective: each trial's objective value (finite).
        keys: the hyperparameters to rank (they must vary between trials).
        mode: ``min`` or ``max``, the objective's direction.
        seed: the random forest's seed (fixed, so the same trials give the same numbers).

    Returns:
        ``(key, share)`` pairs, most important first: each hyperparameter's main-effect
        share of the objective's variance (unnormalised; 1 minus their sum is the share
        of interactions).
    """
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    columns = {}
    for key in keys:
        dist, values = _distribution([p.get(key, "None") for p in params])
        columns[key] = (dist, values)
    trials = []
    for i, value in enumerate(objective):
        trials.append(optuna.trial.create_trial(
            params={k: columns[k][1][i] for k in keys},
            distributions={k: columns[k][0] for k in keys},
            value=float(value)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.create_study(direction="minimize" if mode == "min" else "maximize")
        study.add_trials(trials)
        result = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=seed),
                                       normalize=False)
    return sorted(((k, float(v)) for k, v in result.items()), key=lambda kv: (-kv[1], kv[0]))


def history_figure(points: Sequence[tuple[int, float, float]], title: str, objective: str,
                   mode: str) -> bytes | None:
    """A sweep's optimisation history as a PNG (the report's figure style): each trial's
    objective (dots) and the best so far (a step line), from
    :func:`rnnbench.report.sweeps.history_points`; None when no trial has a value."""
    if not points:
        return None
    from rnnbench.report.figures import _png, _pyplot, _style

    plt = _pyplot()
    with _style():
        fig, ax = plt.subplots(figsize=(6.0, 3.6))
        trials = [k for k, _, _ in points]
        ax.plot(trials, [v for _, v, _ in points], "o", color="#4C72B0", label="trial")
        ax.step(trials, [b for _, _, b in points], where="post", color="#DD8452",
                label=f"best so far ({'lowest' if mode == 'min' else 'highest'})")
        ax.set_xlabel("trial")
        ax.set_ylabel(objective)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(loc="best")
        ax.set_title(f"{title}\noptimisation history ({len(points)} trials)")
        fig.tight_layout()
        return _png(fig)


def confounded(params: Sequence[dict[str, str]], keys: Sequence[str],
               threshold: float = 0.5) -> list[tuple[str, str, float]]:
    """Pairs of numeric hyperparameters whose values are rank-correlated (|Spearman ρ| >
    ``threshold``) over the distinct points tried: fANOVA cannot tell their effects apart."""
    from scipy import stats

    cols = {}
    for key in keys:
        numbers = [_number(p.get(key, "")) for p in params]
        if all(n is not None for n in numbers) and len(set(numbers)) > 1:
            cols[key] = numbers
    out = []
    names = sorted(cols)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            rho = float(stats.spearmanr(cols[a], cols[b]).statistic)
            if math.isfinite(rho) and abs(rho) > threshold:
                out.append((a, b, rho))
    return out
