"""How the report reads runs: which params tell runs apart, the order runs are listed
in, which runs are averaged in (and why not), and the design point a run stands for.
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Iterable

from rnnbench.conventions import PLAIN_PARAMS
from rnnbench.report.collect import RunRecord
from rnnbench.tracking import Params, RunKind, Tags

IGNORED_PARAMS = {"seed", "train.verbose", "tracking.uri", "tracking.name",
                  "tracking.experiment", "tracking.timeout_s", "tracking.log_model",
                  "tracking.skip_finished", "tracking.tensorboard", "objective.metric",
                  "objective.split", "objective.direction", "hardware.threads",
                  *PLAIN_PARAMS}
MAX_WORDS = ("acc", "accuracy", "auc", "f1", "r2", "precision", "recall", "bleu")


def natural_key(value: str) -> tuple:
    """Sort numbers numerically and before words: 50 < 100 < 200 < lstm."""
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def guess_mode(metric: str) -> str:
    name = metric.lower()
    return "max" if any(name == w or name.endswith("_" + w) or name.startswith(w)
                        for w in MAX_WORDS) else "min"


def varying(runs: Iterable[RunRecord], keep: Any) -> list[str]:
    runs = list(runs)
    keys = sorted({k for r in runs for k in r.params if keep(k)})
    return [k for k in keys if len({r.params.get(k) for r in runs}) > 1]


def is_task_param(key: str) -> bool:
    return key.startswith("task.") and key not in IGNORED_PARAMS


def is_row_param(key: str) -> bool:
    return not key.startswith("task.") and key not in IGNORED_PARAMS and key != Params.CELL


def run_sort_key(run: RunRecord) -> tuple:
    return (natural_key(run.seed), run.start_ms, run.run_id)


def steady(history: list[tuple[int, float]]) -> float:
    """Median per-epoch value without the first epoch (it includes compilation)."""
    values = [v for s, v in history if math.isfinite(v)]
    if len(history) >= 2:
        values = [v for s, v in history[1:] if math.isfinite(v)]
    return statistics.median(values) if values else math.nan


def mean_of(values: Iterable[float]) -> float:
    xs = [v for v in values if math.isfinite(v)]
    return math.fsum(xs) / len(xs) if xs else math.nan


def exclusion(run: RunRecord, key: str) -> str:
    """Why ``run`` is not averaged in (its status says the rest), or "" when it is."""
    if run.status != "FINISHED":
        reason = " ".join(run.tags.get(Tags.FAILURE_REASON, "").split())
        if run.status == "RUNNING":
            return reason or "still running, or its process died without closing it"
        return reason or "no reason recorded"
    value = run.metrics.get(key)
    if value is None:
        return f"no `{key}` metric"
    if not math.isfinite(value):
        return f"non-finite `{key}` ({value})"
    return ""


def shorten(text: str, limit: int = 240) -> str:
    """``text`` on one line, its middle cut out when longer than ``limit``."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    head = limit // 3
    return text[:head].rstrip() + " … " + text[-(limit - head - 3):].lstrip()


def design_point(run: RunRecord, kind: str) -> str | None:
    """The design point a run stands for: its seed in a multirun; for a sweep trial, the
    values of every sampled hyperparameter (``hp/<label>`` params), which are the same
    in sweeps that share the oracle's seed and search space."""
    if kind != RunKind.TRIAL:
        return f"seed={run.seed}" if run.seed != "" else None
    hps = sorted((k.removeprefix(Params.HP_PREFIX), v) for k, v in run.params.items()
                 if k.startswith(Params.HP_PREFIX))
    return ", ".join(f"{k}={v}" for k, v in hps) if hps else None
