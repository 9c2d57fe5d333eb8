"""Config schemas of the tasks, one dataclass per task option in ``conf/task/``.

Kept free of TensorFlow so that the config can be composed and checked before the
Keras backend is chosen. ``TASK_SCHEMAS`` maps each ``conf/task/<name>.yaml`` to its
schema; the YAML file pulls it in with ``- /schema/task/<name>@_here_``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from omegaconf import MISSING

from rnnbench.errors import ConfigError


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


@dataclass
class TaskConfig:
    """Keys every task has. ``limit`` caps the examples (windows, utterances) per split,
    for smoke runs and tests; null uses all of them."""

    name: str = MISSING
    limit: Optional[int] = None

    def __post_init__(self) -> None:
        if self.limit is not None:
            _require(self.limit >= 1, f"task.limit={self.limit} is not allowed: "
                     "task.limit must be null or an integer >= 1.")


@dataclass
class TimeSeriesConfig(TaskConfig):
    """Direct multi-step forecasting: ``lookback`` past values predict the next
    ``horizon``. The split is chronological (``val_fraction``/``test_fraction`` of the
    series at the end). ``normalize``: ``window`` subtracts each window's last value and
    divides by the train split's scale (for trending series); ``global`` standardises
    with the train split's mean and std. ``season`` is the seasonal period used by the
    seasonal-naive baseline and MASE."""

    lookback: int = 52
    horizon: int = 8
    season: int = 52
    stride: int = 1
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    normalize: str = "window"
    path: Optional[str] = None
    column: Optional[str] = None
    date_column: Optional[str] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("lookback", "horizon", "season", "stride"):
            value = getattr(self, key)
            _require(value >= 1, f"task.{key}={value} is not allowed: "
                     f"task.{key} must be an integer >= 1.")
        for key in ("val_fraction", "test_fraction"):
            value = getattr(self, key)
            _require(0 < value < 0.5, f"task.{key}={value} is not allowed: "
                     f"task.{key} must be in (0, 0.5).")
        _require(self.normalize in ("window", "global"),
                 f"task.normalize={self.normalize!r} is not allowed: "
                 "task.normalize must be one of window, global.")


TASK_SCHEMAS: dict[str, type] = {
    "co2": TimeSeriesConfig,
}
