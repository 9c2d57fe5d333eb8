"""The `minrnn` family, light half: minGRU and minLSTM (Feng et al. 2024), gates of
`x_t` only, parallel over time (`rnnbench.cells.families.minrnn`)."""

from rnnbench.cells.families import CellSpec, Family, Option

LOG_SPACE = Option(
    "log_space", bool, False,
    "the paper's log-space version: candidate g(Linear(x)) > 0 and the scan in log space "
    "(default: the plain form, candidate Linear(x))",
)

PARALLEL = Option(
    "parallel", bool, True,
    "train with the parallel scan over time (false: the step loop, same numbers; "
    "faster on a CPU with few cores, see docs/cells.md)",
)

FAMILY = Family(
    name="minrnn",
    summary="minimal GRU / LSTM of Feng et al. 2024: gates of x only, h' = a(x)⊙h + b(x)",
    kernel=False,
    parallel=True,
    options=(LOG_SPACE, PARALLEL),
    cells=(
        CellSpec(
            name="mingru",
            summary="z = σ(Wz x + bz); h̃ = Wh x + bh; h' = (1 − z)⊙h + z⊙h̃",
            gates=("update",),
            options=frozenset({"log_space", "parallel"}),
            # Two input kernels and two biases, no recurrent kernel.
            param_count=lambda d, n: 2 * (d * n + n),
            source="Feng et al. 2024, Were RNNs All We Needed?, Section 3.1",
            variant={"kind": "gru"},
        ),
        CellSpec(
            name="minlstm",
            summary=(
                "f,i = σ(W x + b); h̃ = Wh x + bh; f' = f/(f+i); i' = i/(f+i); "
                "h' = f'⊙h + i'⊙h̃"
            ),
            gates=("forget", "input"),
            options=frozenset({"log_space", "parallel"}),
            # Three input kernels and three biases, no recurrent kernel.
            param_count=lambda d, n: 3 * (d * n + n),
            source="Feng et al. 2024, Were RNNs All We Needed?, Section 3.2",
            variant={"kind": "lstm"},
        ),
    ),
)
