"""The `minrnn` family: minGRU and minLSTM (Feng et al. 2024, "Were RNNs All We Needed?").

Gates depend on the input `x_t` only, so the recurrence is linear in `h`:

    minGRU (Section 3.1):  z = σ(Wz x + bz),  h̃ = Wh x + bh,
                           h' = (1 − z)⊙h + z⊙h̃                 a = 1 − z,  b = z⊙h̃
    minLSTM (Section 3.2): f = σ(Wf x + bf),  i = σ(Wi x + bi),  h̃ = Wh x + bh,
                           f' = f/(f + i),  i' = i/(f + i),
                           h' = f'⊙h + i'⊙h̃                     a = f',     b = i'⊙h̃

Option `log_space` (the paper's log-space version, its Appendix): the candidate is
`h̃ = g(Wh x + bh)` with `g(v) = v + 0.5` for `v ≥ 0` and `σ(v)` below (so `h̃ > 0`),
and the scan runs on `(log a, log b)`, with `log σ(v) = −softplus(−v)`,
`log(1 − σ(v)) = −softplus(v)` and, for minLSTM, `log f' = −softplus(s)`,
`log i' = −softplus(−s)`, `s = softplus(−v_f) − softplus(−v_i)`. The default is the plain
form (candidate `Wh x + bh`, real-valued scan).

Fused blocks: minGRU `z, h`; minLSTM `f, i, h`; no recurrent kernel. Training (`scan`)
runs every step at once with the parallel scan of `rnnbench.cells.scan` (at any length,
known when the graph is built or not); `forward` is the step, used for generation, the
trace, and `parallel=False`. Gradient: autodiff.
"""

from __future__ import annotations

from keras import ops

from rnnbench.cells import scan as scans
from rnnbench.cells.base import SpecCell, register
from rnnbench.errors import ConfigError

_BLOCKS = {"gru": ("z", "h"), "lstm": ("f", "i", "h")}


def g(v):
    """The log-space version's candidate activation: v + 0.5 for v ≥ 0, σ(v) below."""
    return ops.where(v >= 0, v + 0.5, ops.sigmoid(v))


def log_g(v):
    """log g(v), computed without forming g for v < 0."""
    return ops.where(v >= 0, ops.log(ops.maximum(v, 0.0) + 0.5), -ops.softplus(-v))


@register
class MinRNNCell(SpecCell):
    """minGRU (`kind="gru"`) or minLSTM (`kind="lstm"`).

    Args:
        units: number of units.
        kind: `"gru"` or `"lstm"`.
        log_space: the paper's log-space version (see the module docstring).
        parallel: train with the parallel scan (False: the step loop).
        **kwargs: those of `SpecCell`; `recurrent_dropout` must be 0 (no recurrent
            product for it to act on: `ConfigError`).
    """

    family = "minrnn"
    blocks = _BLOCKS["gru"]
    recurrent = False

    def __init__(self, units, kind="gru", log_space=False, parallel=True, **kwargs):
        super().__init__(units, **kwargs)
        if self.recurrent_dropout > 0:
            raise ConfigError(
                f"cell.recurrent_dropout={self.recurrent_dropout} has nothing to act on in "
                f"min{kind} (its gates see x only; h enters no product with a weight): "
                "set cell.recurrent_dropout=0, or use cell.dropout"
            )
        if kind not in _BLOCKS:
            raise ValueError(f"kind must be 'gru' or 'lstm', not {kind!r}")
        self.kind = kind
        self.log_space = bool(log_space)
        self.parallel = bool(parallel)
        self.blocks = _BLOCKS[kind]

    @property
    def trace_names(self):
        gates = ("update",) if self.kind == "gru" else ("forget", "input")
        return (*gates, "state", "state_tanh")

    def coefficients(self, z_x):
        """`(a, b, gates)` of `h' = a⊙h + b` from the projected input (any leading shape)."""
        if self.kind == "gru":
            vz, vh = ops.split(z_x, 2, axis=-1)
            z = ops.sigmoid(vz)
            cand = g(vh) if self.log_space else vh
            return 1.0 - z, z * cand, {"update": z}
        vf, vi, vh = ops.split(z_x, 3, axis=-1)
        f, i = ops.sigmoid(vf), ops.sigmoid(vi)
        fn, in_ = f / (f + i), i / (f + i)
        cand = g(vh) if self.log_space else vh
        return fn, in_ * cand, {"forget": fn, "input": in_}

    def log_coefficients(self, z_x):
        """`(log a, log b)` of the log-space version (positive `a`, `b`)."""
        if self.kind == "gru":
            vz, vh = ops.split(z_x, 2, axis=-1)
            return -ops.softplus(vz), -ops.softplus(-vz) + log_g(vh)
        vf, vi, vh = ops.split(z_x, 3, axis=-1)
        s = ops.softplus(-vf) - ops.softplus(-vi)
        return -ops.softplus(s), -ops.softplus(-s) + log_g(vh)

    def forward(self, z_x, states, w, dm):
        a, b, gates = self.coefficients(z_x)
        h = a * states[0] + b
        return h, [h], {**gates, "state": h, "state_tanh": ops.tanh(h)}

    def scan(self, projected, initial_state, mask, *, return_sequences=True,
             zero_output_for_mask=False):
        """Every step at once (`rnnbench.cells.scan`, any length); None (the step loop)
        when `parallel` is off."""
        if not self.parallel:
            return None
        h0 = initial_state[0]
        if self.log_space:
            la, lb = self.log_coefficients(projected)
            h = ops.exp(scans.log_linear_scan(la, lb, h0=h0, mask=mask))
        else:
            a, b, _ = self.coefficients(projected)
            h = scans.linear_scan(a, b, h0=h0, mask=mask)
        last = h[:, -1]
        if mask is not None and zero_output_for_mask:
            h = ops.where(ops.expand_dims(ops.cast(mask, "bool"), -1), h, 0.0)
        return last, h, [last]

    def get_config(self):
        return {**super().get_config(), "kind": self.kind, "log_space": self.log_space,
                "parallel": self.parallel}


CELL = MinRNNCell
