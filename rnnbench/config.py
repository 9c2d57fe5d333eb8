"""The config schema: dataclasses that Hydra's ConfigStore holds (registered by
:func:`rnnbench.cli.schema.register_configs`).

Hydra checks types and rejects unknown keys while it composes the config; the
``__post_init__`` checks below check values when the composed config is turned into
objects by :func:`to_object`. Every check raises :class:`~rnnbench.errors.ConfigError`
with the key, the value and what is allowed.

This module must stay light: it is imported before the Keras backend is chosen.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rnnbench.errors import ConfigError

# the cell node's options come from the cell families (Keras-free, like this module)
from rnnbench.cells.settings import with_option_fields

OPTIMIZERS = ("adam", "adamw", "nadam", "rmsprop", "sgd")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
XLA_MODES = ("auto", "on", "off")
DEVICES = ("cpu", "gpu")
FALLBACKS = ("fail", "cpu")
STRATEGIES = ("none", "mirrored")
BACKENDS = ("tensorflow", "jax", "torch")
SPLITS = ("val", "test", "train")
DIRECTIONS = ("minimize", "maximize")
EXPERIMENT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_ .\-+=,:()]{0,199}$")
MAX_UNITS = 16384
DEFAULT_UNITS = 64  # model.units when neither it nor model.params is set
PARAMS_OF = ("all", "recurrent")  # which weights model.params counts


def check(ok: bool, key: str, value: Any, allowed: str) -> None:
    """Raise a ConfigError naming ``key`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key}={value!r} is not allowed: {key} must be {allowed}.")


def check_choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    check(value in choices, key, value, "one of " + ", ".join(choices))


def check_fraction(key: str, value: float) -> None:
    check(0.0 <= value < 1.0, key, value, "in [0, 1)")


@dataclass
class ModelConfig:
    """The network around the cell: ``units`` per layer, stacked ``layers``, and
    ``dropout`` between recurrent layers and before the head.

    ``params`` (null: off) sizes the model by its number of weights instead of its
    width: the width is solved per cell and task (:mod:`rnnbench.sizing`) so that the
    weights ``params_of`` names (``all``: the whole model; ``recurrent``: the recurrent
    layers) come within 2% of ``params``. ``units`` must then be null; without
    ``params``, a null ``units`` is ``DEFAULT_UNITS``.

    ``input_projection`` (null: none) puts one linear layer of that many units between
    the task's input (after its embedding, if any) and the first recurrent layer, the
    same for every cell: the encoder the recent recurrent models' papers put before their
    recurrent blocks. Without it a cell whose weights grow as input × width (IndRNN,
    minGRU, minLSTM) on a 2-feature input reaches a weight budget only at thousands of
    units.
    """

    units: Optional[int] = None
    layers: int = 1
    dropout: float = 0.0
    params: Optional[int] = None
    params_of: str = "all"
    input_projection: Optional[int] = None

    def __post_init__(self) -> None:
        check_choice("model.params_of", self.params_of, PARAMS_OF)
        if self.params is not None:
            if self.units is not None:
                raise ConfigError(
                    f"model.params={self.params} and model.units={self.units} are both set: "
                    "model.params solves the width of each cell, so model.units must be null. "
                    "Keep one of them: add model.units=null to size by model.params (a debug "
                    "or experiment config may set model.units), or drop model.params.")
            check(self.params >= 1, "model.params", self.params,
                  "null or a number of weights >= 1")
        else:
            if self.units is None:
                self.units = DEFAULT_UNITS
            check(1 <= self.units <= MAX_UNITS, "model.units", self.units,
                  f"an integer >= 1 and <= {MAX_UNITS} (a larger layer does not fit in memory)")
        check(self.layers >= 1, "model.layers", self.layers, "an integer >= 1")
        check_fraction("model.dropout", self.dropout)
        if self.input_projection is not None:
            check(1 <= self.input_projection <= MAX_UNITS, "model.input_projection",
                  self.input_projection, f"null or an integer >= 1 and <= {MAX_UNITS}")


@with_option_fields
@dataclass
class CellConfig:
    """Which recurrent cell, which implementation, and its options.

    ``impl``: ``auto`` uses Keras's built-in layer where one exists (rnn, lstm, gru,
    gru_v1) and the project's own otherwise; ``builtin`` and ``custom`` force one.
    Every option a cell family declares (``rnnbench.cells.families``) is a key here,
    null by default (the family's default): ``forget_bias`` (None: the cell's default)
    and ``chrono_init`` (T_max) apply to cells with a forget gate.
    ``dropout``/``recurrent_dropout`` act on the cell's input and recurrent connections.
    ``bidirectional`` is allowed only on non-causal tasks.
    ``gradient``: ``bptt`` is the project's hand-written backward pass through time
    (own layers only), ``autodiff`` the backend's; ``auto`` is ``bptt`` for the
    project's own layers and ``autodiff`` for Keras's.
    """

    name: str = MISSING
    impl: str = "auto"
    dropout: float = 0.0
    recurrent_dropout: float = 0.0
    bidirectional: bool = False
    kernel_initializer: str = "glorot_uniform"
    recurrent_initializer: str = "orthogonal"
    bias_initializer: str = "zeros"
    gradient: str = "auto"

    def __post_init__(self) -> None:
        # the cell rules live in rnnbench.cells.settings (Keras-free, like this module)
        from rnnbench.cells import settings

        check_choice("cell.impl", self.impl, settings.IMPLS)
        check_choice("cell.gradient", self.gradient, settings.GRADIENTS)
        if self.name in settings.CELLS:  # refused here, before the backend is loaded
            settings.check_gradient(self.name, self.impl, self.gradient)
            settings.check_options(self.name, {k: getattr(self, k, None) for k in settings.OPTIONS})
        check_fraction("cell.dropout", self.dropout)
        check_fraction("cell.recurrent_dropout", self.recurrent_dropout)


@dataclass
class TrainConfig:
    """The fit loop: ``epochs`` at most, early stopping after ``patience`` epochs
    without improvement of the validation loss (best weights restored)."""

    epochs: int = 30
    batch_size: int = 64
    patience: int = 5
    steps_per_epoch: Optional[int] = None
    verbose: int = 2

    def __post_init__(self) -> None:
        check(self.epochs >= 1, "train.epochs", self.epochs, "an integer >= 1")
        check(self.batch_size >= 1, "train.batch_size", self.batch_size, "an integer >= 1")
        check(self.patience >= 0, "train.patience", self.patience, "an integer >= 0")
        if self.steps_per_epoch is not None:
            check(self.steps_per_epoch >= 1, "train.steps_per_epoch", self.steps_per_epoch,
                  "null or an integer >= 1")
        check(self.verbose in (0, 1, 2), "train.verbose", self.verbose, "0, 1 or 2")


@dataclass
class OptimizerConfig:
    """Optimizer ``name`` and learning rate ``lr``; ``clipnorm`` clips each step's
    global gradient norm (null: no clipping)."""

    name: str = "adam"
    lr: float = 1e-3
    clipnorm: Optional[float] = 1.0
    momentum: float = 0.9
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        check_choice("optimizer.name", self.name, OPTIMIZERS)
        check(math.isfinite(self.lr) and self.lr > 0, "optimizer.lr", self.lr,
              "a finite number > 0")
        if self.clipnorm is not None:
            check(math.isfinite(self.clipnorm) and self.clipnorm > 0, "optimizer.clipnorm",
                  self.clipnorm, "null or a number > 0")
        check(0.0 <= self.momentum < 1.0, "optimizer.momentum", self.momentum, "in [0, 1)")
        check(self.weight_decay >= 0, "optimizer.weight_decay", self.weight_decay, ">= 0")


@dataclass
class HardwareConfig:
    """Where and how the run computes. See ``conf/hardware/``."""

    name: str = "cpu"
    device: str = "cpu"
    num_devices: int = 1
    strategy: str = "none"
    precision: str = "float32"
    xla: str = "auto"
    deterministic: bool = False
    fallback: str = "fail"
    logical_cpus: int = 0
    scale_lr: bool = True
    # CPU threads for TensorFlow's op pools (intra- and inter-op); 0: its default (all
    # cores). Two jobs side by side on a 2-core machine run best with 1 thread each.
    threads: int = 0

    def __post_init__(self) -> None:
        check_choice("hardware.device", self.device, DEVICES)
        check_choice("hardware.strategy", self.strategy, STRATEGIES)
        check_choice("hardware.precision", self.precision, PRECISIONS)
        check_choice("hardware.xla", self.xla, XLA_MODES)
        check_choice("hardware.fallback", self.fallback, FALLBACKS)
        check(self.num_devices >= 1, "hardware.num_devices", self.num_devices, "an integer >= 1")
        check(self.logical_cpus >= 0, "hardware.logical_cpus", self.logical_cpus,
              "an integer >= 0 (0: do not split the CPU)")
        check(self.threads >= 0, "hardware.threads", self.threads,
              "an integer >= 0 (0: TensorFlow's default, every core)")


@dataclass
class BackendConfig:
    """The Keras backend: ``tensorflow`` (default), ``jax`` or ``torch``."""

    name: str = "tensorflow"

    def __post_init__(self) -> None:
        check_choice("backend.name", self.name, BACKENDS)


@dataclass
class TrackingConfig:
    """Where the MLflow record goes. ``uri`` defaults to MLflow's SQLite store in the
    working directory; ``experiment`` (null) defaults to the task's name."""

    name: str = "sqlite"
    uri: str = "sqlite:///mlflow.db"
    experiment: Optional[str] = None
    log_model: bool = True
    timeout_s: float = 15.0
    skip_finished: bool = True
    retry_failed: bool = False
    tensorboard: bool = False

    def __post_init__(self) -> None:
        check(bool(self.uri), "tracking.uri", self.uri, "a tracking URI")
        check(self.timeout_s > 0, "tracking.timeout_s", self.timeout_s, "a number > 0")
        if self.experiment is not None:
            # the name goes into folder names (a sweep's search state) and MLflow filters
            check(bool(EXPERIMENT_NAME.match(self.experiment)) and ".." not in self.experiment,
                  "tracking.experiment", self.experiment,
                  "null or a name of letters, digits, spaces and _ . - + = , : ( ) (no "
                  "quotes, no slashes, no '..', at most 200 characters)")


@dataclass
class ObjectiveConfig:
    """The one number a run returns to a Hydra sweeper (Optuna, Nevergrad, Ax, ...):
    the exact ``metric`` of the task (null: its primary metric) on ``split`` (``val`` by
    default: sweeping on the test split leaks it), better when lower (``minimize``) or
    higher (``maximize``; null: the metric's own direction). Logged as the metric
    ``objective``."""

    metric: Optional[str] = None
    split: str = "val"
    direction: Optional[str] = None

    def __post_init__(self) -> None:
        check_choice("objective.split", self.split, SPLITS)
        if self.direction is not None:
            check_choice("objective.direction", self.direction, DIRECTIONS)
        if self.metric is not None:
            check(bool(self.metric.strip()), "objective.metric", self.metric,
                  "null or a metric name such as mse or accuracy")


@dataclass
class DiagnosticsConfig:
    """Vanishing-gradient diagnostics: see `docs/diagnostics.md`."""

    enabled: bool = True
    every_n_epochs: int = 1
    probe_batch_size: int = 32
    horizon_fraction: float = 0.01
    gradient_norms: bool = True

    def __post_init__(self) -> None:
        check(self.every_n_epochs >= 1, "diagnostics.every_n_epochs", self.every_n_epochs,
              "an integer >= 1")
        check(self.probe_batch_size >= 1, "diagnostics.probe_batch_size",
              self.probe_batch_size, "an integer >= 1")
        check(0 < self.horizon_fraction < 1, "diagnostics.horizon_fraction",
              self.horizon_fraction, "in (0, 1)")


@dataclass
class RunConfig:
    """The whole config of one training run (``rnnbench``)."""

    seed: int = 0
    task: Any = MISSING
    cell: CellConfig = field(default_factory=CellConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)

    def __post_init__(self) -> None:
        # NumPy's seeder takes 0 .. 2**32 - 1 and fails with a traceback past it
        check(0 <= self.seed < 2**32, "seed", self.seed, "an integer from 0 to 4294967295")


def unknown_keys(node: Any, path: str = "") -> list[tuple[str, list[str]]]:
    """Keys of ``node`` that its schema does not have, with the keys it does have.
    Hydra's ``+key=value`` adds a key even to a structured config, and the dataclasses
    would silently drop it."""
    import dataclasses

    out: list[tuple[str, list[str]]] = []
    if not isinstance(node, DictConfig):
        return out
    kind = OmegaConf.get_type(node)
    known = ({f.name for f in dataclasses.fields(kind)}
             if isinstance(kind, type) and dataclasses.is_dataclass(kind) else None)
    for key in node.keys():
        name = f"{path}.{key}" if path else str(key)
        if known is not None and key not in known:
            out.append((name, sorted(known)))
            continue
        out += unknown_keys(node._get_node(key), name)
    return out


def to_object(cfg: DictConfig) -> Any:
    """Turn a composed config into dataclass objects, running every value check."""
    import difflib

    for name, known in unknown_keys(cfg):
        parent, _, leaf = name.rpartition(".")
        near = difflib.get_close_matches(leaf, known, n=1)
        hint = f" Did you mean {parent + '.' if parent else ''}{near[0]}?" if near else ""
        raise ConfigError(
            f"{name} is not a config key ({parent or 'the config'} has: {', '.join(known)})."
            f"{hint} A +key override can only set a key the schema has; nothing was run.")
    try:
        return OmegaConf.to_object(cfg)
    except ConfigError:
        raise
    except OmegaConfBaseException as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, ConfigError):
            raise cause from None
        raise ConfigError(f"invalid config: {exc}") from None


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten a (Dict)Config to ``{"model.units": 64, ...}`` for MLflow params."""
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.structured(cfg)
    container = OmegaConf.to_container(cfg, resolve=True)
    out: dict[str, Any] = {}

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{path}.{key}" if path else str(key))
        else:
            out[path] = node

    walk(container, prefix)
    return out
