"""The one float a run returns to a Hydra sweeper: which metric, on which split, which way.

Hydra's sweepers (Optuna, Nevergrad, Ax) need the task function to return one number.
``objective.metric`` (null: the task's primary metric) is one of the exact metrics the
task computes over a whole split (``Task.evaluate``); ``objective.split`` is ``val`` by
default; ``objective.direction`` (null: the metric's own) says whether lower or higher
is better, and must agree with the sweeper's own direction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from rnnbench.errors import ConfigError
from rnnbench.tracking import Tags

# metrics whose higher values are better (the others: lower)
HIGHER_IS_BETTER = ("accuracy", "acc", "frame_accuracy", "auc", "f1", "r2", "precision",
                    "recall")


@dataclass
class Objective:
    """A resolved objective: ``metric`` on ``split``, ``direction`` minimize/maximize."""

    metric: str
    split: str
    direction: str

    @property
    def key(self) -> str:
        """The MLflow metric that holds it: ``test_<m>`` or ``final_<split>_<m>``."""
        return split_key(self.split, self.metric)

    def describe(self) -> str:
        return f"{self.split} {self.metric} ({self.direction})"

    def tags(self) -> dict[str, str]:
        return {Tags.OBJECTIVE: self.key, Tags.OBJECTIVE_DIRECTION: self.direction}


def split_key(split: str, metric: str) -> str:
    """MLflow key of an exact metric: ``test_mse``, ``final_val_mse``, ``final_train_mse``
    (``val_*`` stays the per-epoch Keras metric of the validation split)."""
    return f"test_{metric}" if split == "test" else f"final_{split}_{metric}"


def natural_direction(metric: str, task: Any) -> str | None:
    if metric == task.primary_metric:
        return "minimize" if task.primary_mode == "min" else "maximize"
    name = metric.lower()
    if name in HIGHER_IS_BETTER or name.endswith(tuple("_" + w for w in HIGHER_IS_BETTER)):
        return "maximize"
    return "minimize"


def resolve(cfg: Any, task: Any, metrics_of: Callable[[], dict[str, float]] | None = None,
            sweeper_direction: str | None = None) -> Objective:
    """Check ``cfg`` (an ``ObjectiveConfig``) against ``task`` before training.

    ``metrics_of()`` returns the exact metrics of the split (any model: only the names
    count); it is called only for a metric other than the task's primary one.
    ``sweeper_direction`` is the running Hydra sweeper's own direction, when it has one.
    Raises ConfigError for a metric the task does not compute, or a direction that
    disagrees with the sweeper's.
    """
    metric = (cfg.metric or task.primary_metric).removeprefix("test_")
    if metric != task.primary_metric and metrics_of is not None:
        names = sorted(metrics_of())
        if metric not in names:
            raise ConfigError(
                f"objective.metric={cfg.metric!r}: task={task.name} does not compute it. "
                f"The metrics it logs for each split are: {', '.join(names)} (as test_<m> "
                f"for the test split, final_val_<m> for the validation split); its primary "
                f"metric, the default, is {task.primary_metric}.")
    direction = cfg.direction or natural_direction(metric, task)
    if sweeper_direction is not None and sweeper_direction != direction:
        raise ConfigError(
            f"the sweeper maximises or minimises the other way: hydra.sweeper.direction="
            f"{sweeper_direction} but objective {cfg.split} {metric} is to {direction}. "
            f"Set hydra.sweeper.direction={direction}, or objective.direction="
            f"{sweeper_direction} if that is what you mean.")
    return Objective(metric, cfg.split, direction)


def value_of(objective: Objective, metrics: dict[str, float]) -> float:
    """The objective from a run's logged metrics (NaN when it was not logged)."""
    value = metrics.get(objective.key)
    return float(value) if value is not None and math.isfinite(float(value)) else math.nan
