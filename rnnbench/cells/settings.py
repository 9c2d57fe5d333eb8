"""Checks of the `cell` config node, without importing Keras.

`validate_cell_config` turns the config node (an OmegaConf `DictConfig`, a dataclass, a
mapping, or any object with the fields as attributes) into a `CellSettings`, or raises
`ConfigError` naming the problem and what is allowed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from numbers import Real
from typing import Any, Optional

from rnnbench.cells.families.gate_options import CHRONO_INIT, CHRONO_INIT_MIN
from rnnbench.cells.registry import (
    CELLS,
    FAMILY_SPECS,
    OPTIONS,
    builtin_cell_names,
    cell_names,
    kernel_families,
)
from rnnbench.errors import ConfigError

__all__ = ["CHRONO_INIT_MIN", "GRADIENTS", "IMPLS", "INITIALIZERS", "CellSettings",
           "bptt_on_builtin_message", "check_chrono_init", "check_gradient",
           "check_options", "validate_cell_config", "with_option_fields"]

IMPLS = ("auto", "builtin", "custom")

#: Values of `cell.gradient`: how the gradient of the recurrent loop is computed.
#: `bptt` is rnnbench's hand-written backward pass through time (`rnnbench.cells.bptt`),
#: for the families that have one; `autodiff` the backend's automatic differentiation of
#: the loop; `auto` is `bptt` for rnnbench's own layers of those families and `autodiff`
#: otherwise (Keras's built-in layers, families without a hand-written gradient).
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


def check_chrono_init(value: Any) -> int:
    """Checks a `cell.chrono_init` that is set (not None) and returns it.

    The one rule for this option (`rnnbench.cells.families.gate_options.CHRONO_INIT`),
    as the config schema and `validate_cell_config` apply it.

    Raises:
        ConfigError: `value` is not an integer >= `CHRONO_INIT_MIN`.
    """
    return CHRONO_INIT.parse(value, "lstm")


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
            with `impl="custom"` and a family with a hand-written gradient.
        options: every option the cell accepts, as set or at its default (the cell's
            constructor arguments; `forget_bias` and `chrono_init` are also above).
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
    options: Mapping[str, Any] = field(default_factory=dict, hash=False)


def _field(cfg: Any, key: str, default: Any) -> Any:
    if isinstance(cfg, Mapping):
        value = cfg.get(key, default)
    else:
        value = getattr(cfg, key, default)
    return default if value is None and default is not None else value


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def check_gradient(name: str, impl: str, gradient: str) -> None:
    """`cell.gradient` against the cell (`impl` resolved or `auto`).

    Raises:
        ConfigError: not one of `GRADIENTS`; `bptt` on a Keras built-in layer or for a
            family without a hand-written gradient.
    """
    if gradient not in GRADIENTS:
        raise ConfigError(
            f"cell.gradient={gradient!r} is not allowed; allowed: {_allowed(GRADIENTS)}"
        )
    spec = CELLS.get(name)
    if gradient != "bptt" or spec is None:
        return
    if impl == "builtin" or (impl == "auto" and spec.has_builtin):
        raise ConfigError(bptt_on_builtin_message(name))
    if not FAMILY_SPECS[spec.family].kernel:
        raise ConfigError(
            f"cell.gradient=bptt needs a hand-written gradient, which cell {name!r} "
            f"(family {spec.family}) does not have; families with one: "
            f"{_allowed(kernel_families())}; use cell.gradient=auto or autodiff"
        )


def check_options(name: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """The options of the cell `name`: `values` (option name -> value or None) checked.

    Returns:
        Every option the cell accepts, at its checked value or its default.

    Raises:
        ConfigError: an option set that the cell does not accept (naming those it does),
            a value its option refuses, or a rule between options broken.
    """
    spec = CELLS[name]
    family = FAMILY_SPECS[spec.family]
    for key, value in values.items():
        if value is not None and key not in spec.options:
            takers = [n for n, s in CELLS.items() if key in s.options]
            raise ConfigError(
                f"cell {name!r} has no option {key!r} (its options: "
                f"{_allowed(sorted(spec.options))}); cells that accept {key}: "
                f"{_allowed(takers)}"
            )
    resolved = {}
    for key in sorted(spec.options):
        option = family.option_map[key]
        value = values.get(key)
        resolved[key] = option.default if value is None else option.parse(value, family.name)
    if family.check is not None:
        problem = family.check(resolved)
        if problem:
            raise ConfigError(f"cell {name!r}: {problem}")
    return resolved


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
        cell_cfg: the `cell` config node, with fields `name`, `impl`, the family
            options (`forget_bias`, `chrono_init`, ...: `registry.OPTIONS`), `dropout`,
            `recurrent_dropout`, `kernel_initializer`,
            `recurrent_initializer`, `bias_initializer`, `gradient` (missing ones take their
            defaults; `bidirectional` is the model builder's and is not read here).

    Returns:
        The checked `CellSettings`, with `impl="auto"` resolved.

    Raises:
        ConfigError: unknown cell, option the cell does not have (or a value its
            family refuses), `impl=builtin` for a cell Keras has no layer for, dropout
            out of [0, 1), unknown initialiser, `gradient=bptt` on a Keras built-in layer
            or for a family without a hand-written gradient.
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

    options = check_options(name, {key: _field(cell_cfg, key, None) for key in OPTIONS})
    if impl == "builtin":
        ignored = sorted(k for k, v in options.items()
                         if v is not None and k not in ("forget_bias", "chrono_init"))
        if ignored:
            raise ConfigError(
                f"cell.{ignored[0]} is not an option of Keras's built-in layer of cell "
                f"{name!r}; use cell.impl=custom"
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
    check_gradient(name, impl, gradient)

    return CellSettings(
        name=name,
        impl=impl,
        gradient=gradient,
        forget_bias=options.get("forget_bias"),
        chrono_init=options.get("chrono_init"),
        options=options,
        **rates,
        **inits,
    )


def with_option_fields(cls: type) -> type:
    """The dataclass `cls` (the `cell` node's schema) with one typed key per family
    option (`Optional[kind]`, null by default), so that Hydra types `cell.r_min=0.5`
    and takes it without `+`; a key no family declares stays an unknown key."""
    fields = [(name, Optional[option.kind], dataclasses.field(default=None))
              for name, option in OPTIONS.items()
              if name not in {f.name for f in dataclasses.fields(cls)}]
    return dataclasses.make_dataclass(
        cls.__name__, fields, bases=(cls,),
        namespace={"__doc__": cls.__doc__, "__module__": cls.__module__,
                   "__qualname__": cls.__qualname__},
    )
