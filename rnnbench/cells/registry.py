"""The registry of every cell of the spec (`docs/cells.md`), and how each one is built.

This module imports nothing heavy (no Keras): the CLI and the config checks read it
before the backend is chosen. It is the one place that maps a cell name to what builds
it: `CellSpec.builtin` names the Keras layer (`rnnbench.cells.layers` builds and
recognises built-in layers from it) and `CellSpec.variant` the arguments of the cell's
family class in rnnbench's own implementation (`rnnbench.cells.variants.make_cell`).

Parameter counts are written here from the spec's equations, independently of the layer
code, so that tests can hold one against the other. Notation of the counts: `d` is the
input size, `n` the number of units. A gate with weights costs `d*n + n*n + n` (input
kernel, recurrent kernel, bias); a diagonal peephole costs `n`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: Cell options a cell may accept (see `CellSpec.options`).
CELL_OPTIONS = ("forget_bias", "chrono_init")

#: Cell families; each is one cell class of rnnbench's own implementation.
FAMILIES = ("rnn", "lstm", "gru", "janet")

_LSTM_OPTIONS = frozenset({"forget_bias", "chrono_init"})


def _gates(d: int, n: int, k: int) -> int:
    """Weights of `k` gates (or candidate blocks) with input kernel, recurrent kernel, bias."""
    return k * (d * n + n * n + n)


@dataclass(frozen=True)
class BuiltinLayer:
    """The Keras layer that runs a cell with `impl=builtin`.

    Args:
        layer: class name in `keras.layers` (`"SimpleRNN"`, `"LSTM"`, `"GRU"`).
        args: constructor arguments that make it this cell (`reset_after` tells `gru`
            from `gru_v1`); a built layer whose cell has these values is this cell.
        gate_blocks: the order of the blocks of the layer's fused bias, for cells whose
            forget-gate options (`forget_bias`, `chrono_init`) rewrite that bias.
    """

    layer: str
    args: Mapping[str, Any] = field(default_factory=dict, hash=False)
    gate_blocks: tuple[str, ...] = ()


@dataclass(frozen=True)
class CellSpec:
    """What the spec says about one recurrent cell, and how each implementation builds it.

    Args:
        name: registry name, used as `cell.name` in configs.
        summary: the cell's step equations on one line.
        family: one of `FAMILIES`: `"rnn"`, `"lstm"`, `"gru"` or `"janet"`. rnnbench's
            own implementation has one cell class per family.
        gates: names of the gate activations the cell computes, in the names
            `trace()` uses (`"input"`, `"forget"`, `"output"`, `"update"`,
            `"reset"`). A gate tied to another one (`cifg`: f = 1 - i) is listed.
        options: cell options it accepts, among `forget_bias` and `chrono_init`.
        param_count: `param_count(d, n) -> int`, the number of weights the spec's
            equations need for input size `d` and `n` units.
        source: the paper (or convention) the equations come from.
        builtin: the Keras layer for `impl=builtin`, or None where Keras has none.
        variant: arguments of the family's cell class that make it this cell (what a
            Greff et al. variant removes from `peephole`, `reset_after` of a GRU).
    """

    name: str
    summary: str
    family: str
    gates: tuple[str, ...]
    options: frozenset[str]
    param_count: Callable[[int, int], int]
    source: str
    builtin: BuiltinLayer | None = None
    variant: Mapping[str, Any] = field(default_factory=dict, hash=False)

    @property
    def has_builtin(self) -> bool:
        """Whether Keras has a built-in layer for it (`impl=builtin`)."""
        return self.builtin is not None


_SPECS = [
    CellSpec(
        name="rnn",
        summary="h' = tanh(W x + U h + b)",
        family="rnn",
        gates=(),
        builtin=BuiltinLayer("SimpleRNN"),
        options=frozenset(),
        param_count=lambda d, n: _gates(d, n, 1),
        source="Elman 1990",
    ),
    CellSpec(
        name="lstm",
        summary=(
            "i,f,o = σ(W x + U h + b); g = tanh(Wc x + Uc h + bc); c' = f⊙c + i⊙g; h' = o⊙tanh(c')"
        ),
        family="lstm",
        gates=("input", "forget", "output"),
        builtin=BuiltinLayer("LSTM", gate_blocks=("input", "forget", "cell", "output")),
        variant={"peepholes": False},
        options=_LSTM_OPTIONS,
        param_count=lambda d, n: _gates(d, n, 4),
        source="Hochreiter & Schmidhuber 1997; Gers et al. 2000",
    ),
    CellSpec(
        name="gru",
        summary=(
            "z,r = σ(W x + U h + b); g = tanh(Wh x + bh + r⊙(Uh h + bh2)); h' = z⊙h + (1−z)⊙g"
        ),
        family="gru",
        gates=("update", "reset"),
        builtin=BuiltinLayer("GRU", {"reset_after": True}),
        variant={"reset_after": True},
        options=frozenset(),
        # Three input kernels, three recurrent kernels, bz, br, bh and bh2.
        param_count=lambda d, n: 3 * (d * n + n * n) + 4 * n,
        source="Cho et al. 2014, reset-after form of Keras / cuDNN",
    ),
    CellSpec(
        name="gru_v1",
        summary=("z,r = σ(W x + U h + b); g = tanh(Wh x + Uh (r⊙h) + bh); h' = z⊙h + (1−z)⊙g"),
        family="gru",
        gates=("update", "reset"),
        builtin=BuiltinLayer("GRU", {"reset_after": False}),
        variant={"reset_after": False},
        options=frozenset(),
        param_count=lambda d, n: _gates(d, n, 3),
        source="Cho et al. 2014",
    ),
    CellSpec(
        name="peephole",
        summary=(
            "i,f = σ(W x + U h + p⊙c + b); g = tanh(Wc x + Uc h + bc); "
            "c' = f⊙c + i⊙g; o = σ(Wo x + Uo h + po⊙c' + bo); h' = o⊙tanh(c')"
        ),
        family="lstm",
        gates=("input", "forget", "output"),
        options=_LSTM_OPTIONS,
        param_count=lambda d, n: _gates(d, n, 4) + 3 * n,
        source="Gers & Schmidhuber 2000; vanilla LSTM of Greff et al. 2017",
    ),
    CellSpec(
        name="nig",
        summary="peephole with no input gate: i = 1, c' = f⊙c + g",
        family="lstm",
        gates=("forget", "output"),
        variant={"input_gate": False},
        options=_LSTM_OPTIONS,
        param_count=lambda d, n: _gates(d, n, 3) + 2 * n,
        source="Greff et al. 2017",
    ),
    CellSpec(
        name="nfg",
        summary="peephole with no forget gate: f = 1, c' = c + i⊙g",
        family="lstm",
        gates=("input", "output"),
        variant={"forget_gate": "none"},
        options=frozenset({"chrono_init"}),
        param_count=lambda d, n: _gates(d, n, 3) + 2 * n,
        source="Greff et al. 2017",
    ),
    CellSpec(
        name="nog",
        summary="peephole with no output gate: o = 1, h' = tanh(c')",
        family="lstm",
        gates=("input", "forget"),
        variant={"output_gate": False},
        options=_LSTM_OPTIONS,
        param_count=lambda d, n: _gates(d, n, 3) + 2 * n,
        source="Greff et al. 2017",
    ),
    CellSpec(
        name="niaf",
        summary="peephole with no input activation: g = Wc x + Uc h + bc",
        family="lstm",
        gates=("input", "forget", "output"),
        variant={"input_activation": "linear"},
        options=_LSTM_OPTIONS,
        param_count=lambda d, n: _gates(d, n, 4) + 3 * n,
        source="Greff et al. 2017",
    ),
    CellSpec(
        name="noaf",
        summary="peephole with no output activation: h' = o⊙c'",
        family="lstm",
        gates=("input", "forget", "output"),
        variant={"output_activation": "linear"},
        options=_LSTM_OPTIONS,
        param_count=lambda d, n: _gates(d, n, 4) + 3 * n,
        source="Greff et al. 2017",
    ),
    CellSpec(
        name="np",
        summary="peephole with no peepholes: exactly lstm",
        family="lstm",
        gates=("input", "forget", "output"),
        variant={"peepholes": False},
        options=_LSTM_OPTIONS,
        param_count=lambda d, n: _gates(d, n, 4),
        source="Greff et al. 2017",
    ),
    CellSpec(
        name="cifg",
        summary="peephole with coupled gates: f = 1 − i, no forget-gate weights",
        family="lstm",
        gates=("input", "forget", "output"),
        variant={"forget_gate": "coupled"},
        options=_LSTM_OPTIONS,
        param_count=lambda d, n: _gates(d, n, 3) + 2 * n,
        source="Greff et al. 2017",
    ),
    CellSpec(
        name="fgr",
        summary=(
            "peephole with full gate recurrence: i,f,o also get R·[i,f,o] of the "
            "previous step (9 n×n matrices)"
        ),
        family="lstm",
        gates=("input", "forget", "output"),
        variant={"gate_recurrence": True},
        options=_LSTM_OPTIONS,
        param_count=lambda d, n: _gates(d, n, 4) + 3 * n + 9 * n * n,
        source="Greff et al. 2017",
    ),
    CellSpec(
        name="janet",
        summary=(
            "s = Wf x + Uf h + bf; g = tanh(Wc x + Uc h + bc); "
            "c' = σ(s)⊙c + (1 − σ(s − 1))⊙g; h' = c'"
        ),
        family="janet",
        gates=("forget",),
        options=_LSTM_OPTIONS,
        param_count=lambda d, n: _gates(d, n, 2),
        source="van der Westhuizen & Lasenby 2018",
    ),
]

#: Every cell of the spec, by name.
CELLS: dict[str, CellSpec] = {spec.name: spec for spec in _SPECS}


def cell_names() -> list[str]:
    """Names of every cell, in the spec's order."""
    return list(CELLS)


def builtin_cell_names() -> list[str]:
    """Names of the cells that have a Keras built-in layer."""
    return [name for name, spec in CELLS.items() if spec.has_builtin]
