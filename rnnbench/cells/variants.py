"""The cell families of rnnbench's own implementation, one class per family.

`ElmanCell` (`rnn`), `GRUVariantCell` (`gru`, `gru_v1`), `LSTMVariantCell` (`lstm`,
`peephole` and the eight variants of Greff et al. 2017) and `JANETCell` (`janet`).
Which arguments of its family's class make each cell is written in the registry
(`CellSpec.variant`); `make_cell` reads it.

Fused block order, consistent with Keras so its weights load unchanged:

| cell | kernel / recurrent kernel / bias blocks | other weights |
| --- | --- | --- |
| `rnn` | `h` | |
| `lstm`, `np` | `i, f, c, o` | |
| `peephole`, `niaf`, `noaf` | `i, f, c, o` | `peephole_input`, `peephole_forget`, `peephole_output` |
| `nig` | `f, c, o` | `peephole_forget`, `peephole_output` |
| `nfg`, `cifg` | `i, c, o` | `peephole_input`, `peephole_output` |
| `nog` | `i, f, c` | `peephole_input`, `peephole_forget` |
| `fgr` | `i, f, c, o` | peepholes, `gate_recurrent_kernel` (`3n × 3n`: rows the previous `i, f, o`, columns the `i, f, o` they feed) |
| `gru` | `z, r, h` | `recurrent_bias` (`bh2`, n) |
| `gru_v1` | `z, r, h` | |
| `janet` | `f, c` | |

A removed gate has no block and no weights. Keras's `GRU` (reset after) keeps a second
bias for the recurrent side of all three blocks; the spec only has `bh2`, so the update
and reset parts of Keras's recurrent bias fold into `bias` (`custom_twin` does it).

Every cell's `call` takes the *projected* input of one step (`x @ kernel + bias`), not
`x`: the cells are meant to be run by `CustomRecurrent`.
"""

from __future__ import annotations

from keras import ops

from rnnbench.cells.base import SpecCell, register
from rnnbench.cells.initializers import GateBias
from rnnbench.cells.registry import CELL_OPTIONS, CELLS


@register
class ElmanCell(SpecCell):
    """Elman cell: `h' = tanh(W x + U h + b)`.

    Args: those of `SpecCell`.
    """

    family = "rnn"
    blocks = ("h",)

    @property
    def trace_names(self):
        return ("state", "state_tanh")

    def step(self, z_x, states):
        w = self.step_weights()
        h = ops.tanh(z_x + ops.matmul(self.masked(states[0]), w["recurrent_kernel"]))
        return h, [h], {"state": h, "state_tanh": h}


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

    def step(self, z_x, states):
        w = self.step_weights()
        h = states[0]
        hm = self.masked(h)
        x_z, x_r, x_h = ops.split(z_x, 3, axis=-1)
        if self.reset_after:
            u_z, u_r, u_h = ops.split(ops.matmul(hm, w["recurrent_kernel"]), 3, axis=-1)
            z = ops.sigmoid(x_z + u_z)
            r = ops.sigmoid(x_r + u_r)
            g = ops.tanh(x_h + r * (u_h + w["recurrent_bias"]))
        else:
            u_z, u_r = ops.split(ops.matmul(hm, w["recurrent_kernel_zr"]), 2, axis=-1)
            z = ops.sigmoid(x_z + u_z)
            r = ops.sigmoid(x_r + u_r)
            g = ops.tanh(x_h + ops.matmul(r * hm, w["recurrent_kernel_h"]))
        h_new = z * h + (1.0 - z) * g
        return h_new, [h_new], {"update": z, "reset": r, "state": h_new, "state_tanh": g}

    def get_config(self):
        return {**super().get_config(), "reset_after": self.reset_after}


class _ForgetBiasMixin:
    """Forget-gate bias options shared by the LSTM family and JANET."""

    coupled = False

    def fused_bias_initializer(self):
        forget_bias = self.forget_bias
        if forget_bias is None and self.chrono_init is None:
            forget_bias = 1.0
        return GateBias(
            self.blocks,
            base=self.bias_initializer,
            forget_bias=forget_bias,
            chrono_init=self.chrono_init,
            coupled=self.coupled,
            seed=self.seed,
        )


@register
class LSTMVariantCell(_ForgetBiasMixin, SpecCell):
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

    def step(self, z_x, states):
        h, c = states[0], states[1]
        w = self.step_weights()
        z = z_x + ops.matmul(self.masked(h), w["recurrent_kernel"])
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
        activations = {"input": i, "forget": f, "output": o, "state": h_new}
        activations = {k: v for k, v in activations.items() if v is not None}
        activations["state_tanh"] = c_act if self.output_activation == "tanh" else ops.tanh(c_new)
        return h_new, new_states, activations

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


@register
class JANETCell(_ForgetBiasMixin, SpecCell):
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

    def __init__(self, units, forget_bias=None, chrono_init=None, beta=1.0, **kwargs):
        super().__init__(units, **kwargs)
        self.forget_bias = forget_bias
        self.chrono_init = chrono_init
        self.beta = float(beta)

    @property
    def trace_names(self):
        return ("forget", "state", "state_tanh")

    def step(self, z_x, states):
        h = states[0]
        z = z_x + ops.matmul(self.masked(h), self.step_weights()["recurrent_kernel"])
        s, a_c = ops.split(z, 2, axis=-1)
        f = ops.sigmoid(s)
        g = ops.tanh(a_c)
        h_new = f * h + (1.0 - ops.sigmoid(s - self.beta)) * g
        return h_new, [h_new], {"forget": f, "state": h_new, "state_tanh": g}

    def get_config(self):
        return {
            **super().get_config(),
            "forget_bias": self.forget_bias,
            "chrono_init": self.chrono_init,
            "beta": self.beta,
        }


#: rnnbench's cell class of each family (`CellSpec.family`).
FAMILY_CELLS: dict[str, type[SpecCell]] = {
    cls.family: cls for cls in (ElmanCell, GRUVariantCell, LSTMVariantCell, JANETCell)
}


def make_cell(cell, units, **kwargs) -> SpecCell:
    """Builds the cell object of the spec cell named `cell`.

    Args:
        cell: a cell name of `rnnbench.cells.CELLS`.
        units: number of units.
        **kwargs: `SpecCell` arguments, plus `forget_bias` and `chrono_init` for the
            cells that have them (`CellSpec.options`; None values of those two are
            dropped for the others).

    Raises:
        ValueError: unknown cell, or an option set that the cell does not have.
    """
    spec = CELLS.get(cell)
    if spec is None:
        raise ValueError(f"unknown cell {cell!r}")
    for key in CELL_OPTIONS:
        if key not in spec.options:
            if kwargs.get(key) is not None:
                raise ValueError(f"cell {cell!r} has no option {key!r}")
            kwargs.pop(key, None)
    return FAMILY_CELLS[spec.family](units, **spec.variant, **kwargs)
