"""The `rnn` family: the Elman cell (Elman 1990).

Equations, for input `x`, previous state `h`:

    h' = tanh(W x + U h + b)

Fused blocks: `h` (one). Trace: `state` = `state_tanh` = `h'` (no gate). Hand-written
gradient: `A = zx + h·U`, `dA = dh' ⊙ (1 − h'²)`, `dh = dA·Uᵀ`, `dU = Σ hᵀ·dA`.
"""

from __future__ import annotations

from keras import ops

from rnnbench.cells.base import SpecCell, drop, register
from rnnbench.cells.bptt_kernels import Kernel, recurrent_grad, tanh_grad


class ElmanKernel(Kernel):
    """`h' = tanh(A)`, `A = zx + hm·U`."""

    res_names = ("state",)  # h'

    def back(self, d_new, states, res, w, dm):
        da = d_new[0] * tanh_grad(res[0])
        return da, [drop(ops.matmul(da, w["recurrent_kernel.T"]), dm)]

    def weight_grads(self, states, res, da, w, dm):
        return recurrent_grad(states, da, dm)


@register
class ElmanCell(SpecCell):
    """Elman cell: `h' = tanh(W x + U h + b)`.

    Args: those of `SpecCell`.
    """

    family = "rnn"
    blocks = ("h",)
    gradient_kernel = ElmanKernel

    @property
    def trace_names(self):
        return ("state", "state_tanh")

    def forward(self, z_x, states, w, dm):
        h = ops.tanh(z_x + ops.matmul(drop(states[0], dm), w["recurrent_kernel"]))
        return h, [h], {"state": h, "state_tanh": h}


CELL = ElmanCell
