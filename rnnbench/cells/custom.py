"""`CustomRecurrent`: one recurrent layer of any cell, in rnnbench's own implementation.

The layer runs the loop; the cell (its family's class, `rnnbench.cells.families`, on the
base `rnnbench.cells.base.SpecCell`) computes one step. The input products of all steps are
one matrix product before the loop (`SpecCell.project`); the loop is Keras's
(`keras.layers.RNN`), so masking, `go_backwards`, `stateful`, `Bidirectional`, stacking
and every backend work as for the built-in layers. `CustomRecurrent.trace` runs the
same cell through a tracing cell that outputs every gate's activation at every step.

Gradient: with `gradient="bptt"` (and `"auto"`, for a family with a hand-written
gradient) the loop runs with rnnbench's hand-written backward pass through time
(`rnnbench.cells.bptt`), which computes every weight gradient as one product over all
steps; `"autodiff"` differentiates Keras's loop (or the family's parallel `scan`, where it
has one). Where the hand-written gradient does not apply (`unroll=True`, a backend other
than TensorFlow or JAX) the layer warns and uses autodiff: the numbers are the same.

Importing this module registers every cell class and the layer for `.keras` loading.
"""

from __future__ import annotations

import warnings

import keras
from keras import ops

from rnnbench.cells import bptt
from rnnbench.cells.base import register
from rnnbench.cells.registry import CELLS, FAMILY_SPECS, OPTIONS, kernel_families
from rnnbench.cells.settings import GRADIENTS
from rnnbench.cells.variants import load_all, make_cell

load_all()  # every family's cell class, registered for .keras loading


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


@register
class CustomRecurrent(keras.layers.RNN):
    """One recurrent layer of any cell of the spec, in rnnbench's own implementation.

    The input products of all steps are one matrix product before the loop; the loop
    (Keras's `RNN` loop) does the recurrent product and the gate arithmetic (the fused
    layout is in `rnnbench.cells.variants`). Works under XLA, inside `Bidirectional`,
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
        gradient: `"bptt"` (rnnbench's hand-written backward pass through time, for the
            families that have one), `"autodiff"` (the backend's autodiff of the loop) or
            `"auto"` (bptt where it applies). Defaults to `"auto"`. `gradient_ran` says
            which one the last call used.
        **kwargs: the options of the cell's family (e.g. `r_min=0.5`; see
            `rnnbench.cells.registry.OPTIONS`), and other `keras.layers.RNN` arguments
            (`unroll`, `name`, `dtype`...).

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
        options = {key: kwargs.pop(key) for key in list(kwargs) if key in OPTIONS}
        spec = CELLS.get(cell)
        if gradient == "bptt" and spec is not None and not FAMILY_SPECS[spec.family].kernel:
            raise ValueError(
                f"cell {cell!r} (family {spec.family}) has no hand-written gradient, so "
                f"gradient='bptt' is not possible; families with one: "
                f"{', '.join(kernel_families())} (use gradient='auto' or 'autodiff')")
        cell_obj = make_cell(
            cell,
            units,
            forget_bias=forget_bias,
            chrono_init=chrono_init,
            **options,
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
        self.cell_options = options
        self.gradient = gradient
        self.gradient_ran = None
        self.form_ran = None  # "scan" (the family's parallel form) or "step", once called
        self._fallback_warned = False
        self.input_spec = keras.layers.InputSpec(ndim=3)

    @property
    def units(self):
        return self.cell.units

    def gradient_plan(self) -> tuple[str, str | None]:
        """`(gradient, reason)`: the gradient the next call uses, and why bptt was not
        possible when it was asked for (`gradient="bptt"` or `"auto"`) but cannot run."""
        if self.gradient == "autodiff" or self.cell.gradient_kernel is None:
            return "autodiff", None  # a family without a kernel: gradient=bptt is refused
        backend = keras.backend.backend()
        if backend not in bptt.BACKENDS:
            return "autodiff", f"the {backend} backend (bptt runs on {', '.join(bptt.BACKENDS)})"
        if self.unroll:
            return "autodiff", "unroll=True (bptt runs the loop itself)"
        return "bptt", None

    def inner_loop(self, sequences, initial_state, mask, training=False):
        first = initial_state[0] if isinstance(initial_state, (list, tuple)) else initial_state
        gradient, reason = self.gradient_plan()
        # bptt adds the bias in its loop (see rnnbench.cells.bptt)
        projected = self.cell.project(sequences, training=training, bias=gradient != "bptt")
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
                self.form_ran = "step"
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
            if self.cell.scan is not None and not self.unroll:
                result = self._scan(projected, initial_state, mask)
                if result is not None:
                    self.form_ran = "scan"
                    return result
            self.form_ran = "step"
            return super().inner_loop(projected, initial_state, mask, training=training)

    def _scan(self, projected, initial_state, mask):
        """The family's parallel form, in Keras's `go_backwards` order, or None."""
        states = list(initial_state) if isinstance(initial_state, (list, tuple)) else [
            initial_state]
        if self.go_backwards:
            projected = ops.flip(projected, axis=1)
            mask = None if mask is None else ops.flip(mask, axis=1)
        return self.cell.scan(projected, states, mask, return_sequences=self.return_sequences,
                              zero_output_for_mask=bool(self.zero_output_for_mask))

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
            **self.cell_options,
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
