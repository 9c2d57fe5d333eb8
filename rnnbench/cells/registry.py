"""The registry of every cell of the spec (`docs/cells.md`), and how each one is built.

This module imports nothing heavy (no Keras): the CLI and the config checks read it
before the backend is chosen. The cells come from the cell families
(`rnnbench.cells.families`: each family's `<family>_spec.py` lists its cells and its
options, checked when this module loads). `CellSpec.builtin` names the Keras layer
(`rnnbench.cells.layers` builds and recognises built-in layers from it) and
`CellSpec.variant` the arguments of the family's cell class in rnnbench's own
implementation (`rnnbench.cells.variants.make_cell`).

Parameter counts are written from the spec's equations, independently of the layer
code, so that tests can hold one against the other. Notation of the counts: `d` is the
input size, `n` the number of units. A gate with weights costs `d*n + n*n + n` (input
kernel, recurrent kernel, bias); a diagonal peephole costs `n`.
"""

from __future__ import annotations

from rnnbench.cells.families import (
    BuiltinLayer,
    CellSpec,
    Family,
    FamilyError,
    Option,
    load_families,
)

__all__ = [
    "BuiltinLayer", "CELLS", "CELL_OPTIONS", "CellSpec", "FAMILIES", "FAMILY_SPECS",
    "Family", "FamilyError", "OPTIONS", "Option", "builtin_cell_names", "cell_names",
    "family_of", "kernel_families",
]

#: Every cell family, checked, by name (see `rnnbench.cells.families`).
FAMILY_SPECS: dict[str, Family] = load_families()

#: Names of the cell families; each is one cell class of rnnbench's own implementation.
FAMILIES = tuple(FAMILY_SPECS)

#: Every option of every family, by name (an option name has one kind everywhere).
OPTIONS: dict[str, Option] = {}
for _family in FAMILY_SPECS.values():
    for _option in _family.options:
        OPTIONS.setdefault(_option.name, _option)

#: Names of the cell options (keys of the `cell` config node) any family accepts.
CELL_OPTIONS = tuple(OPTIONS)

#: The order of the cells of `docs/cells.md`; cells of later families follow, by family.
_SPEC_ORDER = ("rnn", "lstm", "gru", "gru_v1", "peephole", "nig", "nfg", "nog", "niaf",
               "noaf", "np", "cifg", "fgr", "janet")


def _ordered() -> dict[str, CellSpec]:
    specs = {s.name: s for f in FAMILY_SPECS.values() for s in f.cells}
    first = [n for n in _SPEC_ORDER if n in specs]
    return {n: specs[n] for n in first + [n for n in specs if n not in first]}


#: Every cell of the spec, by name.
CELLS: dict[str, CellSpec] = _ordered()


def cell_names() -> list[str]:
    """Names of every cell, in the spec's order."""
    return list(CELLS)


def builtin_cell_names() -> list[str]:
    """Names of the cells that have a Keras built-in layer."""
    return [name for name, spec in CELLS.items() if spec.has_builtin]


def kernel_families() -> list[str]:
    """Names of the families with a hand-written gradient (`cell.gradient=bptt`)."""
    return [name for name, f in FAMILY_SPECS.items() if f.kernel]


def family_of(cell: str) -> Family:
    """The family of the cell named `cell` (a key of `CELLS`)."""
    return FAMILY_SPECS[CELLS[cell].family]
