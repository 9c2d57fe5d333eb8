"""rnnbench's own implementation of every cell of the spec (`impl=custom`), in `keras.ops`.

Layout, chosen for speed (measured with `benchmarks/cells.py`):

- The input side of every gate is one fused kernel (`d × k·n`) plus one fused bias,
  applied to the whole sequence in ONE matrix product before the time loop
  (`CustomRecurrent.inner_loop` calls `cell.project`). The loop only does what depends
  on the previous step: one fused recurrent product `h @ U` (`n × k·n`) and the
  element-wise gate arithmetic. This takes the input products (and, in training,
  their gradients) out of the sequential loop, where Keras's own cells do them step by
  step.
- The weights the step uses are read once, before the loop (`SpecCell.looping`). Read
  inside the loop body, a variable is a new value at every step to TensorFlow's
  gradient, which then stacks a copy of the recurrent kernel per step for the backward
  pass (Keras's LSTM pays this: 100 MB per training step at n=256, T=100).
- The projection is computed time-major, so that no `(B, T, k·n)` tensor is
  transposed; peephole vectors are broadcast to `(B, n)` before the loop, so that
  their gradient is reduced over the batch once rather than at every step.
- The loop itself is Keras's (`keras.layers.RNN`), so masking, `go_backwards`,
  `stateful`, `Bidirectional`, stacking and every backend work as for the built-in
  layers; it compiles under XLA (`jit_compile=True`).

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

Gradient: with `gradient="bptt"` (and `"auto"`) the loop runs with rnnbench's
hand-written backward pass through time (`rnnbench.cells.bptt`), which computes every
weight gradient as one product over all steps; `"autodiff"` differentiates Keras's loop.
Where the hand-written gradient does not apply (`unroll=True`, a backend other than
TensorFlow or JAX) the layer warns and uses autodiff: the numbers are the same.
"""

from __future__ import annotations

import contextlib
import warnings

import keras
from keras import ops

from rnnbench.cells.initializers import GateBias

_register = keras.saving.register_keras_serializable(package="rnnbench")

#: Values of `CustomRecurrent(gradient=...)` (the same as `cell.gradient`).
GRADIENTS = ("auto", "autodiff", "bptt")

#: What each LSTM-family cell changes in `peephole` (or, for lstm/np, the plain LSTM).
LSTM_VARIANTS = {
    "lstm": {"peepholes": False},
    "np": {"peepholes": False},
    "peephole": {},
    "nig": {"input_gate": False},
    "nfg": {"forget_gate": "none"},
    "nog": {"output_gate": False},
    "niaf": {"input_activation": "linear"},
    "noaf": {"output_activation": "linear"},
    "cifg": {"forget_gate": "coupled"},
    "fgr": {"gate_recurrence": True},
}


class SpecCell(keras.layers.Layer):
    """Base class of rnnbench's cells: fused weights, dropout masks, projection.

    Subclasses set `blocks` (names of the fused kernel blocks, in order) and implement
    `step`. The layer running the cell calls `project` once on the whole sequence,
    then runs the loop inside `looping` (dropout mask and weights drawn and read once),
    calling the cell once per step.

    Args:
        units: number of units `n`.
        dropout: rate of input dropout (one mask per sequence, training only).
        recurrent_dropout: rate of dropout on `h` where it enters the recurrent
            products (one mask per sequence, training only).
        kernel_initializer: initialiser of the input kernel (and peepholes).
        recurrent_initializer: initialiser of the recurrent kernels.
        bias_initializer: initialiser of the biases.
        seed: seed of the dropout masks.
    """

    blocks: tuple[str, ...] = ()

    def __init__(
        self,
        units,
        dropout=0.0,
        recurrent_dropout=0.0,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = int(units)
        self.dropout = float(dropout)
        self.recurrent_dropout = float(recurrent_dropout)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.recurrent_initializer = keras.initializers.get(recurrent_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.recurrent_mask = None
        self.loop_weights = None
        self.state_size = self.units
        self.output_size = self.units

    # -- weights -----------------------------------------------------------------
    def fused_bias_initializer(self):
        """Initialiser of the fused bias (overridden by cells with a forget gate)."""
        return self.bias_initializer

    def build(self, input_shape):
        n, k = self.units, len(self.blocks)
        self.kernel = self.add_weight(
            shape=(input_shape[-1], k * n), initializer=self.kernel_initializer, name="kernel"
        )
        self.recurrent_kernel = self.add_weight(
            shape=(n, k * n), initializer=self.recurrent_initializer, name="recurrent_kernel"
        )
        self.bias = self.add_weight(
            shape=(k * n,), initializer=self.fused_bias_initializer(), name="bias"
        )
        self.build_extra()

    def build_extra(self):
        """Creates the weights a subclass has beyond kernel, recurrent kernel, bias."""

    # -- what the layer calls ----------------------------------------------------
    def project(self, sequences, training=False):
        """Input side of every gate for all steps: `(B, T, d) -> (B, T, k·n)`.

        Applies the input dropout mask (the same for every step) in training.
        """
        dtype = self.compute_dtype
        sequences = ops.cast(sequences, dtype)
        if training and self.dropout > 0:
            keep = keras.random.dropout(
                ops.ones_like(sequences[:, 0, :]), self.dropout, seed=self.seed_generator
            )
            sequences = sequences * ops.expand_dims(keep, 1)
        # The product is done in time-major order and handed back batch-major through
        # a transpose: the RNN loop transposes to time-major again, and the two
        # transposes of the (B, T, k·n) tensor cancel out (XLA and Grappler both
        # remove them), where a batch-major product would move it twice in memory.
        shape = ops.shape(sequences)
        flat = ops.reshape(ops.transpose(sequences, (1, 0, 2)), (-1, shape[-1]))
        z = ops.matmul(flat, ops.cast(self.kernel, dtype)) + ops.cast(self.bias, dtype)
        z = ops.reshape(z, (shape[1], shape[0], len(self.blocks) * self.units))
        return ops.transpose(z, (1, 0, 2))

    @contextlib.contextmanager
    def looping(self, h, training=False):
        """Context of one run of the time loop.

        Draws the recurrent dropout mask for the run (training only) and reads the
        weights the step uses once, before the loop. The second point matters for
        speed: a variable read inside the loop body is, to TensorFlow's gradient, a
        new value at every step, and the backward pass then keeps one copy of the
        recurrent kernel per step (`T·n·k·n` floats written and read again).

        Args:
            h: the initial `h`, `(B, n)` (gives the mask's shape).
            training: whether dropout applies.
        """
        if training and self.recurrent_dropout > 0:
            self.recurrent_mask = keras.random.dropout(
                ops.ones_like(h), self.recurrent_dropout, seed=self.seed_generator
            )
        self.loop_weights = self.read_step_weights(batch_like=h)
        try:
            yield
        finally:
            self.recurrent_mask = None
            self.loop_weights = None

    def read_step_weights(self, batch_like=None):
        """The weights `step` uses, as tensors of the compute dtype.

        Args:
            batch_like: optional `(B, n)` tensor; cells may use it to lay weights out
                for the batch once, before the loop.
        """
        dtype = self.compute_dtype
        return {
            w.name: ops.cast(ops.convert_to_tensor(w), dtype)
            for w in self.weights
            if w is not self.kernel and w is not self.bias
        }

    def step_weights(self):
        """The weights for `step`: those read by `looping`, else read now."""
        return self.loop_weights if self.loop_weights is not None else self.read_step_weights()

    def masked(self, h):
        """`h` as it enters the recurrent products (recurrent dropout applied)."""
        return h if self.recurrent_mask is None else h * self.recurrent_mask

    def call(self, inputs, states, training=False, trace=False):
        """One step. `inputs` is the projected input of the step, `(B, k·n)`.

        Returns `(h', new_states)`, or with `trace=True` `(activations, new_states)`
        where `activations` maps `trace_names` to `(B, n)` tensors.
        """
        states = list(states) if isinstance(states, (list, tuple)) else [states]
        h, new_states, activations = self.step(inputs, states)
        return (activations if trace else h), new_states

    def step(self, z_x, states):
        """Returns `(h', new_states, activations)`; implemented by each cell."""
        raise NotImplementedError

    @property
    def trace_names(self) -> tuple[str, ...]:
        """Names of the per-step activations `step` reports."""
        raise NotImplementedError

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "dropout": self.dropout,
            "recurrent_dropout": self.recurrent_dropout,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "recurrent_initializer": keras.initializers.serialize(self.recurrent_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "seed": self.seed,
        }


@_register
class ElmanCell(SpecCell):
    """Elman cell: `h' = tanh(W x + U h + b)`.

    Args: those of `SpecCell`.
    """

    blocks = ("h",)

    @property
    def trace_names(self):
        return ("state", "state_tanh")

    def step(self, z_x, states):
        w = self.step_weights()
        h = ops.tanh(z_x + ops.matmul(self.masked(states[0]), w["recurrent_kernel"]))
        return h, [h], {"state": h, "state_tanh": h}


@_register
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


@_register
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


@_register
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


def make_cell(cell, units, **kwargs) -> SpecCell:
    """Builds the cell object of the spec cell named `cell`.

    Args:
        cell: a cell name of `rnnbench.cells.CELLS`.
        units: number of units.
        **kwargs: `SpecCell` arguments, plus `forget_bias` and `chrono_init` for the
            cells that have them (None values of those two are dropped for others).
    """
    if cell not in LSTM_VARIANTS and cell != "janet":
        for key in ("forget_bias", "chrono_init"):
            if kwargs.get(key) is not None:
                raise ValueError(f"cell {cell!r} has no option {key!r}")
            kwargs.pop(key, None)
    if cell == "rnn":
        return ElmanCell(units, **kwargs)
    if cell in ("gru", "gru_v1"):
        return GRUVariantCell(units, reset_after=cell == "gru", **kwargs)
    if cell == "janet":
        return JANETCell(units, **kwargs)
    if cell in LSTM_VARIANTS:
        return LSTMVariantCell(units, **LSTM_VARIANTS[cell], **kwargs)
    raise ValueError(f"unknown cell {cell!r}")


class _TracingCell(keras.layers.Layer):
    """Runs a built `SpecCell` and outputs its per-step activations, concatenated."""

    def __init__(self, cell, **kwargs):
        super().__init__(dtype=cell.dtype_policy, **kwargs)
        self.inner = cell
        self.state_size = cell.state_size
        self.output_size = len(cell.trace_names) * cell.units

    def build(self, input_shape):
        self.built = True

    def call(self, inputs, states):
        activations, new_states = self.inner(inputs, states, trace=True)
        return ops.concatenate([activations[k] for k in self.inner.trace_names], -1), new_states


@_register
class CustomRecurrent(keras.layers.RNN):
    """One recurrent layer of any cell of the spec, in rnnbench's own implementation.

    The input products of all steps are one matrix product before the loop; the loop
    (Keras's `RNN` loop) does the recurrent product and the gate arithmetic (see the
    module docstring for the fused layout). Works under XLA, inside `Bidirectional`,
    stacked, with masks, and saves to `.keras` files.

    Args:
        cell: name of the cell (a key of `rnnbench.cells.CELLS`).
        units: number of units.
        forget_bias: forget-gate bias for the LSTM family and JANET; None gives 1.0.
        chrono_init: `T_max` of the chrono initialisation, or None.
        dropout: input dropout rate (one mask per sequence, training only).
        recurrent_dropout: recurrent dropout rate (one mask per sequence).
        kernel_initializer: initialiser of the input kernel and peepholes.
            Defaults to `"glorot_uniform"`.
        recurrent_initializer: initialiser of the recurrent kernels.
            Defaults to `"orthogonal"`.
        bias_initializer: initialiser of the biases (before the forget-gate bias).
            Defaults to `"zeros"`.
        seed: seed of the dropout masks.
        return_sequences: whether to return every step's `h` or only the last one.
        return_state: whether to also return the final states.
        go_backwards: whether to run the sequence backwards (outputs reversed, as in
            Keras).
        stateful: whether the final states of a batch are the initial states of the
            next one.
        gradient: `"bptt"` (rnnbench's hand-written backward pass through time),
            `"autodiff"` (the backend's autodiff of the loop) or `"auto"` (bptt where
            it applies). Defaults to `"auto"`. `gradient_ran` says which one the last
            call used.
        **kwargs: other `keras.layers.RNN` arguments (`unroll`, `name`, `dtype`...).

    Example:

    >>> layer = CustomRecurrent("peephole", 32, return_sequences=True)
    >>> y = layer(np.zeros((2, 10, 8), "float32"))   # (2, 10, 32)
    >>> gates = layer.trace(np.zeros((2, 10, 8), "float32"))  # {"input": ..., ...}
    """

    def __init__(
        self,
        cell,
        units,
        forget_bias=None,
        chrono_init=None,
        dropout=0.0,
        recurrent_dropout=0.0,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        seed=None,
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        stateful=False,
        gradient="auto",
        **kwargs,
    ):
        if gradient not in GRADIENTS:
            raise ValueError(f"gradient must be one of {', '.join(GRADIENTS)}: {gradient!r}")
        cell_obj = make_cell(
            cell,
            units,
            forget_bias=forget_bias,
            chrono_init=chrono_init,
            dropout=dropout,
            recurrent_dropout=recurrent_dropout,
            kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer,
            bias_initializer=bias_initializer,
            seed=seed,
            dtype=kwargs.get("dtype"),
            name=f"{cell}_cell",
        )
        super().__init__(
            cell_obj,
            return_sequences=return_sequences,
            return_state=return_state,
            go_backwards=go_backwards,
            stateful=stateful,
            **kwargs,
        )
        self.cell_name = cell
        self.forget_bias = forget_bias
        self.chrono_init = chrono_init
        self.gradient = gradient
        self.gradient_ran = None
        self._fallback_warned = False
        self.input_spec = keras.layers.InputSpec(ndim=3)

    @property
    def units(self):
        return self.cell.units

    def gradient_plan(self) -> tuple[str, str | None]:
        """`(gradient, reason)`: the gradient the next call uses, and why bptt was not
        possible when it was asked for (`gradient="bptt"` or `"auto"`) but cannot run."""
        from rnnbench.cells import bptt

        if self.gradient == "autodiff":
            return "autodiff", None
        backend = keras.backend.backend()
        if backend not in bptt.BACKENDS:
            return "autodiff", f"the {backend} backend (bptt runs on {', '.join(bptt.BACKENDS)})"
        if self.unroll:
            return "autodiff", "unroll=True (bptt runs the loop itself)"
        return "bptt", None

    def inner_loop(self, sequences, initial_state, mask, training=False):
        from rnnbench.cells import bptt

        projected = self.cell.project(sequences, training=training)
        first = initial_state[0] if isinstance(initial_state, (list, tuple)) else initial_state
        gradient, reason = self.gradient_plan()
        if reason is not None and not self._fallback_warned:
            self._fallback_warned = True
            warnings.warn(
                f"layer {self.name!r}: cell.gradient={self.gradient} is not supported with "
                f"{reason}; this layer uses autodiff instead (same numbers, slower training)",
                stacklevel=2,
            )
        self.gradient_ran = gradient
        with self.cell.looping(first, training=training):
            if gradient == "bptt":
                return bptt.run(
                    self.cell,
                    projected,
                    initial_state,
                    mask,
                    go_backwards=self.go_backwards,
                    return_sequences=self.return_sequences,
                    zero_output_for_mask=self.zero_output_for_mask,
                    recurrent_mask=self.cell.recurrent_mask,
                )
            return super().inner_loop(projected, initial_state, mask, training=training)

    def trace(self, inputs, mask=None):
        """Per-step activations of the cell on `inputs` (no dropout, zero initial state).

        Args:
            inputs: `(B, T, d)` tensor.
            mask: optional `(B, T)` boolean mask; at masked steps the values of the
                previous step are repeated (zeros before the first valid step).

        Returns:
            A dict of `(B, T, n)` tensors in the input's time order (also with
            `go_backwards`): each gate the cell has (`input`, `forget`, `output`,
            `update`, `reset`), `state` (h) and `state_tanh` (tanh(c') for the LSTM
            family, the candidate g for gru and janet, h' for rnn).
        """
        inputs = ops.convert_to_tensor(inputs, dtype=self.compute_dtype)
        if not self.built:
            self.build(inputs.shape)
        projected = self.cell.project(inputs, training=False)
        loop = keras.layers.RNN(
            _TracingCell(self.cell), return_sequences=True, go_backwards=self.go_backwards
        )
        with self.cell.looping(projected[:, 0, : self.units]):
            out = loop(projected, mask=mask)
        if self.go_backwards:
            out = ops.flip(out, axis=1)
        names = self.cell.trace_names
        return dict(zip(names, ops.split(out, len(names), axis=-1)))

    def get_config(self):
        config = super().get_config()
        del config["cell"]
        cell = self.cell.get_config()
        config.update(
            cell=self.cell_name,
            units=self.units,
            forget_bias=self.forget_bias,
            chrono_init=self.chrono_init,
            dropout=cell["dropout"],
            recurrent_dropout=cell["recurrent_dropout"],
            kernel_initializer=cell["kernel_initializer"],
            recurrent_initializer=cell["recurrent_initializer"],
            bias_initializer=cell["bias_initializer"],
            seed=cell["seed"],
            gradient=self.gradient,
        )
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)
