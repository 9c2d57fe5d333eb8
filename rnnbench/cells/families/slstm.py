"""The sLSTM of Beck et al. 2024 ("xLSTM: Extended Long Short-Term Memory"), in `keras.ops`.

Equation numbers are the paper's: gates (11)-(14) from `W x_t + R h_{t−1} + b`, the
state update (8)-(10), the stabiliser (15)-(17):
`m_t = max(log f_t + m_{t−1}, log i_t)`, `i' = exp(log i_t − m_t)`,
`f' = exp(log f_t + m_{t−1} − m_t)`. The stored `c` and `n` are the true ones times
`exp(−m_t)`, so `h = o ⊙ c / n` does not change with it. Because `h` is the same for
any `m`, `m` is kept out of the gradient (`stop_gradient`): the gradient is the same
for any fixed `m`, and the max has no backward pass.

The forget gate is `σ(f̃)` (log f = log σ(f̃), the default) or `exp(f̃)`, eq. (13).
With `heads > 1` the recurrent matrices are block-diagonal (memory mixing within a
head only, the paper's §2.2).
"""

from __future__ import annotations

from keras import ops

from rnnbench.cells.base import SpecCell, drop, register
from rnnbench.cells.initializers import GateBias
from rnnbench.errors import ConfigError

#: Stands for log 0 (a masked step's input gate): exp of it minus any m is 0 in float32.
NEG = -1e30

#: The initial forget-gate bias of sLSTM and mLSTM: σ(3) ≈ 0.95, the first value of the
#: range the xLSTM authors' code starts forget biases from (not part of the equations).
FORGET_BIAS_INIT = 3.0

#: Values of the forget-gate option, eq. (13) / (26).
FORGET_GATES = ("sigmoid", "exp")


def log_forget(f_pre, forget):
    """log f_t from the pre-activation, for `forget` = "sigmoid" or "exp"."""
    return ops.log_sigmoid(f_pre) if forget == "sigmoid" else f_pre


def slstm_recurrent(h, recurrent_kernel, heads):
    """`R h_{t−1}` for the four gates, `(B, 4n)` in block order z, i, f, o.

    `recurrent_kernel` is `(heads, n/heads, 4·n/heads)`: head k maps its part of `h` to
    its part of each gate (block-diagonal R).
    """
    if heads == 1:
        return ops.matmul(h, recurrent_kernel[0])
    size = recurrent_kernel.shape[1]
    hh = ops.reshape(h, (-1, heads, size))
    r = ops.einsum("bhs,hsk->bhk", hh, recurrent_kernel)          # (B, H, 4·size)
    r = ops.transpose(ops.reshape(r, (-1, heads, 4, size)), (0, 2, 1, 3))
    return ops.reshape(r, (-1, 4 * heads * size))


def slstm_step(z_x, state, recurrent_kernel, heads, forget="sigmoid", dm=None):
    """One sLSTM step, eqs. (8)-(17).

    Args:
        z_x: `W x_t + b`, `(B, 4n)`, blocks z, i, f, o.
        state: `[h, c, n, m]`, each `(B, n)`.

    Returns:
        `(h_t, [h_t, c_t, n_t, m_t], gates)`, `gates` the i', f', o activations.
    """
    h, c, nrm, m = state
    pre = z_x + slstm_recurrent(drop(h, dm), recurrent_kernel, heads)
    z_pre, i_pre, f_pre, o_pre = ops.split(pre, 4, axis=-1)
    z = ops.tanh(z_pre)                                         # (11)
    log_f = log_forget(f_pre, forget)                           # (13)
    o = ops.sigmoid(o_pre)                                      # (14)
    m_new = ops.stop_gradient(ops.maximum(log_f + m, i_pre))    # (15); log i = ĩ (12)
    i_s = ops.exp(i_pre - m_new)                                # (16)
    f_s = ops.exp(log_f + m - m_new)                            # (17)
    c_new = f_s * c + i_s * z                                   # (8)
    n_new = f_s * nrm + i_s                                     # (9)
    h_new = o * (c_new / n_new)                                 # (10)
    return h_new, [h_new, c_new, n_new, m_new], {
        "input": i_s, "forget": f_s, "output": o, "state": h_new, "state_tanh": z}


@register
class SLSTMCell(SpecCell):
    """sLSTM (see the module docstring for the equations).

    Fused input blocks `z, i, f, o` (kernel d × 4n, bias 4n). `recurrent_kernel` is
    `(heads, n/heads, 4·n/heads)`: for head k, `R_k` maps units `k·n/H … (k+1)·n/H − 1`
    of `h_{t−1}` to the same units of each gate, in block order z, i, f, o. State:
    `[h, c, n, m]`. Trace: `input` = i' and `forget` = f' (the stabilised gates, both in
    [0, 1] by (15)), `output` = o, `state` = h, `state_tanh` = z.

    Args:
        units: number of units `n`.
        heads: number of heads (divides `n`); 1 is a full recurrent matrix.
        forget_activation: `"sigmoid"` (default) or `"exp"`, eq. (13).
        Other arguments: those of `SpecCell`.
    """

    family = "slstm"
    blocks = ("z", "input", "forget", "output")
    recurrent = False
    gradient_kernel = None

    def __init__(self, units, heads=1, forget_activation="sigmoid", **kwargs):
        if int(units) % int(heads):
            raise ConfigError(f"cell.heads={heads} must divide the number of units "
                              f"({units}): set model.units to a multiple of it, or change "
                              "cell.heads")
        if forget_activation not in FORGET_GATES:
            raise ConfigError(f"cell.forget_activation={forget_activation!r} is not allowed: "
                              f"one of {', '.join(FORGET_GATES)}")
        super().__init__(units, **kwargs)
        self.heads = int(heads)
        self.forget_activation = forget_activation
        self.state_size = [self.units] * 4

    def fused_bias_initializer(self):
        return GateBias(self.blocks, base=self.bias_initializer, forget_bias=FORGET_BIAS_INIT)

    def build_extra(self):
        size = self.units // self.heads
        self.recurrent_kernel = self.add_weight(
            shape=(self.heads, size, 4 * size), initializer=self.recurrent_initializer,
            name="recurrent_kernel")

    @property
    def trace_names(self):
        return ("input", "forget", "output", "state", "state_tanh")

    def forward(self, z_x, states, w, dm):
        return slstm_step(z_x, states, w["recurrent_kernel"], self.heads,
                          self.forget_activation, dm)

    def get_config(self):
        return {**super().get_config(), "heads": self.heads,
                "forget_activation": self.forget_activation}


CELL = SLSTMCell
