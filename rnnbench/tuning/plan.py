"""What a sweep decides before its first trial: the space for the cell, the objective and
its direction, the sweep's id, and how a trial's values become a run config."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rnnbench import config
from rnnbench.errors import ConfigError
from rnnbench.tuning.space import Space, run_config_node

# keys of the sweep config that do not change what the search computes: changing them
# and running the same command again continues the same search
NOT_IN_SWEEP_ID = ("tracking", "tuner.max_trials", "tuner.overwrite", "tuner.directory",
                   "tuner.project", "tuner.distributed", "tuner.max_consecutive_failed_trials",
                   "tuner.max_retries_per_trial", "train.verbose")


def sweep_hash(cfg: Any) -> str:
    """A short hash of the sweep config without the keys in ``NOT_IN_SWEEP_ID``."""
    container = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
    for key in NOT_IN_SWEEP_ID:
        node = container
        *parents, last = key.split(".")
        for part in parents:
            node = node.get(part, {})
        node.pop(last, None)
    text = OmegaConf.to_yaml(OmegaConf.create(container), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def task_objectives(task: Any) -> list[str]:
    """The per-epoch metrics a task's compiled model logs: ``loss``, ``val_loss``, and
    each compiled metric with and without ``val_``."""
    names = ["loss"]
    for metric in task.compile_metrics():
        name = metric if isinstance(metric, str) else getattr(metric, "name", None)
        if name:
            names.append(str(name))
    return names + [f"val_{n}" for n in names]


def infer_direction(objective: str) -> str | None:
    import keras_tuner as kt

    try:
        return kt.engine.objective.create_objective(objective).direction
    except ValueError:
        return None


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _format_value(value: Any) -> str:
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()  # a NumPy scalar (keras-tuner's Bayesian oracle gives them)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _without_tuning_experiment(keep: list[str], run_node: Any) -> list[str]:
    """``keep`` if ``rnnbench`` composes it; else the same without its ``experiment=``,
    plus every run setting in which ``run_node`` (the trial's run config before its
    hyperparameters) differs from what ``rnnbench`` composes without the experiment.
    Unchanged when Hydra is not initialised (outside a command)."""
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra

    if not GlobalHydra.instance().is_initialized():
        return keep
    try:
        compose("config", overrides=keep)
        return keep
    except Exception:  # the overlay picks a tuner or a search space
        pass
    others = [o for o in keep if _override_key(o) != "experiment"]
    wanted = config.flatten(run_node)
    try:
        base = config.flatten(compose("config", overrides=others))
        chosen = [f"{group}={wanted[f'{group}.name']}" for group in RUN_GROUPS
                  if base.get(f"{group}.name") != wanted.get(f"{group}.name")]
        if chosen:  # the overlay picks another task, cell, ...: pick it, compare within
            others = others + chosen
            base = config.flatten(compose("config", overrides=others))
    except Exception:
        return keep
    given = {_override_key(o) for o in others}
    return others + [f"{k}={_format_value(v)}" for k, v in wanted.items()
                     if k in base and base[k] != v and k not in given]


# config groups of a run whose option is named by the node's `name` (conf/<group>/<name>.yaml)
RUN_GROUPS = ("task", "cell", "hardware", "backend", "tracking")
# the spacing of the oracle seeds of neighbouring ``seed`` values (SweepPlan.oracle_seed)
ORACLE_SEED_STRIDE = 2**20


@dataclass
class SweepPlan:
    """A checked sweep: everything needed to run trials, decided before the first one.

    Args:
        cfg: the sweep config (a ``TuneConfig`` object).
        space: the search space for ``cfg.cell``.
        run_node: the run part of ``cfg`` as a typed config node.
        task_name: the task's name.
        experiment: the MLflow experiment.
        sweep_id: the sweep's id and keras-tuner project name.
        objective: the metric to optimise.
        direction: ``min`` or ``max``.
        overrides: the command-line overrides of ``rnnbench-tune``.
    """

    cfg: Any
    space: Space
    run_node: DictConfig
    task_name: str
    experiment: str
    sweep_id: str
    objective: str
    direction: str
    overrides: list[str] = field(default_factory=list)
    _single_run: list[str] | None = field(default=None, repr=False)

    @classmethod
    def create(cls, cfg: Any, overrides: list[str] | None = None) -> "SweepPlan":
        """Check ``cfg`` (bad input raises ConfigError) and plan the sweep. Needs the
        Keras backend chosen (it asks the task which metrics it compiles)."""
        from rnnbench.model import check_compatible
        from rnnbench.tasks import get_task

        task = get_task(cfg.task)
        check_compatible(cfg, task)
        tuner = cfg.tuner
        produced = task_objectives(task)
        if tuner.objective not in produced:
            raise ConfigError(
                f"tuner.objective={tuner.objective!r} is not a metric that task={task.name} "
                f"produces; it must be one of {', '.join(produced)} (val_ metrics are on the "
                "validation split, the others on the training split).")
        direction = tuner.direction or infer_direction(tuner.objective)
        if direction is None:
            raise ConfigError(f"tuner.direction=null: the direction of tuner.objective="
                              f"{tuner.objective!r} cannot be inferred; set tuner.direction="
                              "min or tuner.direction=max.")
        space = Space.from_config(cfg)
        experiment = cfg.tracking.experiment or task.name
        if tuner.project:
            sweep_id = tuner.project
        else:
            parts = [experiment] if experiment != task.name else []
            parts += [task.name, cfg.cell.name, tuner.name, sweep_hash(cfg)]
            sweep_id = "-".join(parts)
        return cls(cfg, space, run_config_node(cfg), task.name, experiment, sweep_id,
                   tuner.objective, direction, list(overrides or []))

    @property
    def oracle_seed(self) -> int:
        """The oracle's seed: ``seed`` times 2**20, plus 1 (keras-tuner draws a random seed
        for 0).

        keras-tuner draws the j-th value of a search's i-th point with the seed
        ``oracle_seed + H*i + j`` (H values a point), so oracle seeds a few apart share
        draws: with ``seed + 1`` the searches of ``seed=0`` and ``seed=2`` of a 2-value
        space had 19 of their 20 points in common, and ``seed=1`` drew its units from
        ``seed=0``'s learning-rate draws. Spaced 2**20 apart, searches of fewer than
        2**20 draws share none (``seed`` < 4,096; above, the seed wraps within 32 bits).
        ``seed=0`` keeps its oracle seed, 1, and so its points."""
        return (int(self.cfg.seed) * ORACLE_SEED_STRIDE) % (2**32 - 1) + 1

    def _runnable(self, keep: list[str]) -> list[str]:
        """``keep`` as ``rnnbench`` takes it. An ``experiment=`` overlay made for sweeps
        (it picks a tuner or a search space: greff, chorales_shootout_lr) does not compose
        under ``rnnbench``, whose config has neither group; it is replaced by the run
        settings it makes, key by key."""
        if not any(_override_key(o) == "experiment" for o in keep):
            return keep
        if self._single_run is None:
            self._single_run = _without_tuning_experiment(keep, self.run_node)
        return self._single_run

    def trial(self, hp_values: dict[str, Any], execution: int, epochs: int
              ) -> tuple[Any, list[str]]:
        """The run config of one execution of a trial, and the ``rnnbench`` overrides
        that reproduce it as a single run."""
        values = self.space.config_values(hp_values)
        node = self.space.apply(self.run_node, hp_values)
        node.train.epochs = int(epochs)
        node.seed = int(self.cfg.seed) + execution
        node.tracking.skip_finished = False  # a trial is run by the sweep, never skipped
        run_cfg = config.to_object(node)
        set_keys = set(values) | {"train.epochs", "seed"}
        keep = [o for o in self.overrides
                if not _override_key(o).startswith(("tuner", "search_space", "hydra"))
                and _override_key(o) not in set_keys]
        keep = [o for o in self._runnable(keep) if _override_key(o) not in set_keys]
        extra = [f"{k}={_format_value(v)}" for k, v in values.items()]
        extra += [f"train.epochs={int(epochs)}", f"seed={int(self.cfg.seed) + execution}"]
        return run_cfg, keep + extra
