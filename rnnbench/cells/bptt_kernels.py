"""The per-cell half of the hand-written backward pass (`rnnbench.cells.bptt`).

One kernel per cell family (`CellSpec.family`) knows that family's step split into its
linear and element-wise parts: `step` (forward, returning what the backward pass needs),
`back` (the per-step gradient: the pre-activations' `dA` and the previous state's
gradient, derived by hand) and `weight_grads` (the batched weight gradients from the
stacked per-step values). Weights are given as a dict of tensors named as the cell's
variables; `name.T` is the transpose the reverse loop multiplies by.

The loops that drive the kernels, and the TensorFlow and JAX wrappers, are in
`rnnbench.cells.bptt`.
"""

from __future__ import annotations

from keras import ops


def _sig_grad(s):
    return s * (1.0 - s)


def _tanh_grad(t):
    return 1.0 - t * t


def _flat(a):
    """`(T, B, w) -> (T·B, w)`."""
    return ops.reshape(a, (-1, ops.shape(a)[-1]))


def _outer_sum(a, b):
    """`Σ_t a_tᵀ·b_t` as one product on `(T·B)`-row matrices."""
    return ops.matmul(ops.transpose(_flat(a)), _flat(b))


def _apply_dm(h, dm):
    return h if dm is None else h * dm


class _ElmanKernel:
    """`h' = tanh(A)`, `A = zx + hm·U`."""

    def __init__(self, cell):
        self.n = cell.units
        self.state_widths = [self.n]
        self.res_widths = [self.n]  # h'
        self.da_width = self.n

    def step(self, zx, states, w, dm):
        h_new = ops.tanh(zx + ops.matmul(_apply_dm(states[0], dm), w["recurrent_kernel"]))
        return [h_new], h_new, [h_new]

    def back(self, d_new, states, res, w, dm):
        da = d_new[0] * _tanh_grad(res[0])
        dh = _apply_dm(ops.matmul(da, w["recurrent_kernel.T"]), dm)
        return da, [dh]

    def weight_grads(self, states, res, da, w, dm):
        return {"recurrent_kernel": _outer_sum(_apply_dm(states[0], dm), da)}


class _GRUKernel:
    """`gru` (reset after) and `gru_v1` (reset before), blocks `z, r, h`."""

    def __init__(self, cell):
        self.n = cell.units
        self.reset_after = cell.reset_after
        self.state_widths = [self.n]
        # z, r, g, and for reset-after q = Uh·h + bh2
        self.res_widths = [self.n] * (4 if self.reset_after else 3)
        self.da_width = 3 * self.n

    def step(self, zx, states, w, dm):
        n, h = self.n, states[0]
        hm = _apply_dm(h, dm)
        if self.reset_after:
            rec = ops.matmul(hm, w["recurrent_kernel"])
            a_zr = zx[:, : 2 * n] + rec[:, : 2 * n]
            z, r = ops.sigmoid(a_zr[:, :n]), ops.sigmoid(a_zr[:, n:])
            q = rec[:, 2 * n :] + w["recurrent_bias"]
            g = ops.tanh(zx[:, 2 * n :] + r * q)
            res = [z, r, g, q]
        else:
            a_zr = zx[:, : 2 * n] + ops.matmul(hm, w["recurrent_kernel_zr"])
            z, r = ops.sigmoid(a_zr[:, :n]), ops.sigmoid(a_zr[:, n:])
            g = ops.tanh(zx[:, 2 * n :] + ops.matmul(r * hm, w["recurrent_kernel_h"]))
            res = [z, r, g]
        h_new = z * h + (1.0 - z) * g
        return [h_new], h_new, res

    def back(self, d_new, states, res, w, dm):
        dh_new, h = d_new[0], states[0]
        z, r, g = res[0], res[1], res[2]
        da_g = dh_new * (1.0 - z) * _tanh_grad(g)
        da_z = dh_new * (h - g) * _sig_grad(z)
        if self.reset_after:
            da_r = da_g * res[3] * _sig_grad(r)
            d_rec = ops.concatenate([da_z, da_r, da_g * r], axis=-1)
            dh_rec = ops.matmul(d_rec, w["recurrent_kernel.T"])
        else:
            d_rh = ops.matmul(da_g, w["recurrent_kernel_h.T"])
            da_r = d_rh * _apply_dm(h, dm) * _sig_grad(r)
            d_zr = ops.concatenate([da_z, da_r], axis=-1)
            dh_rec = ops.matmul(d_zr, w["recurrent_kernel_zr.T"]) + d_rh * r
        da = ops.concatenate([da_z, da_r, da_g], axis=-1)
        return da, [dh_new * z + _apply_dm(dh_rec, dm)]

    def weight_grads(self, states, res, da, w, dm):
        n = self.n
        hm = _apply_dm(states[0], dm)
        r = res[1]
        if self.reset_after:
            dq = da[..., 2 * n :] * r
            d_rec = ops.concatenate([da[..., : 2 * n], dq], axis=-1)
            return {
                "recurrent_kernel": _outer_sum(hm, d_rec),
                "recurrent_bias": ops.sum(_flat(dq), axis=0),
            }
        return {
            "recurrent_kernel_zr": _outer_sum(hm, da[..., : 2 * n]),
            "recurrent_kernel_h": _outer_sum(r * hm, da[..., 2 * n :]),
        }


class _LSTMKernel:
    """The LSTM family (`LSTMVariantCell`): every option of `lstm`, `peephole` and the
    Greff et al. variants, blocks in the cell's order (`input, forget, cell, output`
    minus the removed ones)."""

    def __init__(self, cell):
        n = self.n = cell.units
        self.blocks = cell.blocks
        self.input_gate = cell.input_gate
        self.forget = cell.forget_gate  # learned, none, coupled
        self.output_gate = cell.output_gate
        self.peepholes = cell.peepholes
        self.tanh_in = cell.input_activation == "tanh"
        self.tanh_out = cell.output_activation == "tanh"
        self.fgr = cell.gate_recurrence
        self.state_widths = [n, n] + ([3 * n] if self.fgr else [])
        # residuals: the gates that exist, g, c', s (= tanh(c') or c')
        self.res_names = [
            *(["i"] if self.input_gate else []),
            *(["f"] if self.forget == "learned" else []),
            *(["o"] if self.output_gate else []),
            "g",
            "c_new",
            "s",
        ]
        self.res_widths = [n] * len(self.res_names)
        self.da_width = len(self.blocks) * n

    def _split(self, a):
        n = self.n
        return {b: a[..., k * n : (k + 1) * n] for k, b in enumerate(self.blocks)}

    def step(self, zx, states, w, dm):
        h, c = states[0], states[1]
        pre = self._split(zx + ops.matmul(_apply_dm(h, dm), w["recurrent_kernel"]))
        if self.fgr:
            gr = ops.matmul(states[2], w["gate_recurrent_kernel"])
            n = self.n
            pre["input"] = pre["input"] + gr[:, :n]
            pre["forget"] = pre["forget"] + gr[:, n : 2 * n]
            pre["output"] = pre["output"] + gr[:, 2 * n :]
        p = {g: w.get(f"peephole_{g}") for g in ("input", "forget", "output")}
        res = {}
        i = f = o = None
        if self.input_gate:
            a_i = pre["input"] if p["input"] is None else pre["input"] + p["input"] * c
            i = res["i"] = ops.sigmoid(a_i)
        if self.forget == "learned":
            a_f = pre["forget"] if p["forget"] is None else pre["forget"] + p["forget"] * c
            f = res["f"] = ops.sigmoid(a_f)
        elif self.forget == "coupled":
            f = 1.0 - i
        g = res["g"] = ops.tanh(pre["cell"]) if self.tanh_in else pre["cell"]
        c_new = res["c_new"] = (c if f is None else f * c) + (g if i is None else i * g)
        if self.output_gate:
            a_o = pre["output"] if p["output"] is None else pre["output"] + p["output"] * c_new
            o = res["o"] = ops.sigmoid(a_o)
        s = res["s"] = ops.tanh(c_new) if self.tanh_out else c_new
        h_new = s if o is None else o * s
        new = [h_new, c_new]
        if self.fgr:
            new.append(ops.concatenate([i, f, o], axis=-1))
        return new, h_new, [res[k] for k in self.res_names]

    def back(self, d_new, states, res, w, dm):
        n = self.n
        r = dict(zip(self.res_names, res))
        c = states[1]
        dh, dc_new = d_new[0], d_new[1]
        dgates = {}
        if self.fgr:
            dgates = {"i": d_new[2][:, :n], "f": d_new[2][:, n : 2 * n], "o": d_new[2][:, 2 * n :]}
        o, s = r.get("o"), r["s"]
        ds = dh if o is None else dh * o
        dc_new = dc_new + (ds * _tanh_grad(s) if self.tanh_out else ds)
        da = {}
        if self.output_gate:
            do = dh * s
            if "o" in dgates:
                do = do + dgates["o"]
            da["output"] = do * _sig_grad(o)
            if self.peepholes:
                dc_new = dc_new + da["output"] * w["peephole_output"]
        i, g = r.get("i"), r["g"]
        dg = dc_new if i is None else dc_new * i
        da["cell"] = dg * _tanh_grad(g) if self.tanh_in else dg
        if self.forget == "learned":
            f = r["f"]
            dc = dc_new * f
            df = dc_new * c
            if "f" in dgates:
                df = df + dgates["f"]
            da["forget"] = df * _sig_grad(f)
            if self.peepholes:
                dc = dc + da["forget"] * w["peephole_forget"]
        elif self.forget == "coupled":
            dc = dc_new * (1.0 - i)
        else:
            dc = dc_new
        if self.input_gate:
            di = dc_new * g
            if self.forget == "coupled":
                di = di - dc_new * c  # f = 1 - i
            if "i" in dgates:
                di = di + dgates["i"]
            da["input"] = di * _sig_grad(i)
            if self.peepholes:
                dc = dc + da["input"] * w["peephole_input"]
        da_all = ops.concatenate([da[b] for b in self.blocks], axis=-1)
        dh_prev = _apply_dm(ops.matmul(da_all, w["recurrent_kernel.T"]), dm)
        d_prev = [dh_prev, dc]
        if self.fgr:
            d_ifo = ops.concatenate([da["input"], da["forget"], da["output"]], axis=-1)
            d_prev.append(ops.matmul(d_ifo, w["gate_recurrent_kernel.T"]))
        return da_all, d_prev

    def weight_grads(self, states, res, da, w, dm):
        grads = {"recurrent_kernel": _outer_sum(_apply_dm(states[0], dm), da)}
        blocks = self._split(da)
        if self.peepholes:
            c_new = res[self.res_names.index("c_new")]
            for gate in ("input", "forget", "output"):
                if gate in blocks:
                    operand = c_new if gate == "output" else states[1]
                    grads[f"peephole_{gate}"] = ops.sum(_flat(blocks[gate] * operand), axis=0)
        if self.fgr:
            d_ifo = ops.concatenate([blocks["input"], blocks["forget"], blocks["output"]], -1)
            grads["gate_recurrent_kernel"] = _outer_sum(states[2], d_ifo)
        return grads


class _JANETKernel:
    """`h' = σ(s)⊙h + (1 − σ(s − β))⊙tanh(a_c)`, blocks `f, c`."""

    def __init__(self, cell):
        self.n = cell.units
        self.beta = cell.beta
        self.state_widths = [self.n]
        self.res_widths = [self.n] * 3  # f, σ(s − β), g
        self.da_width = 2 * self.n

    def step(self, zx, states, w, dm):
        n, h = self.n, states[0]
        a = zx + ops.matmul(_apply_dm(h, dm), w["recurrent_kernel"])
        s = a[:, :n]
        f, f2, g = ops.sigmoid(s), ops.sigmoid(s - self.beta), ops.tanh(a[:, n:])
        h_new = f * h + (1.0 - f2) * g
        return [h_new], h_new, [f, f2, g]

    def back(self, d_new, states, res, w, dm):
        dh, h = d_new[0], states[0]
        f, f2, g = res
        da_s = dh * (h * _sig_grad(f) - g * _sig_grad(f2))
        da_c = dh * (1.0 - f2) * _tanh_grad(g)
        da = ops.concatenate([da_s, da_c], axis=-1)
        dh_rec = ops.matmul(da, w["recurrent_kernel.T"])
        return da, [dh * f + _apply_dm(dh_rec, dm)]

    def weight_grads(self, states, res, da, w, dm):
        return {"recurrent_kernel": _outer_sum(_apply_dm(states[0], dm), da)}


#: The kernel of each cell family.
KERNELS = {"rnn": _ElmanKernel, "gru": _GRUKernel, "lstm": _LSTMKernel, "janet": _JANETKernel}


def kernel_for(cell):
    """The gradient kernel of a built `SpecCell`, chosen by its `family`."""
    kernel = KERNELS.get(getattr(cell, "family", None))
    if kernel is None:
        raise TypeError(f"no hand-written gradient for {type(cell).__name__}")
    return kernel(cell)
