"""The `lstm` family, light half: `lstm`, `peephole` and the eight variants of
Greff et al. 2017 (`rnnbench.cells.families.lstm`)."""

from rnnbench.cells.families import BuiltinLayer, CellSpec, Family, gate_weights
from rnnbench.cells.families.gate_options import CHRONO_INIT, FORGET_BIAS, one_forget_bias

_BOTH = frozenset({"forget_bias", "chrono_init"})

FAMILY = Family(
    name="lstm",
    summary="LSTM with every option of Greff et al. 2017 (peepholes, removed or coupled gates)",
    kernel=True,
    options=(FORGET_BIAS, CHRONO_INIT),
    check=one_forget_bias,
    cells=(
        CellSpec(
            name="lstm",
            summary=(
                "i,f,o = σ(W x + U h + b); g = tanh(Wc x + Uc h + bc); c' = f⊙c + i⊙g; h' = o⊙tanh(c')"
            ),
            gates=("input", "forget", "output"),
            builtin=BuiltinLayer("LSTM", gate_blocks=("input", "forget", "cell", "output")),
            variant={"peepholes": False},
            options=_BOTH,
            param_count=lambda d, n: gate_weights(d, n, 4),
            source="Hochreiter & Schmidhuber 1997; Gers et al. 2000",
        ),
        CellSpec(
            name="peephole",
            summary=(
                "i,f = σ(W x + U h + p⊙c + b); g = tanh(Wc x + Uc h + bc); "
                "c' = f⊙c + i⊙g; o = σ(Wo x + Uo h + po⊙c' + bo); h' = o⊙tanh(c')"
            ),
            gates=("input", "forget", "output"),
            options=_BOTH,
            param_count=lambda d, n: gate_weights(d, n, 4) + 3 * n,
            source="Gers & Schmidhuber 2000; vanilla LSTM of Greff et al. 2017",
        ),
        CellSpec(
            name="nig",
            summary="peephole with no input gate: i = 1, c' = f⊙c + g",
            gates=("forget", "output"),
            variant={"input_gate": False},
            options=_BOTH,
            param_count=lambda d, n: gate_weights(d, n, 3) + 2 * n,
            source="Greff et al. 2017",
        ),
        CellSpec(
            name="nfg",
            summary="peephole with no forget gate: f = 1, c' = c + i⊙g",
            gates=("input", "output"),
            variant={"forget_gate": "none"},
            options=frozenset({"chrono_init"}),
            param_count=lambda d, n: gate_weights(d, n, 3) + 2 * n,
            source="Greff et al. 2017",
        ),
        CellSpec(
            name="nog",
            summary="peephole with no output gate: o = 1, h' = tanh(c')",
            gates=("input", "forget"),
            variant={"output_gate": False},
            options=_BOTH,
            param_count=lambda d, n: gate_weights(d, n, 3) + 2 * n,
            source="Greff et al. 2017",
        ),
        CellSpec(
            name="niaf",
            summary="peephole with no input activation: g = Wc x + Uc h + bc",
            gates=("input", "forget", "output"),
            variant={"input_activation": "linear"},
            options=_BOTH,
            param_count=lambda d, n: gate_weights(d, n, 4) + 3 * n,
            source="Greff et al. 2017",
        ),
        CellSpec(
            name="noaf",
            summary="peephole with no output activation: h' = o⊙c'",
            gates=("input", "forget", "output"),
            variant={"output_activation": "linear"},
            options=_BOTH,
            param_count=lambda d, n: gate_weights(d, n, 4) + 3 * n,
            source="Greff et al. 2017",
        ),
        CellSpec(
            name="np",
            summary="peephole with no peepholes: exactly lstm",
            gates=("input", "forget", "output"),
            variant={"peepholes": False},
            options=_BOTH,
            param_count=lambda d, n: gate_weights(d, n, 4),
            source="Greff et al. 2017",
        ),
        CellSpec(
            name="cifg",
            summary="peephole with coupled gates: f = 1 − i, no forget-gate weights",
            gates=("input", "forget", "output"),
            variant={"forget_gate": "coupled"},
            options=_BOTH,
            param_count=lambda d, n: gate_weights(d, n, 3) + 2 * n,
            source="Greff et al. 2017",
        ),
        CellSpec(
            name="fgr",
            summary=(
                "peephole with full gate recurrence: i,f,o also get R·[i,f,o] of the "
                "previous step (9 n×n matrices)"
            ),
            gates=("input", "forget", "output"),
            variant={"gate_recurrence": True},
            options=_BOTH,
            param_count=lambda d, n: gate_weights(d, n, 4) + 3 * n + 9 * n * n,
            source="Greff et al. 2017",
        ),
    ),
)
