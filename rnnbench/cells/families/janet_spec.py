"""The `janet` family, light half: JANET, the forget-gate-only LSTM
(`rnnbench.cells.families.janet`)."""

from rnnbench.cells.families import CellSpec, Family, gate_weights
from rnnbench.cells.families.gate_options import CHRONO_INIT, FORGET_BIAS, one_forget_bias

FAMILY = Family(
    name="janet",
    summary="JANET, forget gate only (van der Westhuizen & Lasenby 2018)",
    kernel=True,
    options=(FORGET_BIAS, CHRONO_INIT),
    check=one_forget_bias,
    cells=(
        CellSpec(
            name="janet",
            summary=(
                "s = Wf x + Uf h + bf; g = tanh(Wc x + Uc h + bc); "
                "c' = σ(s)⊙c + (1 − σ(s − 1))⊙g; h' = c'"
            ),
            gates=("forget",),
            options=frozenset({"forget_bias", "chrono_init"}),
            param_count=lambda d, n: gate_weights(d, n, 2),
            source="van der Westhuizen & Lasenby 2018",
        ),
    ),
)
