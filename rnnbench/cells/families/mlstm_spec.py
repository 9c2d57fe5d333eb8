"""The `mlstm` family, light half: the mLSTM of Beck et al. 2024
(`rnnbench.cells.families.mlstm`)."""

from __future__ import annotations

from rnnbench.cells.families import CellSpec, Family, Option
from rnnbench.cells.families.slstm_spec import FORGET_ACTIVATION, PARALLEL


def param_count(d: int, n: int) -> int:
    """q, k, v, o (input kernel and bias each) and the scalar gates i, f (d + 1 each)."""
    return 4 * (d * n + n) + 2 * (d + 1)


CHUNK = Option(
    "chunk", int, 64,
    "chunk length L of the parallel form: a longer sequence runs in chunks of L steps, "
    "the state carried between them (T·L work, not T²; same numbers); 0: one chunk",
    check=lambda v: v >= 0, allowed="an integer >= 0",
)


FAMILY = Family(
    name="mlstm",
    summary="mLSTM: matrix memory C, normaliser n, stabiliser m (Beck et al. 2024)",
    kernel=False,
    parallel=True,
    options=(FORGET_ACTIVATION, PARALLEL, CHUNK),
    cells=(
        CellSpec(
            name="mlstm",
            summary=("C' = f C + i v kᵀ; n' = f n + i k; h' = o⊙C' q / max(|n'ᵀq|, 1); "
                     "i = exp(ĩ), f = σ(f̃) scalars; q, k, v, o from x only"),
            gates=("input", "forget", "output"),
            options=frozenset({"forget_activation", "parallel", "chunk"}),
            param_count=param_count,
            source="Beck et al. 2024, eqs. (19)-(27)",
        ),
    ),
)
