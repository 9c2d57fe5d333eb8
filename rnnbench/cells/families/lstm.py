"""The `lstm` family: the LSTM with every option of Greff et al. 2017 ("LSTM: A Search
Space Odyssey"): `lstm`, `peephole` and the eight variants `nig`, `nfg`, `nog`, `niaf`,
`noaf`, `np`, `cifg`, `fgr`.

Equations of the peephole LSTM (every option at its default), for input `x`, previous
states `h`, `c`:

    i  = σ(Wi x + Ui h + pi⊙c + bi)
    f  = σ(Wf x + Uf h + pf⊙c + bf)
    g  = tanh(Wc x + Uc h + bc)
    c' = f⊙c + i⊙g
    o  = σ(Wo x + Uo h + po⊙c' + bo)          (the output gate sees the NEW cell state)
    h' = o⊙tanh(c')

Each variant changes one thing: no input gate (`i = 1`), no forget gate (`f = 1`), no
output gate (`o = 1`), no input activation (`g` linear), no output activation
(`h' = o⊙c'`), no peepholes (`lstm`, `np`), coupled gates (`f = 1 − i`, `cifg`), full
gate recurrence (`fgr`: the gate pre-activations also get `R·[i, f, o]` of the previous
step; the state carries the previous gates, initially zero).

Fused block order, consistent with Keras so its weights load unchanged:

| cell | kernel / recurrent kernel / bias blocks | other weights |
| --- | --- | --- |
| `lstm`, `np` | `i, f, c, o` | |
| `peephole`, `niaf`, `noaf` | `i, f, c, o` | `peephole_input`, `peephole_forget`, `peephole_output` |
| `nig` | `f, c, o` | `peephole_forget`, `peephole_output` |
| `nfg`, `cifg` | `i, c, o` | `peephole_input`, `peephole_output` |
| `nog` | `i, f, c` | `peephole_input`, `peephole_forget` |
| `fgr` | `i, f, c, o` | peepholes, `gate_recurrent_kernel` (`3n × 3n`: rows the previous `i, f, o`, columns the `i, f, o` they feed) |

A removed gate has no block and no weights. Trace: the gates that exist (`forget` also
for `cifg`, where it is `1 − i`), `state` = h', `state_tanh` = tanh(c').
Options: `forget_bias` (initial forget bias, default 1.0; not for `nfg`, which has no
forget gate) and `chrono_init` (`bf = log(u)`, `u ~ U(1, T_max − 1)`, `bi = −bf`).
"""

from __future__ import annotations

from keras import ops

from rnnbench.cells.base import SpecCell, drop, register
from rnnbench.cells.bptt_kernels import Kernel, flat, outer_sum, sig_grad, tanh_grad
from rnnbench.cells.initializers import ForgetBiasMixin

_RES = {"i": "input", "f": "forget", "o": "output", "g": "candidate", "c_new": "cell_state",
        "s": "cell_output"}


class LSTMKernel(Kernel):
    """The LSTM family (`LSTMVariantCell`): every option of `lstm`, `peephole` and the
    Greff et al. variants, blocks in the cell's order (`input, forget, cell, output`
    minus the removed ones)."""

    def __init__(self, cell):
        self.blocks = cell.blocks
        self.input_gate = cell.input_gate
        self.forget = cell.forget_gate  # learned, none, coupled
        self.output_gate = cell.output_gate
        self.peepholes = cell.peepholes
        self.tanh_in = cell.input_activation == "tanh"
        self.tanh_out = cell.output_activation == "tanh"
        self.fgr = cell.gate_recurrence
        # residuals: the gates that exist, g, c', s (= tanh(c') or c')
        short = [
            *(["i"] if self.input_gate else []),
            *(["f"] if self.forget == "learned" else []),
            *(["o"] if self.output_gate else []),
            "g",
            "c_new",
            "s",
        ]
        self.res_names = tuple(_RES[k] for k in short)
        self.short = short
        super().__init__(cell)

    def _split(self, a):
        n = self.n
        return {b: a[..., k * n : (k + 1) * n] for k, b in enumerate(self.blocks)}

    def back(self, d_new, states, res, w, dm):
        n = self.n
        r = dict(zip(self.short, res))
        c = states[1]
        dh, dc_new = d_new[0], d_new[1]
        dgates = {}
        if self.fgr:
            dgates = {"i": d_new[2][:, :n], "f": d_new[2][:, n : 2 * n], "o": d_new[2][:, 2 * n :]}
        o, s = r.get("o"), r["s"]
        ds = dh if o is None else dh * o
        dc_new = dc_new + (ds * tanh_grad(s) if self.tanh_out else ds)
        da = {}
        if self.output_gate:
            do = dh * s
            if "o" in dgates:
                do = do + dgates["o"]
            da["output"] = do * sig_grad(o)
            if self.peepholes:
                dc_new = dc_new + da["output"] * w["peephole_output"]
        i, g = r.get("i"), r["g"]
        dg = dc_new if i is None else dc_new * i
        da["cell"] = dg * tanh_grad(g) if self.tanh_in else dg
        if self.forget == "learned":
            f = r["f"]
            dc = dc_new * f
            df = dc_new * c
            if "f" in dgates:
                df = df + dgates["f"]
            da["forget"] = df * sig_grad(f)
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
            da["input"] = di * sig_grad(i)
            if self.peepholes:
                dc = dc + da["input"] * w["peephole_input"]
        da_all = ops.concatenate([da[b] for b in self.blocks], axis=-1)
        dh_prev = drop(ops.matmul(da_all, w["recurrent_kernel.T"]), dm)
        d_prev = [dh_prev, dc]
        if self.fgr:
            d_ifo = ops.concatenate([da["input"], da["forget"], da["output"]], axis=-1)
            d_prev.append(ops.matmul(d_ifo, w["gate_recurrent_kernel.T"]))
        return da_all, d_prev

    def weight_grads(self, states, res, da, w, dm):
        grads = {"recurrent_kernel": outer_sum(drop(states[0], dm), da)}
        blocks = self._split(da)
        if self.peepholes:
            c_new = res[self.short.index("c_new")]
            for gate in ("input", "forget", "output"):
                if gate in blocks:
                    operand = c_new if gate == "output" else states[1]
                    grads[f"peephole_{gate}"] = ops.sum(flat(blocks[gate] * operand), axis=0)
        if self.fgr:
            d_ifo = ops.concatenate([blocks["input"], blocks["forget"], blocks["output"]], -1)
            grads["gate_recurrent_kernel"] = outer_sum(states[2], d_ifo)
        return grads




@register
class LSTMVariantCell(ForgetBiasMixin, SpecCell):
    """The LSTM family: plain LSTM, peephole LSTM and the Greff et al. 2017 variants.

    With every option at its default this is the peephole LSTM:
    `i = σ(Wi x + Ui h + pi⊙c + bi)`, `f = σ(Wf x + Uf h + pf⊙c + bf)`,
    `g = tanh(Wc x + Uc h + bc)`, `c' = f⊙c + i⊙g`,
    `o = σ(Wo x + Uo h + po⊙c' + bo)` (the output gate sees the NEW cell state),
    `h' = o⊙tanh(c')`.

    Args:
        units: number of units `n`.
        input_gate: False removes the input gate (`i = 1`, `nig`).
        forget_gate: `"learned"`, `"none"` (`f = 1`, `nfg`) or `"coupled"`
            (`f = 1 − i` with no forget weights, `cifg`).
        output_gate: False removes the output gate (`o = 1`, `nog`).
        peepholes: whether the gates that exist have diagonal peepholes
            (False: the plain `lstm`).
        input_activation: `"tanh"` or `"linear"` (`niaf`) for the candidate `g`.
        output_activation: `"tanh"` or `"linear"` (`noaf`) applied to `c'` in `h'`.
        gate_recurrence: True adds `R·[i, f, o]` of the previous step to the gate
            pre-activations (`fgr`); the state then carries the previous gates,
            initially zero.
        forget_bias: initial forget-gate bias; None means 1.0 (unless
            `chrono_init` is set). With `forget_gate="coupled"` the input-gate bias
            is set to its negation, so that `f = 1 − i` starts at `σ(forget_bias)`.
        chrono_init: `T_max` of the chrono initialisation (`bf = log(u)`,
            `u ~ U(1, T_max − 1)`, `bi = −bf`), or None.
        Other arguments: those of `SpecCell`. Peephole weights use
        `kernel_initializer`; `gate_recurrent_kernel` uses `recurrent_initializer`.
    """

    family = "lstm"
    gradient_kernel = LSTMKernel

    def __init__(
        self,
        units,
        input_gate=True,
        forget_gate="learned",
        output_gate=True,
        peepholes=True,
        input_activation="tanh",
        output_activation="tanh",
        gate_recurrence=False,
        forget_bias=None,
        chrono_init=None,
        **kwargs,
    ):
        super().__init__(units, **kwargs)
        if forget_gate not in ("learned", "none", "coupled"):
            raise ValueError(f"forget_gate must be learned, none or coupled: {forget_gate!r}")
        for arg, value in (
            ("input_activation", input_activation),
            ("output_activation", output_activation),
        ):
            if value not in ("tanh", "linear"):
                raise ValueError(f"{arg} must be tanh or linear: {value!r}")
        if gate_recurrence and not (input_gate and output_gate and forget_gate == "learned"):
            raise ValueError("gate_recurrence needs all three gates")
        self.input_gate = bool(input_gate)
        self.forget_gate = forget_gate
        self.output_gate = bool(output_gate)
        self.peepholes = bool(peepholes)
        self.input_activation = input_activation
        self.output_activation = output_activation
        self.gate_recurrence = bool(gate_recurrence)
        self.forget_bias = forget_bias
        self.chrono_init = chrono_init
        self.coupled = forget_gate == "coupled"
        self.blocks = tuple(
            name
            for name, present in (
                ("input", self.input_gate),
                ("forget", forget_gate == "learned"),
                ("cell", True),
                ("output", self.output_gate),
            )
            if present
        )
        self.state_size = [self.units, self.units] + (
            [3 * self.units] if self.gate_recurrence else []
        )

    def build_extra(self):
        # Diagonal peepholes of the gates that exist; a removed gate has none.
        self.peephole_input = self.peephole_forget = self.peephole_output = None
        if self.peepholes:
            for gate in ("input", "forget", "output"):
                if gate in self.blocks:
                    weight = self.add_weight(
                        shape=(self.units,),
                        initializer=self.kernel_initializer,
                        name=f"peephole_{gate}",
                    )
                    setattr(self, f"peephole_{gate}", weight)
        if self.gate_recurrence:
            self.gate_recurrent_kernel = self.add_weight(
                shape=(3 * self.units, 3 * self.units),
                initializer=self.recurrent_initializer,
                name="gate_recurrent_kernel",
            )

    def read_step_weights(self, batch_like=None):
        weights = super().read_step_weights(batch_like)
        if batch_like is not None:
            # Peepholes broadcast to (B, n) before the loop: the step's product with c
            # is then element-wise, and the reduction over the batch of their gradient
            # happens once after the loop instead of at every step.
            shape = ops.shape(batch_like)
            for gate in ("input", "forget", "output"):
                if f"peephole_{gate}" in weights:
                    weights[f"peephole_{gate}"] = ops.broadcast_to(
                        weights[f"peephole_{gate}"], shape
                    )
        return weights

    @property
    def trace_names(self):
        gates = [g for g in ("input", "forget", "output") if g in self.blocks]
        if self.coupled:
            gates.insert(1, "forget")
        return (*gates, "state", "state_tanh")

    def forward(self, z_x, states, w, dm):
        h, c = states[0], states[1]
        z = z_x + ops.matmul(drop(h, dm), w["recurrent_kernel"])
        pre = dict(zip(self.blocks, ops.split(z, len(self.blocks), axis=-1)))
        if self.gate_recurrence:
            r_i, r_f, r_o = ops.split(ops.matmul(states[2], w["gate_recurrent_kernel"]), 3, axis=-1)
            pre["input"] = pre["input"] + r_i
            pre["forget"] = pre["forget"] + r_f
            pre["output"] = pre["output"] + r_o
        p_i, p_f, p_o = (w.get(f"peephole_{g}") for g in ("input", "forget", "output"))

        i = f = o = None
        if self.input_gate:
            i = ops.sigmoid(pre["input"] if p_i is None else pre["input"] + p_i * c)
        if self.forget_gate == "learned":
            f = ops.sigmoid(pre["forget"] if p_f is None else pre["forget"] + p_f * c)
        elif self.forget_gate == "coupled":
            f = 1.0 - i
        g = ops.tanh(pre["cell"]) if self.input_activation == "tanh" else pre["cell"]

        c_new = (c if f is None else f * c) + (g if i is None else i * g)
        if self.output_gate:
            o = ops.sigmoid(pre["output"] if p_o is None else pre["output"] + p_o * c_new)
        c_act = ops.tanh(c_new) if self.output_activation == "tanh" else c_new
        h_new = c_act if o is None else o * c_act

        new_states = [h_new, c_new]
        if self.gate_recurrence:
            new_states.append(ops.concatenate([i, f, o], axis=-1))
        values = {"input": i, "forget": f, "output": o, "state": h_new}
        values = {k: v for k, v in values.items() if v is not None}
        values["state_tanh"] = c_act if self.output_activation == "tanh" else ops.tanh(c_new)
        values.update(candidate=g, cell_state=c_new, cell_output=c_act)
        return h_new, new_states, values

    def get_config(self):
        return {
            **super().get_config(),
            "input_gate": self.input_gate,
            "forget_gate": self.forget_gate,
            "output_gate": self.output_gate,
            "peepholes": self.peepholes,
            "input_activation": self.input_activation,
            "output_activation": self.output_activation,
            "gate_recurrence": self.gate_recurrence,
            "forget_bias": self.forget_bias,
            "chrono_init": self.chrono_init,
        }


CELL = LSTMVariantCell
