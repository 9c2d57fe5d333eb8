"""Config schema of ``rnnbench-tune``: the tuner, the search space, and the sweep config.

Like :mod:`rnnbench.config` this module stays free of TensorFlow and Keras: it is
imported before the backend is chosen. Each check raises
:class:`~rnnbench.errors.ConfigError` naming the key, the value and what is allowed.

``TuneConfig`` is :class:`~rnnbench.config.RunConfig` plus ``tuner`` and
``search_space``. All its fields default to MISSING: ``conf/tune.yaml`` merges it last,
after the tuner and search-space groups (typed by ``/schema/tuner`` and
``/schema/search_space``) and the whole run config (``config.yaml``, experiment
overlays included), so it adds the root's type without resetting any value.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields, make_dataclass
from typing import Any, Dict, List, Optional, get_type_hints

from omegaconf import MISSING

from rnnbench.config import RunConfig, check, check_choice
from rnnbench.errors import ConfigError
from rnnbench.paths import check_name

TUNERS = ("random", "hyperband", "bayesian")
DIRECTIONS = ("min", "max")
ROLES = ("none", "chief", "worker")
HP_TYPES = ("int", "float", "choice", "bool", "fixed")
SAMPLINGS = ("linear", "log", "reverse_log")
TRANSFORMS = ("none", "one_minus")
# Config keys a search space may not set: what decides the budget, the record or the
# comparison itself rather than the model.
FROZEN_KEYS = ("seed", "train.epochs", "task.name", "cell.name")
FROZEN_PREFIXES = ("tracking.", "hardware.", "backend.", "diagnostics.", "tuner.",
                   "search_space.")
_LABEL = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclass
class DistributedConfig:
    """keras-tuner's chief/worker mode.

    Args:
        role: ``none`` (one process runs the whole search), ``chief`` (serves the
            oracle and runs no trial) or ``worker`` (asks the chief for trials).
        address: chief: the address it listens on (null: 127.0.0.1); worker: the
            chief's address (required unless ``address_file`` is given).
        port: the chief's port; 0 (chief, with ``address_file``): any free port.
        address_file: a file the chief writes its ``<address> <port>`` to once it
            listens (whole, by rename), and workers read it from: they wait for it, and
            read it again when the chief goes away (a requeued chief comes back on
            another port or node). On a shared filesystem for several machines.
        worker_id: a worker's name, unique among the workers (null:
            ``worker-<host>-<pid>``). Restarting a worker with the same id makes it
            pick up the trial it was running.
        wait_s: how long a worker waits for its chief to answer before it gives up.
    """

    role: str = "none"
    address: Optional[str] = None
    port: int = 8000
    worker_id: Optional[str] = None
    wait_s: float = 120.0
    address_file: Optional[str] = None

    def __post_init__(self) -> None:
        check_choice("tuner.distributed.role", self.role, ROLES)
        if self.port == 0 and self.role == "chief":
            check(bool(self.address_file), "tuner.distributed.port", self.port,
                  "an integer in [1, 65535] (0, any free port, only with "
                  "tuner.distributed.address_file=<file the workers read>)")
        else:
            check(1 <= self.port <= 65535, "tuner.distributed.port", self.port,
                  "an integer in [1, 65535]")
        check(self.wait_s > 0, "tuner.distributed.wait_s", self.wait_s, "a number of seconds > 0")
        if self.role == "worker" and not (self.address or self.address_file):
            raise ConfigError(
                "tuner.distributed.role=worker needs the chief's address: set "
                "tuner.distributed.address=<chief host or IP> (and tuner.distributed.port, "
                f"now {self.port}) to where `rnnbench-tune tuner.distributed.role=chief` runs, "
                "or tuner.distributed.address_file=<the file the chief writes its address to>."
            )
        if self.worker_id is not None:
            check(bool(_LABEL.match(self.worker_id)) and "chief" not in self.worker_id,
                  "tuner.distributed.worker_id", self.worker_id,
                  "null or a name of letters, digits, '_', '-', '.' without the word "
                  "'chief' (keras-tuner treats any id containing it as the chief)")


@dataclass
class TunerConfig:
    """The search algorithm, its objective and its budget. See ``conf/tuner/``.

    Args:
        name: ``random``, ``hyperband`` or ``bayesian`` (keras-tuner's oracles).
        objective: the per-epoch metric to optimise: ``loss``, ``val_loss``, or one of
            the task's compiled metrics with or without ``val_``. A trial's score is
            its best epoch.
        direction: ``min`` or ``max``; null infers it from the name as keras-tuner does.
        max_trials: trials in all (hyperband: null runs its whole schedule, a number
            caps it).
        max_epochs: epochs per trial (hyperband: of the longest trials).
        executions_per_trial: training runs per trial, with seeds ``seed``,
            ``seed + 1``, ...; the score is their mean.
        max_consecutive_failed_trials: the search stops after this many FAILED trials
            in a row.
        max_retries_per_trial: re-runs of a trial that crashed (not of a NaN trial).
        overwrite: start afresh, deleting the saved search of the same project.
        directory: where keras-tuner keeps the search state (resume reads it).
        project: the search's name (null: derived from experiment, task, cell, tuner
            and a hash of the config, so the same command resumes the same search).
        factor, hyperband_iterations: Hyperband's reduction factor and repeats.
        num_initial_points, alpha, beta: Bayesian optimisation's random start points
            (null: 3 x the number of hyperparameters), noise level and exploration.
        distributed: chief/worker mode, see :class:`DistributedConfig`.
    """

    name: str = "random"
    objective: str = "val_loss"
    direction: Optional[str] = None
    max_trials: Optional[int] = 10
    max_epochs: int = 10
    executions_per_trial: int = 1
    max_consecutive_failed_trials: int = 10
    max_retries_per_trial: int = 0
    overwrite: bool = False
    directory: str = "tuning"
    project: Optional[str] = None
    factor: int = 3
    hyperband_iterations: int = 1
    num_initial_points: Optional[int] = None
    alpha: float = 1e-4
    beta: float = 2.6
    distributed: DistributedConfig = field(default_factory=DistributedConfig)

    def __post_init__(self) -> None:
        check_choice("tuner.name", self.name, TUNERS)
        check(bool(self.objective), "tuner.objective", self.objective, "a metric name")
        if self.direction is not None:
            check_choice("tuner.direction", self.direction, DIRECTIONS)
        if self.max_trials is None:
            check(self.name == "hyperband", "tuner.max_trials", self.max_trials,
                  "an integer >= 1 (null is allowed only with tuner=hyperband)")
        else:
            check(self.max_trials >= 1, "tuner.max_trials", self.max_trials, "an integer >= 1")
        check(self.max_epochs >= 1, "tuner.max_epochs", self.max_epochs, "an integer >= 1")
        check(self.executions_per_trial >= 1, "tuner.executions_per_trial",
              self.executions_per_trial, "an integer >= 1")
        check(self.max_consecutive_failed_trials >= 1, "tuner.max_consecutive_failed_trials",
              self.max_consecutive_failed_trials, "an integer >= 1")
        check(self.max_retries_per_trial >= 0, "tuner.max_retries_per_trial",
              self.max_retries_per_trial, "an integer >= 0")
        check(bool(self.directory), "tuner.directory", self.directory, "a folder path")
        if self.project is not None:
            check(bool(_LABEL.match(self.project)), "tuner.project", self.project,
                  "null or a name of letters, digits, '_', '-', '.'")
            check_name("tuner.project", self.project,
                       "Set tuner.project=<a plain name>, e.g. tuner.project=my_sweep.")
        check(self.factor >= 2, "tuner.factor", self.factor, "an integer >= 2")
        check(self.hyperband_iterations >= 1, "tuner.hyperband_iterations",
              self.hyperband_iterations, "an integer >= 1")
        if self.num_initial_points is not None:
            check(self.num_initial_points >= 1, "tuner.num_initial_points",
                  self.num_initial_points, "null or an integer >= 1")
        check(self.alpha > 0, "tuner.alpha", self.alpha, "a number > 0")
        check(self.beta >= 0, "tuner.beta", self.beta, "a number >= 0")


@dataclass
class HyperParamSpec:
    """One hyperparameter of a search space, mapped onto one key of the run config.

    Every field is optional so that an entry of ``search_space.families`` can change
    a single field of the base entry; a complete entry is checked by
    :func:`check_spec`.

    Args:
        key: the run-config key it sets, e.g. ``model.units`` or ``optimizer.lr``.
        type: ``int``, ``float`` (a range), ``choice`` (one of ``values``), ``bool``,
            or ``fixed`` (always ``value``; set in every trial, not searched).
        low, high: the range, both ends included; ``low < high``.
        step: a grid step (with log sampling: the ratio between values, > 1).
        sampling: ``linear`` (default), ``log`` (log-uniform) or ``reverse_log``.
        values: the choices of a ``choice``.
        value: the value of a ``fixed`` entry (null sets the key to null).
        transform: ``one_minus`` samples ``u`` in the range and sets ``1 - u`` (for a
            momentum drawn as 1 - log-uniform).
    """

    key: Optional[str] = None
    type: Optional[str] = None
    low: Optional[float] = None
    high: Optional[float] = None
    step: Optional[float] = None
    sampling: Optional[str] = None
    values: Optional[List[Any]] = None
    value: Optional[Any] = None
    transform: Optional[str] = None


def frozen_key(key: str) -> bool:
    return key in FROZEN_KEYS or key.startswith(FROZEN_PREFIXES)


def check_spec(where: str, spec: HyperParamSpec) -> None:
    """Check one complete search-space entry; ``where`` names it in the message."""
    if not spec.key:
        raise ConfigError(f"{where}.key is missing: each entry names the run-config key it "
                          "sets, e.g. key: model.units.")
    if frozen_key(spec.key):
        raise ConfigError(
            f"{where}.key={spec.key!r} cannot be tuned: seed, train.epochs (the budget is "
            "tuner.max_epochs), task.name, cell.name and the tracking, hardware, backend, "
            "diagnostics keys are fixed for a whole sweep. Tune model.*, optimizer.*, "
            "train.batch_size, cell options or task options.")
    check(spec.type in HP_TYPES, f"{where}.type", spec.type, "one of " + ", ".join(HP_TYPES))
    if spec.type in ("int", "float"):
        for end in ("low", "high"):
            value = getattr(spec, end)
            check(value is not None and math.isfinite(value), f"{where}.{end}", value,
                  "a finite number")
        if spec.low > spec.high:
            raise ConfigError(
                f"{where}: the range is inverted (low={spec.low:g} > high={spec.high:g}); "
                "swap them so that low < high.")
        if spec.low == spec.high:
            raise ConfigError(
                f"{where}: the range is empty (low = high = {spec.low:g}); widen it, or use "
                f"type: fixed with value: {spec.low:g}.")
        sampling = spec.sampling or "linear"
        check_choice(f"{where}.sampling", sampling, SAMPLINGS)
        if sampling != "linear":
            check(spec.low > 0, f"{where}.low", spec.low,
                  f"> 0 with sampling: {sampling} (a log scale has no zero)")
        if spec.step is not None:
            check(spec.step > (1 if sampling != "linear" else 0), f"{where}.step", spec.step,
                  "null or > 0 (> 1 with log sampling, where it is a ratio)")
        if spec.type == "int":
            for end in ("low", "high", "step"):
                value = getattr(spec, end)
                check(value is None or float(value).is_integer(), f"{where}.{end}", value,
                      "a whole number for type: int")
            check(spec.transform in (None, "none"), f"{where}.transform", spec.transform,
                  "null for type: int")
        else:
            check(spec.transform in (None,) + TRANSFORMS, f"{where}.transform",
                  spec.transform, "null or one of " + ", ".join(TRANSFORMS))
    elif spec.type == "choice":
        values = list(spec.values or [])
        if not values:
            raise ConfigError(f"{where}.values is empty: a choice needs at least one value, "
                              "e.g. values: [32, 64, 128].")
        kinds = {type(v) for v in values}
        check(len(kinds) == 1 and kinds <= {int, float, str, bool}, f"{where}.values",
              values, "numbers, strings or booleans, all of one type")
        check(len(set(values)) == len(values), f"{where}.values", values,
              "a list without repeats")
    for name in ("low", "high", "step", "sampling", "transform"):
        if spec.type not in ("int", "float") and getattr(spec, name) not in (None, "none"):
            raise ConfigError(f"{where}.{name} is set but type is {spec.type}: only int and "
                              "float entries have a range.")
    if spec.type != "choice" and spec.values is not None:
        raise ConfigError(f"{where}.values is set but type is {spec.type}: only choice "
                          "entries have values.")
    if spec.type != "fixed" and spec.value is not None:
        raise ConfigError(f"{where}.value is set but type is {spec.type}: only fixed "
                          "entries have a value.")


def merge_spec(base: HyperParamSpec | None, override: HyperParamSpec) -> HyperParamSpec:
    """``base`` with the fields that ``override`` sets (not null)."""
    if base is None:
        return HyperParamSpec(**{f.name: getattr(override, f.name) for f in fields(override)})
    merged = {f.name: getattr(base, f.name) for f in fields(base)}
    if override.type is not None and override.type != base.type:
        merged = {f.name: None for f in fields(base)}  # a new type: start from a clean entry
        merged["key"] = base.key
    for f in fields(override):
        value = getattr(override, f.name)
        if value is not None:
            merged[f.name] = value
    return HyperParamSpec(**merged)


@dataclass
class SearchSpaceConfig:
    """The hyperparameters of a sweep, as config. See ``conf/search_space/``.

    Args:
        name: the space's name (recorded on the sweep run).
        params: label -> :class:`HyperParamSpec`. The label names the hyperparameter
            in keras-tuner and MLflow (``hp/<label>``).
        families: cell name or cell family -> entries that change or add to
            ``params`` for those cells. An entry naming the cell wins over one naming
            its family.
    """

    name: str = "default"
    params: Dict[str, HyperParamSpec] = field(default_factory=dict)
    families: Dict[str, Dict[str, HyperParamSpec]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # OmegaConf leaves the entries of a dict of dicts as plain dicts
        self.params = {k: _as_spec(v) for k, v in self.params.items()}
        self.families = {fam: {k: _as_spec(v) for k, v in entries.items()}
                         for fam, entries in self.families.items()}
        for label, spec in self.params.items():
            check(bool(_LABEL.match(label)), f"search_space.params.{label}", label,
                  "a label of letters, digits, '_', '-', '.'")
            check_spec(f"search_space.params.{label}", spec)
        for family, entries in self.families.items():
            for label, spec in entries.items():
                check(bool(_LABEL.match(label)), f"search_space.families.{family}.{label}",
                      label, "a label of letters, digits, '_', '-', '.'")
                check_spec(f"search_space.families.{family}.{label}",
                           merge_spec(self.params.get(label), spec))
        resolved = self.resolve(())
        check_unique_keys(f"search_space={self.name}", resolved)

    def resolve(self, names: tuple[str, ...]) -> dict[str, HyperParamSpec]:
        """The entries for a cell known by ``names`` (most general first, e.g.
        ``("gated", "lstm")``): ``params`` with each matching family entry applied."""
        out = {label: merge_spec(None, spec) for label, spec in self.params.items()}
        for name in names:
            for label, spec in self.families.get(name, {}).items():
                out[label] = merge_spec(out.get(label), spec)
        return out


def _as_spec(value: Any) -> HyperParamSpec:
    if isinstance(value, HyperParamSpec):
        return value
    if isinstance(value, dict):
        unknown = set(value) - {f.name for f in fields(HyperParamSpec)}
        if unknown:
            raise ConfigError(f"search-space entry {value} has unknown fields {sorted(unknown)}; "
                              "allowed: " + ", ".join(f.name for f in fields(HyperParamSpec)))
        return HyperParamSpec(**value)
    raise ConfigError(f"search-space entry {value!r} must be a mapping such as "
                      "{key: model.units, type: int, low: 16, high: 256}.")


def check_unique_keys(where: str, specs: dict[str, HyperParamSpec]) -> None:
    seen: dict[str, str] = {}
    for label, spec in specs.items():
        if spec.key in seen:
            raise ConfigError(f"{where}: entries {seen[spec.key]!r} and {label!r} both set "
                              f"{spec.key}; keep one.")
        seen[spec.key] = label


def _tune_fields() -> list:
    """RunConfig's fields, then ``tuner`` and ``search_space``, all MISSING: merged after
    the run config and the tuner/search_space groups (which bring their own schema,
    ``/schema/tuner`` and ``/schema/search_space``), the schema adds the root's type and
    checks without resetting any value."""
    hints = get_type_hints(RunConfig)  # real types: rnnbench.config uses string annotations
    out = []
    for f in fields(RunConfig):
        out.append((f.name, hints[f.name], field(default=MISSING)))
    # Any: a user's own tuner or space file may leave out its schema line; _tune_post_init
    # builds (and checks) the dataclass then
    out.append(("tuner", Any, field(default=MISSING)))
    out.append(("search_space", Any, field(default=MISSING)))
    return out


def _build(cls: type, node: Any, key: str) -> Any:
    """``cls`` from a plain mapping (a config file without its schema line)."""
    if isinstance(node, cls):
        return node
    if not isinstance(node, dict):
        raise ConfigError(f"{key} must be a mapping of {cls.__name__} keys, not {node!r}.")
    allowed = {f.name for f in fields(cls)}
    unknown = sorted(set(node) - allowed)
    if unknown:
        raise ConfigError(f"{key}: unknown keys {unknown}; allowed: {', '.join(sorted(allowed))}.")
    values = dict(node)
    if cls is TunerConfig and isinstance(values.get("distributed"), dict):
        values["distributed"] = _build(DistributedConfig, values["distributed"],
                                       f"{key}.distributed")
    return cls(**values)


def _tune_post_init(self: Any) -> None:
    RunConfig.__post_init__(self)
    self.tuner = _build(TunerConfig, self.tuner, "tuner")
    self.search_space = _build(SearchSpaceConfig, self.search_space, "search_space")
    space = self.search_space
    if not any(spec.type != "fixed" for spec in space.params.values()):
        raise ConfigError(f"search_space={space.name}: search_space.params has nothing to "
                          "search (no int, float, choice or bool entry).")
    for label, spec in self.search_space.resolve(()).items():
        if not config_has_key(self, spec.key):
            raise ConfigError(
                f"search_space.params.{label}.key={spec.key!r} is not a key of the run config "
                "(see `rnnbench --cfg job` for every key).")


def config_has_key(cfg: Any, key: str) -> bool:
    """Whether a dotted ``key`` names a field of the (dataclass) config ``cfg``."""
    node = cfg
    for part in key.split("."):
        if isinstance(node, dict):
            if part not in node:
                return False
            node = node[part]
        elif hasattr(node, "__dataclass_fields__"):
            if part not in node.__dataclass_fields__:
                return False
            node = getattr(node, part)
        else:
            return False
    return True


TuneConfig = make_dataclass(
    "TuneConfig", _tune_fields(), bases=(RunConfig,),
    namespace={"__post_init__": _tune_post_init,
               "__doc__": "The whole config of a sweep (``rnnbench-tune``): a run config "
                          "plus ``tuner`` and ``search_space``."},
)
TuneConfig.__module__ = __name__
