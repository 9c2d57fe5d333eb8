"""The `gru` family: `gru` (reset gate after the recurrent product, the Keras / cuDNN
form) and `gru_v1` (reset before, Cho et al. 2014).

Equations, for input `x`, previous state `h`:

    z  = σ(Wz x + Uz h + bz)
    r  = σ(Wr x + Ur h + br)
    g  = tanh(Wh x + bh + r⊙(Uh h + bh2))       reset after (gru)
    g  = tanh(Wh x + Uh (r⊙h) + bh)             reset before (gru_v1)
    h' = z⊙h + (1 − z)⊙g

Fused blocks: `update, reset, candidate`; `recurrent_bias` is `bh2` (reset after only).
Keras's `GRU` (reset after) keeps a second bias for the recurrent side of all three
blocks; the spec only has `bh2`, so the update and reset parts of Keras's recurrent bias
fold into `bias` (`custom_twin` does it). Trace: `update`, `reset`, `state` = h',
`state_tanh` = g.
"""

from __future__ import annotations

from keras import ops

from rnnbench.cells.base import SpecCell, drop, register
from rnnbench.cells.bptt_kernels import Kernel, flat, outer_sum, sig_grad, tanh_grad


class GRUKernel(Kernel):
    """`gru` (reset after) and `gru_v1` (reset before), blocks `z, r, h`."""

    def __init__(self, cell):
        self.reset_after = cell.reset_after
        # z, r, g, and for reset-after q = Uh·h + bh2
        self.res_names = ("update", "reset", "state_tanh") + (
            ("recurrent_candidate",) if self.reset_after else ())
        super().__init__(cell)

    def back(self, d_new, states, res, w, dm):
        dh_new, h = d_new[0], states[0]
        z, r, g = res[0], res[1], res[2]
        da_g = dh_new * (1.0 - z) * tanh_grad(g)
        da_z = dh_new * (h - g) * sig_grad(z)
        if self.reset_after:
            da_r = da_g * res[3] * sig_grad(r)
            d_rec = ops.concatenate([da_z, da_r, da_g * r], axis=-1)
            dh_rec = ops.matmul(d_rec, w["recurrent_kernel.T"])
        else:
            d_rh = ops.matmul(da_g, w["recurrent_kernel_h.T"])
            da_r = d_rh * drop(h, dm) * sig_grad(r)
            d_zr = ops.concatenate([da_z, da_r], axis=-1)
            dh_rec = ops.matmul(d_zr, w["recurrent_kernel_zr.T"]) + d_rh * r
        da = ops.concatenate([da_z, da_r, da_g], axis=-1)
        return da, [dh_new * z + drop(dh_rec, dm)]

    def weight_grads(self, states, res, da, w, dm):
        n = self.n
        hm = drop(states[0], dm)
        r = res[1]
        if self.reset_after:
            dq = da[..., 2 * n :] * r
            d_rec = ops.concatenate([da[..., : 2 * n], dq], axis=-1)
            return {
                "recurrent_kernel": outer_sum(hm, d_rec),
                "recurrent_bias": ops.sum(flat(dq), axis=0),
            }
        return {
            "recurrent_kernel_zr": outer_sum(hm, da[..., : 2 * n]),
            "recurrent_kernel_h": outer_sum(r * hm, da[..., 2 * n :]),
        }


@register
class GRUVariantCell(SpecCell):
    """GRU cell, reset gate applied after (`gru`) or before (`gru_v1`) the product.

    `z = σ(Wz x + Uz h + bz)`, `r = σ(Wr x + Ur h + br)`,
    reset after: `g = tanh(Wh x + bh + r⊙(Uh h + bh2))`;
    reset before: `g = tanh(Wh x + Uh (r⊙h) + bh)`;
    `h' = z⊙h + (1 − z)⊙g`.

    Args:
        reset_after: True for `gru` (the cuDNN form), False for `gru_v1`.
        Other arguments: those of `SpecCell`.
    """

    family = "gru"
    blocks = ("update", "reset", "candidate")
    gradient_kernel = GRUKernel

    def __init__(self, units, reset_after=True, **kwargs):
        super().__init__(units, **kwargs)
        self.reset_after = bool(reset_after)

    def build_extra(self):
        if self.reset_after:
            self.recurrent_bias = self.add_weight(
                shape=(self.units,), initializer=self.bias_initializer, name="recurrent_bias"
            )

    def read_step_weights(self, batch_like=None):
        weights = super().read_step_weights(batch_like)
        if not self.reset_after:
            # Two products per step (the second one needs r): slice U once, here.
            u = weights.pop("recurrent_kernel")
            weights["recurrent_kernel_zr"] = u[:, : 2 * self.units]
            weights["recurrent_kernel_h"] = u[:, 2 * self.units :]
        return weights

    @property
    def trace_names(self):
        return ("update", "reset", "state", "state_tanh")

    def forward(self, z_x, states, w, dm):
        h = states[0]
        hm = drop(h, dm)
        x_z, x_r, x_h = ops.split(z_x, 3, axis=-1)
        values = {}
        if self.reset_after:
            u_z, u_r, u_h = ops.split(ops.matmul(hm, w["recurrent_kernel"]), 3, axis=-1)
            z = ops.sigmoid(x_z + u_z)
            r = ops.sigmoid(x_r + u_r)
            q = values["recurrent_candidate"] = u_h + w["recurrent_bias"]
            g = ops.tanh(x_h + r * q)
        else:
            u_z, u_r = ops.split(ops.matmul(hm, w["recurrent_kernel_zr"]), 2, axis=-1)
            z = ops.sigmoid(x_z + u_z)
            r = ops.sigmoid(x_r + u_r)
            g = ops.tanh(x_h + ops.matmul(r * hm, w["recurrent_kernel_h"]))
        h_new = z * h + (1.0 - z) * g
        values.update(update=z, reset=r, state=h_new, state_tanh=g)
        return h_new, [h_new], values

    def get_config(self):
        return {**super().get_config(), "reset_after": self.reset_after}


CELL = GRUVariantCell
