"""The registry of every cell of `shared/specs/cells.md`.

This module imports nothing heavy (no Keras): the CLI and the config checks read it
before the backend is chosen. Parameter counts are written here from the spec's
equations, independently of the layer code, so that tests can hold one against the
other.

Notation of the counts: `d` is the input size, `n` the number of units. A gate with
weights costs `d*n + n*n + n` (input kernel, recurrent kernel, bias); a diagonal
peephole costs `n`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

#: Cell options a cell may accept (see `CellSpec.options`).
CELL_OPTIONS = ("forget_bias", "chrono_init")

_LSTM_OPTIONS = frozenset({"forget_bias", "chrono_init"})


def _gates(d: int, n: int, k: int) -> int:
    """Weights of `k` gates (or candidate blocks) with input kernel, recurrent kernel, bias."""
    return k * (d * n + n * n + n)


@dataclass(frozen=True)
class CellSpec:
    """What the spec says about one recurrent cell.

    Args:
        name: registry name, used as `cell.name` in configs.
        summary: the cell's step equations on one line.
        family: `"rnn"`, `"lstm"`, `"gru"` or `"janet"`.
        gates: names of the gate activations the cell computes, in the names
            `trace()` uses (`"input"`, `"forget"`, `"output"`, `"update"`,
            `"reset"`). A gate tied to another one (`cifg`: f = 1 - i) is listed.
        has_builtin: whether Keras has a built-in layer for it (`impl=builtin`).
        options: cell options it accepts, among `forget_bias` and `chrono_init`.
        param_count: `param_count(d, n) -> int`, the number of weights the spec's
            equations need for input size `d` and `n` units.
        source: the paper (or convention) the equations come from.
    """

    name: str
    summary: str
    family: str
    gates: tuple[str, ...]
    has_builtin: bool
    options: frozenset[str]
    param_count: Callable[[int, int], int]
    source: str


_SPECS = [
    CellSpec(
        name="rnn",
        summary="h' = tanh(W x + U h + b)",
        family="rnn",
        gates=(),
        has_builtin=True,
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
        has_builtin=True,
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
        has_builtin=True,
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
        has_builtin=True,
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
        has_builtin=False,
        options=_LSTM_OPTIONS,
        param_count=lambda d, n: _gates(d, n, 4) + 3 * n,
        source="Gers & Schmidhuber 2000; vanilla LSTM of Greff et al. 2017",
    ),
    CellSpec(
        name="nig",
        summary="peephole with no input gate: i = 1, c' = f⊙c + g",
        family="lstm",
        gates=("forget", "output"),
        has_builtin=False,
        options=_LSTM_OPTIONS,
        param_count=lambda d, n: _gates(d, n, 3) + 2 * n,
        source="Greff et al. 2017",
    ),
    CellSpec(
        name="nfg",
        summary="peephole with no forget gate: f = 1, c' = c + i⊙g",
        family="lstm",
        gates=("input", "output"),
        has_builtin=False,
        options=frozenset({"chrono_init"}),
        param_count=lambda d, n: _gates(d, n, 3) + 2 * n,
        source="Greff et al. 2017",
    ),
    CellSpec(
        name="nog",
        summary="peephole with no output gate: o = 1, h' = tanh(c')",
        family="lstm",
        gates=("input", "forget"),
        has_builtin=False,
        options=_LSTM_OPTIONS,
        param_count=lambda d, n: _gates(d, n, 3) + 2 * n,
        source="Greff et al. 2017",
    ),
    CellSpec(
        name="niaf",
        summary="peephole with no input activation: g = Wc x + Uc h + bc",
        family="lstm",
        gates=("input", "forget", "output"),
        has_builtin=False,
        options=_LSTM_OPTIONS,
        param_count=lambda d, n: _gates(d, n, 4) + 3 * n,
        source="Greff et al. 2017",
    ),
    CellSpec(
        name="noaf",
        summary="peephole with no output activation: h' = o⊙c'",
        family="lstm",
        gates=("input", "forget", "output"),
        has_builtin=False,
        options=_LSTM_OPTIONS,
        param_count=lambda d, n: _gates(d, n, 4) + 3 * n,
        source="Greff et al. 2017",
    ),
    CellSpec(
        name="np",
        summary="peephole with no peepholes: exactly lstm",
        family="lstm",
        gates=("input", "forget", "output"),
        has_builtin=False,
        options=_LSTM_OPTIONS,
        param_count=lambda d, n: _gates(d, n, 4),
        source="Greff et al. 2017",
    ),
    CellSpec(
        name="cifg",
        summary="peephole with coupled gates: f = 1 − i, no forget-gate weights",
        family="lstm",
        gates=("input", "forget", "output"),
        has_builtin=False,
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
        has_builtin=False,
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
        has_builtin=False,
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
