"""Checks of the `cell` config node, without importing Keras.

`validate_cell_config` turns the config node (an OmegaConf `DictConfig`, a dataclass, a
mapping, or any object with the fields as attributes) into a `CellSettings`, or raises
`ConfigError` naming the problem and what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Real
from typing import Any

from rnnbench.cells.registry import CELL_OPTIONS, CELLS, builtin_cell_names, cell_names
from rnnbench.errors import ConfigError

IMPLS = ("auto", "builtin", "custom")

#: Values of `cell.gradient`: how the gradient of the recurrent loop is computed.
#: `bptt` is rnnbench's hand-written backward pass through time (`rnnbench.cells.bptt`),
#: `autodiff` the backend's automatic differentiation of the loop; `auto` is `bptt`
#: for rnnbench's own layers and `autodiff` for Keras's built-in ones.
GRADIENTS = ("auto", "autodiff", "bptt")

#: Initialiser names accepted for `kernel_initializer`, `recurrent_initializer` and
#: `bias_initializer` (Keras names, all of which need no argument).
INITIALIZERS = (
    "glorot_uniform",
    "glorot_normal",
    "he_uniform",
    "he_normal",
    "lecun_uniform",
    "lecun_normal",
    "orthogonal",
    "identity",
    "zeros",
    "ones",
    "random_normal",
    "random_uniform",
    "truncated_normal",
    "variance_scaling",
)


#: The smallest `cell.chrono_init` (T_max). The chrono initialisation draws the forget
#: bias as `log(u)` with `u ~ Uniform(1, T_max - 1)` (Tallec & Ollivier 2018); at
#: T_max = 2 that range is the single point 1, so every forget bias would be 0 and
#: nothing would be drawn. 3 is the smallest T_max for which the option does what it says.
CHRONO_INIT_MIN = 3


def check_chrono_init(value: Any) -> int:
    """Checks a `cell.chrono_init` that is set (not None) and returns it.

    The one rule for this option: the config schema (`rnnbench.config.CellConfig`)
    and `validate_cell_config` both call it.

    Raises:
        ConfigError: `value` is not an integer >= `CHRONO_INIT_MIN`.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < CHRONO_INIT_MIN:
        raise ConfigError(
            f"cell.chrono_init={value!r} is not allowed: cell.chrono_init must be null or "
            f"an integer T_max >= {CHRONO_INIT_MIN} (the longest dependency, in steps)."
        )
    return value


@dataclass(frozen=True)
class CellSettings:
    """The checked cell config, with `impl` resolved to `"builtin"` or `"custom"`.

    Args:
        name: cell name (a key of `CELLS`).
        impl: `"builtin"` (the Keras layer) or `"custom"` (rnnbench's own layer).
        forget_bias: forget-gate bias, or None for the cell's default.
        chrono_init: `T_max` of the chrono initialisation, or None.
        dropout: input dropout rate, in [0, 1).
        recurrent_dropout: recurrent dropout rate, in [0, 1).
        kernel_initializer: initialiser name of the input kernels.
        recurrent_initializer: initialiser name of the recurrent kernels.
        bias_initializer: initialiser name of the biases.
        gradient: `"auto"`, `"autodiff"` or `"bptt"` (see `GRADIENTS`); `"bptt"` only
            with `impl="custom"`.
    """

    name: str
    impl: str
    forget_bias: float | None = None
    chrono_init: int | None = None
    dropout: float = 0.0
    recurrent_dropout: float = 0.0
    kernel_initializer: str = "glorot_uniform"
    recurrent_initializer: str = "orthogonal"
    bias_initializer: str = "zeros"
    gradient: str = "auto"


def _field(cfg: Any, key: str, default: Any) -> Any:
    if isinstance(cfg, Mapping):
        value = cfg.get(key, default)
    else:
        value = getattr(cfg, key, default)
    return default if value is None and default is not None else value


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _allowed(names) -> str:
    return ", ".join(names) if names else "none"


def bptt_on_builtin_message(name: str) -> str:
    """The error for `cell.gradient=bptt` on a Keras built-in layer."""
    return (
        f"cell.gradient=bptt needs rnnbench's own layer, but cell {name!r} runs as the "
        "Keras built-in layer (cell.impl resolved to builtin), whose gradient is Keras's "
        "autodiff; options for it: cell.gradient=auto or autodiff, or keep "
        "cell.gradient=bptt with cell.impl=custom"
    )


def validate_cell_config(cell_cfg: Any) -> CellSettings:
    """Checks the `cell` config node and returns it as `CellSettings`.

    Args:
        cell_cfg: the `cell` config node, with fields `name`, `impl`, `forget_bias`,
            `chrono_init`, `dropout`, `recurrent_dropout`, `kernel_initializer`,
            `recurrent_initializer`, `bias_initializer`, `gradient` (missing ones take their
            defaults; `bidirectional` is the model builder's and is not read here).

    Returns:
        The checked `CellSettings`, with `impl="auto"` resolved.

    Raises:
        ConfigError: unknown cell, option the cell does not have, `impl=builtin` for a
            cell Keras has no layer for, `chrono_init` below `CHRONO_INIT_MIN`, dropout
            out of [0, 1), unknown initialiser, `gradient=bptt` on a Keras built-in layer.
    """
    name = _field(cell_cfg, "name", None)
    if not isinstance(name, str) or name not in CELLS:
        raise ConfigError(f"unknown cell {name!r}; allowed cells: {_allowed(cell_names())}")
    spec = CELLS[name]

    impl = _field(cell_cfg, "impl", "auto")
    if impl not in IMPLS:
        raise ConfigError(f"cell.impl={impl!r} is not allowed; allowed: {_allowed(IMPLS)}")
    if impl == "builtin" and not spec.has_builtin:
        raise ConfigError(
            f"cell {name!r} has no Keras built-in layer, so cell.impl=builtin is not "
            f"possible; cells with one: {_allowed(builtin_cell_names())} "
            "(use cell.impl=custom or auto)"
        )
    if impl == "auto":
        impl = "builtin" if spec.has_builtin else "custom"

    options = {key: _field(cell_cfg, key, None) for key in CELL_OPTIONS}
    for key, value in options.items():
        if value is not None and key not in spec.options:
            takers = [n for n, s in CELLS.items() if key in s.options]
            raise ConfigError(
                f"cell {name!r} has no option {key!r} (its options: "
                f"{_allowed(sorted(spec.options))}); cells that accept {key}: "
                f"{_allowed(takers)}"
            )
    forget_bias, chrono_init = options["forget_bias"], options["chrono_init"]
    if forget_bias is not None:
        if not _is_number(forget_bias) or not math.isfinite(forget_bias):
            raise ConfigError(f"cell.forget_bias={forget_bias!r} must be a finite number")
        forget_bias = float(forget_bias)
    if chrono_init is not None:
        check_chrono_init(chrono_init)
    if forget_bias is not None and chrono_init is not None:
        raise ConfigError(
            "cell.forget_bias and cell.chrono_init both set the forget-gate bias; "
            "set only one of them"
        )

    rates = {}
    for key in ("dropout", "recurrent_dropout"):
        value = _field(cell_cfg, key, 0.0)
        if not _is_number(value) or not 0.0 <= value < 1.0:
            raise ConfigError(f"cell.{key}={value!r} must be a number in [0, 1)")
        rates[key] = float(value)

    inits = {}
    for key, default in (
        ("kernel_initializer", "glorot_uniform"),
        ("recurrent_initializer", "orthogonal"),
        ("bias_initializer", "zeros"),
    ):
        value = _field(cell_cfg, key, default)
        if value not in INITIALIZERS:
            raise ConfigError(
                f"cell.{key}={value!r} is not a known initialiser; allowed: "
                f"{_allowed(INITIALIZERS)}"
            )
        inits[key] = value

    gradient = _field(cell_cfg, "gradient", "auto")
    if gradient not in GRADIENTS:
        raise ConfigError(
            f"cell.gradient={gradient!r} is not allowed; allowed: {_allowed(GRADIENTS)}"
        )
    if gradient == "bptt" and impl == "builtin":
        raise ConfigError(bptt_on_builtin_message(name))

    return CellSettings(
        name=name,
        impl=impl,
        gradient=gradient,
        forget_bias=forget_bias,
        chrono_init=chrono_init,
        **rates,
        **inits,
    )
