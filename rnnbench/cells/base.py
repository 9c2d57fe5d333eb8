"""The base of rnnbench's own cells (`impl=custom`): `SpecCell`, in `keras.ops`.

A cell computes one step and a layer (`rnnbench.cells.custom.CustomRecurrent`) runs
the loop, as in Keras. The cell of each family is in its module of
`rnnbench.cells.families` (the protocol a family follows is written there).

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
"""

from __future__ import annotations

import contextlib

import keras
from keras import ops

#: Registers a class for `.keras` loading under `rnnbench>ClassName`, a name that does
#: not depend on the module the class lives in.
register = keras.saving.register_keras_serializable(package="rnnbench")


def drop(h, dm):
    """`h` as it enters a recurrent product: times the recurrent dropout mask `dm`, if any."""
    return h if dm is None else h * dm


class SpecCell(keras.layers.Layer):
    """Base class of rnnbench's cells: fused weights, dropout masks, projection.

    Subclasses set `blocks` (names of the fused kernel blocks, in order), `family`
    (the registry's `CellSpec.family`), `gradient_kernel` (their hand-written gradient, a
    `rnnbench.cells.bptt_kernels.Kernel` subclass, or None) and `recurrent` (False: no
    fused recurrent kernel is created), and implement `forward`, the one forward step
    (`step` and the kernel both call it); a family with a parallel-over-time form also
    defines `scan`. The layer running the cell calls `project` once on the whole
    sequence, then runs the loop inside `looping` (dropout mask and weights drawn and read
    once), calling the cell once per step. See `rnnbench.cells.families`.

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
    family: str = ""
    #: The hand-written gradient (a `Kernel` subclass), or None: autodiff. (Not `kernel`:
    #: that is the input kernel's weight.)
    gradient_kernel = None
    #: Whether the cell has a fused recurrent kernel `U` (`n × k·n`).
    recurrent = True
    #: `scan(projected, initial_state, mask, *, return_sequences)`: every step at once
    #: (families with a parallel-over-time form), or None.
    scan = None

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
        if self.recurrent:
            self.recurrent_kernel = self.add_weight(
                shape=(n, k * n), initializer=self.recurrent_initializer,
                name="recurrent_kernel"
            )
        self.bias = self.add_weight(
            shape=(k * n,), initializer=self.fused_bias_initializer(), name="bias"
        )
        self.build_extra()

    def build_extra(self):
        """Creates the weights a subclass has beyond kernel, recurrent kernel, bias."""

    # -- what the layer calls ----------------------------------------------------
    def project(self, sequences, training=False, bias=True):
        """Input side of every gate for all steps: `(B, T, d) -> (B, T, k·n)`.

        Applies the input dropout mask (the same for every step) in training. With
        `bias=False` the fused bias is left out (the hand-written gradient adds it
        inside its loop, where the addition costs no pass over the whole tensor).
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
        z = ops.matmul(flat, ops.cast(self.kernel, dtype))
        if bias:
            z = z + ops.cast(self.bias, dtype)
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
        """Returns `(h', new_states, values)`: `forward` with the loop's weights and
        recurrent dropout mask."""
        return self.forward(z_x, states, self.step_weights(), self.recurrent_mask)

    def forward(self, z_x, states, w, dm):
        """The one forward step of the cell, implemented by each family.

        Args:
            z_x: the projected input of the step, `(B, k·n)`, bias included.
            states: the list of states, `h` first.
            w: the weights of the step by variable name (`read_step_weights()`); only
                these are read, never a variable.
            dm: the recurrent dropout mask `(B, n)`, or None.

        Returns:
            `(h', new_states, values)`: `values` maps every name of `trace_names`, and
            whatever the family's kernel keeps for its backward pass, to `(B, n)`
            tensors.
        """
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
