"""A search space from config as keras-tuner hyperparameters, and a trial's values as a
run config.

Each entry of ``search_space.params`` sets one key of the run config. Its label names
the keras-tuner hyperparameter (and ``hp/<label>`` in MLflow); ``fixed`` entries are not
searched but set in every trial. Before any trial runs, both ends of every range and
every choice are put through the run config's own checks, so a value the run would
refuse (``model.dropout=1.0``) is a :class:`~rnnbench.errors.ConfigError` up front.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, fields
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rnnbench import config
from rnnbench.config import RunConfig
from rnnbench.errors import ConfigError
from rnnbench.tuning.configs import HyperParamSpec, check_spec, check_unique_keys

# keras-tuner's Hyperband adds these to a trial's values: epochs and warm start
HYPERBAND_KEYS = ("tuner/epochs", "tuner/initial_epoch", "tuner/bracket", "tuner/round",
                  "tuner/trial_id")


def cell_lineage(cell_name: str) -> tuple[str, ...]:
    """The names a cell is known by in ``search_space.families``: its family (when the
    cell registry gives one), then its own name (the more specific one, applied last)."""
    try:
        from rnnbench.cells import CELLS
    except ImportError:
        return (cell_name,)
    spec = CELLS.get(cell_name) if isinstance(CELLS, dict) else None
    family = getattr(spec, "family", None)
    return (family, cell_name) if family and family != cell_name else (cell_name,)


def run_config_node(cfg: Any) -> DictConfig:
    """The run part of a sweep config (a ``TuneConfig`` object) as a typed node."""
    run = RunConfig(**{f.name: copy.deepcopy(getattr(cfg, f.name)) for f in fields(RunConfig)})
    return OmegaConf.structured(run)


def _set(node: DictConfig, key: str, value: Any) -> None:
    try:
        OmegaConf.update(node, key, value, merge=False)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{key}={value!r} cannot be set: {exc}".split("\n")[0]) from None


def space_name(space: Any) -> str:
    """The name a sweep records for its space: ``search_space.name`` when set, else (left
    at the schema's ``default``) the option Hydra chose in the ``search_space`` group, so
    that a file ``mine.yaml`` without ``name:`` is recorded as ``mine``."""
    if space.name != "default":
        return space.name
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            choice = HydraConfig.get().runtime.choices.get("search_space")
            if choice:
                return str(choice)
    except (ImportError, ValueError, AttributeError):
        pass
    return space.name


@dataclass
class Space:
    """The search space of one sweep, for one cell.

    Args:
        specs: label -> complete :class:`HyperParamSpec` (families already applied).
        name: the ``search_space`` option it came from.
    """

    specs: dict[str, HyperParamSpec]
    name: str = "default"

    @classmethod
    def from_config(cls, cfg: Any) -> "Space":
        """The space of a ``TuneConfig`` for its cell, checked against its run config."""
        space = cfg.search_space
        specs = space.resolve(cell_lineage(cfg.cell.name))
        for label, spec in specs.items():
            check_spec(f"search_space.params.{label} (for cell={cfg.cell.name})", spec)
        name = space_name(space)
        check_unique_keys(f"search_space={name} for cell={cfg.cell.name}", specs)
        out = cls(specs, name)
        out.check_against(run_config_node(cfg))
        return out

    @property
    def searched(self) -> dict[str, HyperParamSpec]:
        return {k: s for k, s in self.specs.items() if s.type != "fixed"}

    @property
    def fixed(self) -> dict[str, Any]:
        """``{config key: value}`` of the fixed entries."""
        return {s.key: s.value for s in self.specs.values() if s.type == "fixed"}

    def hyperparameters(self):
        """The searched entries as a ``keras_tuner.HyperParameters``."""
        import keras_tuner as kt

        hp = kt.HyperParameters()
        for label, s in self.searched.items():
            sampling = s.sampling or "linear"
            if s.type == "int":
                hp.Int(label, int(s.low), int(s.high),
                       step=int(s.step) if s.step is not None else None, sampling=sampling)
            elif s.type == "float":
                hp.Float(label, float(s.low), float(s.high), step=s.step, sampling=sampling)
            elif s.type == "choice":
                hp.Choice(label, list(s.values))
            else:
                hp.Boolean(label)
        return hp

    def config_values(self, hp_values: dict[str, Any]) -> dict[str, Any]:
        """``{config key: value}`` for a trial: its searched values (transformed) and the
        fixed entries. Keys of ``hp_values`` that are not in the space are ignored."""
        out = dict(self.fixed)
        for label, s in self.searched.items():
            if label not in hp_values:
                continue
            value = hp_values[label]
            if s.type == "int":
                value = int(value)
            elif s.type == "float":
                value = float(value)
                if s.transform == "one_minus":
                    value = 1.0 - value
            out[s.key] = value
        return out

    def apply(self, node: DictConfig, hp_values: dict[str, Any]) -> DictConfig:
        """A copy of the run-config ``node`` with a trial's values set."""
        node = copy.deepcopy(node)
        for key, value in self.config_values(hp_values).items():
            _set(node, key, value)
        return node

    def check_against(self, node: DictConfig) -> None:
        """Refuse, before any trial, a range end or choice that the run config refuses."""
        fixed = self.fixed
        base = copy.deepcopy(node)
        for key, value in fixed.items():
            _set(base, key, value)
        try:
            config.to_object(base)
        except ConfigError as exc:
            raise ConfigError(f"search_space={self.name}: the fixed entries give a run config "
                              f"that is not allowed: {exc}") from None
        for label, s in self.searched.items():
            if s.type in ("int", "float"):
                probes = [s.low, s.high]
                if s.type == "int":
                    probes = [int(v) for v in probes]
                elif s.transform == "one_minus":
                    probes = [1.0 - v for v in probes]
            elif s.type == "choice":
                probes = list(s.values)
            else:
                probes = [False, True]
            for value in probes:
                trial = copy.deepcopy(base)
                try:
                    _set(trial, s.key, value)
                    config.to_object(trial)
                except ConfigError as exc:
                    raise ConfigError(
                        f"search_space.params.{label} can give {s.key}={value!r}, which the run "
                        f"config refuses: {exc} Narrow the entry's range or values.") from None

    def describe(self) -> dict[str, Any]:
        """The space as plain data, for the sweep's MLflow record."""
        out = {}
        for label, s in self.specs.items():
            out[label] = {k: v for k, v in asdict(s).items() if v is not None}
        return out

    def summary(self) -> dict[str, str]:
        """One line per entry, e.g. ``model.units: int log [20, 200]``."""
        out = {}
        for label, s in self.specs.items():
            if s.type in ("int", "float"):
                how = f"{s.sampling or 'linear'} [{s.low:g}, {s.high:g}]"
                how += f" step {s.step:g}" if s.step is not None else ""
                how += " as 1 - u" if s.transform == "one_minus" else ""
            elif s.type == "choice":
                how = str(list(s.values))
            elif s.type == "fixed":
                how = "= " + ("null" if s.value is None else str(s.value))
            else:
                how = "[false, true]"
            out[label] = f"{s.key}: {s.type} {how}"
        return out

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "params": self.describe()}, indent=2,
                          sort_keys=True)


def format_values(hp_values: dict[str, Any]) -> str:
    """``units=57 lr=0.00123 ...`` for the console."""
    parts = []
    for label, value in hp_values.items():
        if label.startswith("tuner/"):
            continue
        if isinstance(value, float):
            parts.append(f"{label}={value:.4g}")
        else:
            parts.append(f"{label}={value}")
    if "tuner/epochs" in hp_values:  # Hyperband
        parts.append(f"· {hp_values['tuner/epochs']} epochs")
        if hp_values.get("tuner/trial_id") is not None:
            parts.append(f"continuing trial {int(hp_values['tuner/trial_id']) + 1} from epoch "
                         f"{hp_values.get('tuner/initial_epoch', 0)}")
    return " ".join(parts)
