"""The `gru` family, light half: `gru` (reset after) and `gru_v1` (reset before)
(`rnnbench.cells.families.gru`)."""

from rnnbench.cells.families import BuiltinLayer, CellSpec, Family, gate_weights

FAMILY = Family(
    name="gru",
    summary="GRU, reset gate after (cuDNN form) or before the recurrent product",
    kernel=True,
    cells=(
        CellSpec(
            name="gru",
            summary=(
                "z,r = σ(W x + U h + b); g = tanh(Wh x + bh + r⊙(Uh h + bh2)); "
                "h' = z⊙h + (1−z)⊙g"
            ),
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
            summary="z,r = σ(W x + U h + b); g = tanh(Wh x + Uh (r⊙h) + bh); h' = z⊙h + (1−z)⊙g",
            gates=("update", "reset"),
            builtin=BuiltinLayer("GRU", {"reset_after": False}),
            variant={"reset_after": False},
            options=frozenset(),
            param_count=lambda d, n: gate_weights(d, n, 3),
            source="Cho et al. 2014",
        ),
    ),
)
