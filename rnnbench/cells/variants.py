"""The heavy half of the cell families: each family's cell class, loaded by name.

`family_cell(family)` imports the family's module (`rnnbench.cells.families.<family>`,
or `Family.module`), checks it against the protocol of `rnnbench.cells.families` and
returns its cell class; `make_cell` builds the cell of one registry entry from it
(`CellSpec.variant` and the cell's options). `load_all()` imports every family, which
registers every cell class for `.keras` loading.

The classes of the first four families keep their names (and so their registered
Keras names, `rnnbench>LSTMVariantCell` ...): `ElmanCell` (`rnn`), `GRUVariantCell`
(`gru`, `gru_v1`), `LSTMVariantCell` (`lstm`, `peephole` and the Greff et al. 2017
variants) and `JANETCell` (`janet`) are still importable from here.

Every cell's `call` takes the *projected* input of one step (`x @ kernel + bias`), not
`x`: the cells are meant to be run by `CustomRecurrent`.
"""

from __future__ import annotations

import importlib
from typing import Any

from rnnbench.cells.base import SpecCell
from rnnbench.cells.bptt_kernels import Kernel
from rnnbench.cells.families import FamilyError, STATE_TRACES
from rnnbench.cells.registry import CELLS, FAMILY_SPECS, OPTIONS

_LOADED: dict[str, type[SpecCell]] = {}

#: The classes once named here, by the family that holds them now.
_MOVED = {"ElmanCell": "rnn", "GRUVariantCell": "gru", "LSTMVariantCell": "lstm",
          "JANETCell": "janet"}


def _fail(family: str, piece: str) -> FamilyError:
    return FamilyError(f"cell family {family!r}: {piece} (see rnnbench/cells/families/__init__.py)")


def _check(name: str, module: Any) -> type[SpecCell]:
    spec = FAMILY_SPECS[name]
    cls = getattr(module, "CELL", None)
    if not (isinstance(cls, type) and issubclass(cls, SpecCell)):
        raise _fail(name, f"{module.__name__} must define CELL, a subclass of "
                          f"rnnbench.cells.base.SpecCell (found {cls!r})")
    if cls.family != name:
        raise _fail(name, f"{cls.__name__}.family is {cls.family!r}, not {name!r}")
    if cls.forward is SpecCell.forward:
        raise _fail(name, f"{cls.__name__} does not implement forward(z_x, states, w, dm)")
    if spec.kernel:
        if not (isinstance(cls.gradient_kernel, type) and issubclass(cls.gradient_kernel, Kernel)):
            raise _fail(name, f"the family declares kernel=True but {cls.__name__}.gradient_kernel is "
                              f"{cls.gradient_kernel!r}, not a rnnbench.cells.bptt_kernels.Kernel subclass")
        for method in ("back", "weight_grads"):
            if getattr(cls.gradient_kernel, method) is getattr(Kernel, method):
                raise _fail(name, f"kernel {cls.gradient_kernel.__name__} does not implement {method}")
    elif cls.gradient_kernel is not None:
        raise _fail(name, f"{cls.__name__}.gradient_kernel is set but the family declares kernel=False")
    if spec.parallel != (cls.scan is not None):
        raise _fail(name, f"the family declares parallel={spec.parallel} but "
                          f"{cls.__name__}.scan is {'missing' if cls.scan is None else 'set'}")
    return cls


def family_cell(name: str) -> type[SpecCell]:
    """The cell class of the family `name`, its module imported and checked once.

    Raises:
        FamilyError: no such family, its module does not import, or breaks the protocol.
    """
    if name in _LOADED:
        return _LOADED[name]
    if name not in FAMILY_SPECS:
        raise FamilyError(f"unknown cell family {name!r}; families: {', '.join(FAMILY_SPECS)}")
    module_name = FAMILY_SPECS[name].module_name
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise _fail(name, f"its module {module_name} does not import: {exc}") from exc
    _LOADED[name] = _check(name, module)
    return _LOADED[name]


def load_all() -> dict[str, type[SpecCell]]:
    """Every family's cell class (registers them all for `.keras` loading)."""
    return {name: family_cell(name) for name in FAMILY_SPECS}


def cell_options(cell: str, given: dict[str, Any]) -> dict[str, Any]:
    """The option arguments of the cell named `cell`: every option it accepts, with the
    value in `given` or the option's default.

    Raises:
        ValueError: an option is set (not None) that the cell does not accept.
    """
    spec = CELLS[cell]
    for key, value in given.items():
        if value is not None and key not in spec.options:
            raise ValueError(f"cell {cell!r} has no option {key!r} (its options: "
                             f"{', '.join(sorted(spec.options)) or 'none'})")
    return {key: given[key] if given.get(key) is not None else OPTIONS[key].default
            for key in sorted(spec.options)}


def make_cell(cell, units, **kwargs) -> SpecCell:
    """Builds the cell object of the spec cell named `cell`.

    Args:
        cell: a cell name of `rnnbench.cells.CELLS`.
        units: number of units.
        **kwargs: `SpecCell` arguments, plus cell options (`forget_bias`, `chrono_init`
            and every option a family declares; None values of the options the cell
            does not accept are dropped).

    Raises:
        ValueError: unknown cell, or an option set that the cell does not have.
        FamilyError: the family breaks the protocol (trace names that are not its gates).
    """
    spec = CELLS.get(cell)
    if spec is None:
        raise ValueError(f"unknown cell {cell!r}")
    given = {key: kwargs.pop(key) for key in list(kwargs) if key in OPTIONS}
    options = cell_options(cell, given)
    obj = family_cell(spec.family)(units, **spec.variant, **options, **kwargs)
    traces = tuple(obj.trace_names)
    if set(traces) != {*spec.gates, *STATE_TRACES} or len(traces) != len(set(traces)):
        raise _fail(spec.family, f"cell {cell!r} traces {traces}, but its CellSpec.gates "
                                 f"{spec.gates} plus {STATE_TRACES} were expected")
    return obj


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        return family_cell(_MOVED[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
