"""Gradient norms before clipping, recorded inside the compiled train step.

:class:`GradientNormRecorder` attaches to a compiled model's optimizer. On every step,
before the optimizer clips, it adds the global gradient norm and the norm of each
layer's gradients to a few non-trainable variables (sum and maximum over the steps of
the epoch, steps seen, steps that clipping changed, non-finite steps, the iteration of
the first non-finite step). Nothing leaves the device during training; a callback reads
the variables once per epoch (:meth:`GradientNormRecorder.gradient_stats`) and resets
them.

How it attaches: the optimizer stays the Keras optimizer it was (so a saved
``model.keras`` is an ordinary Keras model that loads anywhere); the recorder wraps that
one instance's ``_backend_apply_gradients`` (the step that clips, then updates) and adds
its variables to the optimizer's own variables, because the JAX trainer carries only
the optimizer's variables through its stateless train step. Those variables are left
out of what the optimizer saves and loads. Everything is ``keras.ops``, so the step
compiles with ``jit_compile=True`` on TensorFlow and JAX.

A layer is the first component of a variable's path (``rnn_0/lstm_cell/kernel`` →
``rnn_0``; ``bi_rnn_0/forward_rnn_0/…`` → ``bi_rnn_0``). Under a distribution strategy
the norms are those of the first replica's gradients before they are summed.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import Any

import keras
import numpy as np
from keras import ops

_ATTRIBUTE = "_rnnbench_gradient_recorder"


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


def _inner(optimizer: Any) -> Any:
    """The optimizer that clips and updates (a LossScaleOptimizer's inner one)."""
    return getattr(optimizer, "inner_optimizer", optimizer)


class GradientNormRecorder:
    """Records the gradient norms of a model's train steps, before clipping.

    Use :func:`attach`. The optimizer keeps its class, its arguments and its clipping;
    under ``LossScaleOptimizer`` (mixed_float16) the inner optimizer is used, which
    sees the unscaled gradients of the steps that are applied.

    Args:
        optimizer: the model's compiled optimizer; built here if it is not yet (as
            ``fit`` would), so that the recorder's variables come after its own.
        variables: the trainable variables it updates (``model.trainable_variables``).
        scope: a context manager to create the variables in (a distribution
            strategy's scope), or None.
    """

    def __init__(self, optimizer: Any, variables: list, scope: Any = None) -> None:
        self.optimizer = _inner(optimizer)
        layers: list[str] = []
        for v in variables:
            if layer_of(v) not in layers:
                layers.append(layer_of(v))
        self.layers = layers
        self._group = {id(v): layers.index(layer_of(v)) for v in variables}
        with scope if scope is not None else contextlib.nullcontext():
            if not optimizer.built:
                optimizer.build(variables)
            self._make_variables(len(layers) + 1)  # entry 0: the global norm
        self._own = [self.norm_sum, self.norm_max, self.counts, self.nonfinite_total,
                     self.first_nonfinite]
        self._wrap()

    def _make_variables(self, size: int) -> None:
        def make(shape, name, value=0.0):
            return keras.Variable(np.full(shape, value, "float32"), trainable=False,
                                  dtype="float32", name=name,
                                  aggregation="only_first_replica")

        self.norm_sum = make((size,), "gradient_norm_sum")
        self.norm_max = make((size,), "gradient_norm_max")
        self.counts = make((3,), "gradient_step_counts")  # finite, clipped, non-finite
        self.nonfinite_total = make((), "gradient_nonfinite_total")
        self.first_nonfinite = make((), "gradient_first_nonfinite", -1.0)

    def _wrap(self) -> None:
        opt = self.optimizer
        apply = opt._backend_apply_gradients
        own = {id(v) for v in self._own}
        for v in self._own:
            opt._track_variable(v)

        def _backend_apply_gradients(grads: list, trainable_variables: list) -> Any:
            self.record(grads, trainable_variables)
            return apply(grads, trainable_variables)

        # The optimizer saves and loads exactly what it would without the recorder
        # (Keras's own two methods, over its variables less the recorder's).
        def saved_variables() -> list:
            return [v for v in opt.variables if id(v) not in own]

        def save_own_variables(store: Any) -> None:
            for i, variable in enumerate(saved_variables()):
                store[str(i)] = variable.numpy()

        def load_own_variables(store: Any) -> None:
            variables = saved_variables()
            if len(store.keys()) != len(variables):
                warnings.warn(f"Skipping variable loading for optimizer '{opt.name}', "
                              f"because it has {len(variables)} variables whereas the "
                              f"saved optimizer has {len(store.keys())} variables.",
                              stacklevel=2)
                return
            for i, variable in enumerate(variables):
                variable.assign(store[str(i)])

        opt._backend_apply_gradients = _backend_apply_gradients
        opt.save_own_variables = save_own_variables
        opt.load_own_variables = load_own_variables
        setattr(opt, _ATTRIBUTE, self)

    # -- inside the train step ----------------------------------------------------------
    def record(self, grads: list, trainable_variables: list) -> None:
        """Add one step's gradient norms to the statistics (traced into the step)."""
        per_group: list[list[Any]] = [[] for _ in self.layers]
        var_norms_sq = []
        for grad, var in zip(grads, trainable_variables):
            sq = _squared_norm(grad)
            var_norms_sq.append(sq)
            group = self._group.get(id(var))
            if group is not None:
                per_group[group].append(sq)
        zero = ops.zeros((), "float32")
        group_sq = [ops.sum(ops.stack(g)) if g else zero for g in per_group]
        norms = ops.sqrt(ops.stack([ops.sum(ops.stack(var_norms_sq)), *group_sq]))
        finite = ops.isfinite(norms[0])
        safe = ops.where(finite, norms, ops.zeros_like(norms))
        clipped = ops.logical_and(finite, self._clipping_changes(norms[0], var_norms_sq,
                                                                 grads))
        as_float = lambda b: ops.cast(b, "float32")  # noqa: E731
        counts = ops.stack([as_float(finite), as_float(clipped),
                            as_float(ops.logical_not(finite))])
        self.norm_sum.assign(self.norm_sum.value + safe)
        self.norm_max.assign(ops.maximum(self.norm_max.value, safe))
        self.counts.assign(self.counts.value + counts)
        self.nonfinite_total.assign(self.nonfinite_total.value + counts[2])
        first = self.first_nonfinite.value
        self.first_nonfinite.assign(ops.where(
            ops.logical_and(first < 0, ops.logical_not(finite)),
            ops.cast(self.optimizer._iterations.value, "float32"), first))

    def _clipping_changes(self, global_norm: Any, var_norms_sq: list, grads: list) -> Any:
        """Whether this step's clipping, as the optimizer is configured, changes the
        gradients (Keras scales by ``min(1, clip / norm)``)."""
        opt = self.optimizer
        if opt.global_clipnorm and opt.global_clipnorm > 0:
            return global_norm > opt.global_clipnorm
        if opt.clipnorm and opt.clipnorm > 0:
            return ops.any(ops.sqrt(ops.stack(var_norms_sq)) > opt.clipnorm)
        if opt.clipvalue and opt.clipvalue > 0:
            return ops.any(ops.stack([_max_abs(g) for g in grads]) > opt.clipvalue)
        return ops.zeros((), "bool")

    # -- read by callbacks, outside the train step ---------------------------------------
    @property
    def clips(self) -> bool:
        opt = self.optimizer
        return any(bool(c) and c > 0 for c in (opt.global_clipnorm, opt.clipnorm,
                                                opt.clipvalue))

    def gradient_stats(self) -> dict[str, float]:
        """The statistics since the last reset as ``grad_norm/…`` metrics: for
        ``global`` and each layer ``<name>_mean`` (over the finite steps) and
        ``<name>_max``; ``clipped_fraction`` (of all steps, when the optimizer clips);
        ``nonfinite_steps`` (when there were any). Empty before any step."""
        sums = np.asarray(ops.convert_to_numpy(self.norm_sum.value))
        maxs = np.asarray(ops.convert_to_numpy(self.norm_max.value))
        finite, clipped, nonfinite = (float(c) for c in
                                      ops.convert_to_numpy(self.counts.value))
        out: dict[str, float] = {}
        if finite > 0:
            for i, name in enumerate(["global", *self.layers]):
                out[f"grad_norm/{name}_mean"] = float(sums[i]) / finite
                out[f"grad_norm/{name}_max"] = float(maxs[i])
        steps = finite + nonfinite
        if steps > 0 and self.clips:
            out["grad_norm/clipped_fraction"] = clipped / steps
        if nonfinite > 0:
            out["grad_norm/nonfinite_steps"] = nonfinite
        return {k: v for k, v in out.items() if math.isfinite(v)}

    def reset(self) -> None:
        """Zero the per-epoch statistics (the run's non-finite record is kept)."""
        for var in (self.norm_sum, self.norm_max, self.counts):
            var.assign(np.zeros(var.shape, "float32"))

    def nonfinite_steps(self) -> int:
        """Steps of the whole run whose gradient was NaN or infinite."""
        return int(ops.convert_to_numpy(self.nonfinite_total.value))

    def first_nonfinite_iteration(self) -> int:
        """The optimizer iteration (the count of steps applied before it) of the run's
        first step with a non-finite gradient; −1 when there was none."""
        return int(ops.convert_to_numpy(self.first_nonfinite.value))

    def iterations(self) -> int:
        """The optimizer's step count now."""
        return int(ops.convert_to_numpy(self.optimizer._iterations.value))


def attach(model: keras.Model) -> GradientNormRecorder:
    """Record gradient norms in ``model``'s train steps (call after ``compile``, before
    ``fit``); returns the recorder (the same one if already attached)."""
    existing = recorder_of(model.optimizer)
    if existing is not None:
        return existing
    strategy = getattr(model, "distribute_strategy", None)
    scope = strategy.scope() if strategy is not None and hasattr(strategy, "scope") else None
    return GradientNormRecorder(model.optimizer, list(model.trainable_variables), scope)


def recorder_of(optimizer: Any) -> GradientNormRecorder | None:
    """The recorder attached to ``optimizer`` (or to its inner optimizer), or None."""
    if optimizer is None:
        return None
    return getattr(_inner(optimizer), _ATTRIBUTE, None)
