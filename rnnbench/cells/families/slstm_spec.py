"""The `slstm` family, light half: the sLSTM of Beck et al. 2024
(`rnnbench.cells.families.slstm`)."""

from __future__ import annotations

from rnnbench.cells.families import CellSpec, Family, Option

#: The forget-gate activation of sLSTM and mLSTM, eq. (13) / (26): σ or exp.
FORGET_ACTIVATION = Option(
    "forget_activation", str, "sigmoid",
    "forget gate of sLSTM/mLSTM: sigmoid (f = σ(f̃)) or exp (f = exp(f̃))",
    choices=("sigmoid", "exp"),
)


#: Whether a family with a parallel form trains with it (lru, mlstm); false: step loop.
PARALLEL = Option(
    "parallel", bool, True,
    "train with the parallel form over time (false: the step loop; same numbers)",
)


def param_count(d: int, n: int, heads: int = 1) -> int:
    """Four gates (z, i, f, o) with input kernel and bias, and a block-diagonal recurrent
    matrix of `heads` blocks of (n/heads)² each."""
    return 4 * (d * n + n * n // heads + n)


FAMILY = Family(
    name="slstm",
    summary="sLSTM: exponential input gate, normaliser n, stabiliser m (Beck et al. 2024)",
    kernel=False,
    parallel=False,
    options=(
        Option("heads", int, 1, "number of heads: block-diagonal recurrent matrices",
               check=lambda v: v >= 1, allowed="an integer >= 1 that divides model.units"),
        FORGET_ACTIVATION,
    ),
    cells=(
        CellSpec(
            name="slstm",
            summary=("z = tanh(·), i = exp(ĩ), f = σ(f̃), o = σ(õ) of W x + R h + b; "
                     "c' = f⊙c + i⊙z; n' = f⊙n + i; h' = o⊙c'/n' (stabilised by m)"),
            gates=("input", "forget", "output"),
            options=frozenset({"heads", "forget_activation"}),
            param_count=param_count,
            source="Beck et al. 2024, eqs. (8)-(17)",
        ),
    ),
)
