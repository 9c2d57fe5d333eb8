"""The `janet` family: JANET, the forget-gate-only LSTM (van der Westhuizen & Lasenby 2018).

Equations, for input `x`, previous state `h` (`h = c`: one state):

    s  = Wf x + Uf h + bf
    g  = tanh(Wc x + Uc h + bc)
    h' = σ(s)⊙h + (1 − σ(s − β))⊙g,      β = 1

Fused blocks: `forget, cell`. Trace: `forget` = σ(s), `state` = h', `state_tanh` = g.
Options: `forget_bias` (initial bf, default 1.0), `chrono_init` (bf = log(u),
u ~ U(1, T_max − 1)).
"""

from __future__ import annotations

from keras import ops

from rnnbench.cells.base import SpecCell, drop, register
from rnnbench.cells.bptt_kernels import Kernel, recurrent_grad, sig_grad, tanh_grad
from rnnbench.cells.initializers import ForgetBiasMixin


class JANETKernel(Kernel):
    """`h' = σ(s)⊙h + (1 − σ(s − β))⊙tanh(a_c)`, blocks `f, c`."""

    res_names = ("forget", "forget_shifted", "state_tanh")  # f, σ(s − β), g

    def back(self, d_new, states, res, w, dm):
        dh, h = d_new[0], states[0]
        f, f2, g = res
        da_s = dh * (h * sig_grad(f) - g * sig_grad(f2))
        da_c = dh * (1.0 - f2) * tanh_grad(g)
        da = ops.concatenate([da_s, da_c], axis=-1)
        dh_rec = ops.matmul(da, w["recurrent_kernel.T"])
        return da, [dh * f + drop(dh_rec, dm)]

    def weight_grads(self, states, res, da, w, dm):
        return recurrent_grad(states, da, dm)


@register
class JANETCell(ForgetBiasMixin, SpecCell):
    """JANET, the forget-gate-only LSTM (van der Westhuizen & Lasenby 2018).

    `s = Wf x + Uf h + bf`, `g = tanh(Wc x + Uc h + bc)`,
    `c' = σ(s)⊙c + (1 − σ(s − β))⊙g`, `h' = c'`, with `β = 1`. The state is `h`
    alone (`h = c`).

    Args:
        units: number of units `n`.
        forget_bias: initial `bf`; None means 1.0 (unless `chrono_init` is set).
        chrono_init: `T_max` of the chrono initialisation (`bf = log(u)`), or None.
        beta: the shift `β` of the input modulation. Defaults to 1.
        Other arguments: those of `SpecCell`.
    """

    family = "janet"
    blocks = ("forget", "cell")
    gradient_kernel = JANETKernel

    def __init__(self, units, forget_bias=None, chrono_init=None, beta=1.0, **kwargs):
        super().__init__(units, **kwargs)
        self.forget_bias = forget_bias
        self.chrono_init = chrono_init
        self.beta = float(beta)

    @property
    def trace_names(self):
        return ("forget", "state", "state_tanh")

    def forward(self, z_x, states, w, dm):
        h = states[0]
        z = z_x + ops.matmul(drop(h, dm), w["recurrent_kernel"])
        s, a_c = ops.split(z, 2, axis=-1)
        f = ops.sigmoid(s)
        f2 = ops.sigmoid(s - self.beta)
        g = ops.tanh(a_c)
        h_new = f * h + (1.0 - f2) * g
        values = {"forget": f, "forget_shifted": f2, "state": h_new, "state_tanh": g}
        return h_new, [h_new], values

    def get_config(self):
        return {
            **super().get_config(),
            "forget_bias": self.forget_bias,
            "chrono_init": self.chrono_init,
            "beta": self.beta,
        }


CELL = JANETCell
