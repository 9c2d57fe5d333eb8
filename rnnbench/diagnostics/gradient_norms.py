"""Gradient norms before clipping, recorded inside the compiled train step.

:func:`recording` turns any Keras optimizer class into one that, on every step and
before it clips, adds the global gradient norm and the norm of each layer's gradients
to a few non-trainable optimizer variables (sum and maximum over the steps of the
epoch, steps seen, steps that clipping changed, non-finite steps). Nothing leaves the
device during training; a callback reads the variables once per epoch
(:meth:`GradientStatsMixin.gradient_stats`) and resets them. Because the statistics are
ordinary optimizer variables updated with ``keras.ops``, this works with
``jit_compile=True`` and on every backend (the JAX trainer returns optimizer variables
from its stateless step, so they must be optimizer variables).

A layer is the first component of a variable's path (``rnn_0/lstm_cell/kernel`` →
``rnn_0``; ``bi_rnn_0/forward_rnn_0/…`` → ``bi_rnn_0``).
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
from keras import ops

_COUNT_NAMES = ("finite_steps", "clipped_steps", "nonfinite_steps")


def layer_of(variable: Any) -> str:
    """The model layer a trainable variable belongs to: the first part of its path."""
    path = getattr(variable, "path", None) or getattr(variable, "name", "")
    return str(path).split("/")[0]


def _squared_norm(grad: Any) -> Any:
    """Sum of squares of a gradient in float32; TF ``IndexedSlices`` are summed per
    row first so that repeated indices count as they do in the dense gradient."""
    if hasattr(grad, "indices") and hasattr(grad, "dense_shape"):
        import tensorflow as tf

        unique, position = tf.unique(grad.indices)
        rows = tf.math.unsorted_segment_sum(grad.values, position, tf.shape(unique)[0])
        return ops.sum(ops.square(ops.cast(rows, "float32")))
    return ops.sum(ops.square(ops.cast(grad, "float32")))


def _max_abs(grad: Any) -> Any:
    values = grad.values if hasattr(grad, "indices") else grad
    return ops.max(ops.abs(ops.cast(values, "float32")))


class GradientStatsMixin:
    """Optimizer mixin that records gradient norms before clipping.

    Use :func:`recording` to combine it with an optimizer class; the result takes the
    same arguments and clips exactly as the original. The statistics are
    non-trainable optimizer variables, updated in the compiled train step.
    """

    def build(self, variables: list) -> None:
        super().build(variables)
        layers: list[str] = []
        for v in variables:
            if layer_of(v) not in layers:
                layers.append(layer_of(v))
        self.gradient_layers = layers
        self._gradient_group = [layers.index(layer_of(v)) for v in variables]
        size = len(layers) + 1  # entry 0: the global norm
        agg = "only_first_replica"
        self.gradient_norm_sum = self.add_variable(
            (size,), dtype="float32", aggregation=agg, name="gradient_norm_sum")
        self.gradient_norm_max = self.add_variable(
            (size,), dtype="float32", aggregation=agg, name="gradient_norm_max")
        self.gradient_step_counts = self.add_variable(
            (len(_COUNT_NAMES),), dtype="float32", aggregation=agg,
            name="gradient_step_counts")
        self.gradient_nonfinite_total = self.add_variable(
            (), dtype="float32", aggregation=agg, name="gradient_nonfinite_total")
        self.gradient_first_nonfinite = self.add_variable(
            (), initializer=keras.initializers.Constant(-1.0), dtype="float32",
            aggregation=agg, name="gradient_first_nonfinite")

    def _record_gradient_norms(self, grads: list, trainable_variables: list) -> None:
        n_groups = len(self.gradient_layers)
        per_group: list[list[Any]] = [[] for _ in range(n_groups)]
        var_norms_sq = []
        for grad, var in zip(grads, trainable_variables):
            sq = _squared_norm(grad)
            var_norms_sq.append(sq)
            per_group[self._gradient_group[self._get_variable_index(var)]].append(sq)
        zero = ops.zeros((), "float32")
        group_sq = [ops.sum(ops.stack(g)) if g else zero for g in per_group]
        global_sq = ops.sum(ops.stack(group_sq))
        norms = ops.sqrt(ops.stack([global_sq, *group_sq]))
        finite = ops.isfinite(norms[0])
        safe = ops.where(finite, norms, ops.zeros_like(norms))
        clipped = ops.logical_and(finite, self._clipping_changes(norms[0], var_norms_sq,
                                                                 grads))
        as_float = lambda b: ops.cast(b, "float32")  # noqa: E731
        counts = ops.stack([as_float(finite), as_float(clipped),
                            as_float(ops.logical_not(finite))])
        self.gradient_norm_sum.assign(self.gradient_norm_sum.value + safe)
        self.gradient_norm_max.assign(ops.maximum(self.gradient_norm_max.value, safe))
        self.gradient_step_counts.assign(self.gradient_step_counts.value + counts)
        self.gradient_nonfinite_total.assign(self.gradient_nonfinite_total.value + counts[2])
        first = self.gradient_first_nonfinite.value
        self.gradient_first_nonfinite.assign(ops.where(
            ops.logical_and(first < 0, ops.logical_not(finite)),
            ops.cast(self._iterations.value, "float32"), first))

    def _clipping_changes(self, global_norm: Any, var_norms_sq: list, grads: list) -> Any:
        """Whether this step's clipping (as configured) changes the gradients."""
        if self.global_clipnorm and self.global_clipnorm > 0:
            return global_norm > self.global_clipnorm
        if self.clipnorm and self.clipnorm > 0:
            return ops.any(ops.sqrt(ops.stack(var_norms_sq)) > self.clipnorm)
        if self.clipvalue and self.clipvalue > 0:
            return ops.any(ops.stack([_max_abs(g) for g in grads]) > self.clipvalue)
        return ops.zeros((), "bool")

    def _backend_apply_gradients(self, grads: list, trainable_variables: list) -> Any:
        self._record_gradient_norms(grads, trainable_variables)
        return super()._backend_apply_gradients(grads, trainable_variables)

    # -- read by callbacks, outside the train step ------------------------------------
    @property
    def clips(self) -> bool:
        return any(bool(c) and c > 0 for c in (self.global_clipnorm, self.clipnorm,
                                                self.clipvalue))

    def gradient_stats(self) -> dict[str, float]:
        """This epoch's statistics as ``grad_norm/…`` metrics (means over the finite
        steps, maxima, the fraction of steps clipping changed). Empty before any step."""
        if not getattr(self, "built", False) or not hasattr(self, "gradient_norm_sum"):
            return {}
        sums = np.asarray(keras.ops.convert_to_numpy(self.gradient_norm_sum.value))
        maxs = np.asarray(keras.ops.convert_to_numpy(self.gradient_norm_max.value))
        finite, clipped, nonfinite = (
            float(c) for c in keras.ops.convert_to_numpy(self.gradient_step_counts.value))
        out: dict[str, float] = {}
        if finite > 0:
            for i, name in enumerate(["global", *self.gradient_layers]):
                out[f"grad_norm/{name}_mean"] = float(sums[i]) / finite
                out[f"grad_norm/{name}_max"] = float(maxs[i])
        steps = finite + nonfinite
        if steps > 0 and self.clips:
            out["grad_norm/clipped_fraction"] = clipped / steps
        if nonfinite > 0:
            out["grad_norm/nonfinite_steps"] = nonfinite
        return {k: v for k, v in out.items() if math.isfinite(v)}

    def reset_gradient_stats(self) -> None:
        """Zero the per-epoch statistics (the run's non-finite total is kept)."""
        if hasattr(self, "gradient_norm_sum"):
            for var in (self.gradient_norm_sum, self.gradient_norm_max,
                        self.gradient_step_counts):
                var.assign(ops.zeros(var.shape, "float32"))

    def first_nonfinite_iteration(self) -> int:
        """The optimizer iteration (0-based count of steps applied before it) of the
        run's first step with a non-finite gradient; −1 when there was none."""
        if not hasattr(self, "gradient_first_nonfinite"):
            return -1
        return int(keras.ops.convert_to_numpy(self.gradient_first_nonfinite.value))

    def nonfinite_gradient_steps(self) -> int:
        """Steps of the whole run whose gradient was NaN or infinite."""
        if not hasattr(self, "gradient_nonfinite_total"):
            return 0
        return int(keras.ops.convert_to_numpy(self.gradient_nonfinite_total.value))


_RECORDING: dict[type, type] = {}


def recording(optimizer_cls: type) -> type:
    """The subclass of ``optimizer_cls`` that records gradient norms before clipping.

    Args:
        optimizer_cls: a Keras optimizer class, e.g. ``keras.optimizers.Adam``.

    Returns:
        A registered (serializable as ``rnnbench>GradientStats<Name>``) subclass with
        the same constructor, e.g. ``recording(keras.optimizers.Adam)(1e-3,
        global_clipnorm=1.0)``.
    """
    if issubclass(optimizer_cls, GradientStatsMixin):
        return optimizer_cls
    if optimizer_cls not in _RECORDING:
        name = f"GradientStats{optimizer_cls.__name__}"
        cls = type(name, (GradientStatsMixin, optimizer_cls), {
            "__doc__": f"{optimizer_cls.__name__} that records gradient norms before "
                       "clipping (see rnnbench.diagnostics.gradient_norms).",
            "__module__": __name__,
        })
        _RECORDING[optimizer_cls] = keras.saving.register_keras_serializable(
            package="rnnbench", name=name)(cls)
    return _RECORDING[optimizer_cls]


def recorder_of(optimizer: Any) -> GradientStatsMixin | None:
    """The recording optimizer behind ``optimizer`` (unwrapping a LossScaleOptimizer),
    or None when gradient norms are not recorded."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    return inner if isinstance(inner, GradientStatsMixin) else None


# Register the project's optimizers at import, so that a saved model loads after
# ``import rnnbench.diagnostics``.
for _cls in (keras.optimizers.Adam, keras.optimizers.AdamW, keras.optimizers.Nadam,
             keras.optimizers.RMSprop, keras.optimizers.SGD):
    recording(_cls)
