"""The `rnn` family, light half: the Elman cell (`rnnbench.cells.families.rnn`)."""

from rnnbench.cells.families import BuiltinLayer, CellSpec, Family, gate_weights

FAMILY = Family(
    name="rnn",
    summary="Elman cell, h' = tanh(W x + U h + b)",
    kernel=True,
    cells=(
        CellSpec(
            name="rnn",
            summary="h' = tanh(W x + U h + b)",
            gates=(),
            builtin=BuiltinLayer("SimpleRNN"),
            options=frozenset(),
            param_count=lambda d, n: gate_weights(d, n, 1),
            source="Elman 1990",
        ),
    ),
)
