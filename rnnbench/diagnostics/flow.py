"""Gradient flow through time.

For each example ``b`` of the probe batch, ``L_b`` is the task's loss at the example's
own last real step ``T_b`` (for sequence-to-sequence tasks, the loss of that step only).
The real steps are those the model's mask leaves in (when it has one) and, when the
task pads without a mask, those before the example's length as the task gives it
(``lengths``); a step is real when both say so. ``x_{b,t}`` is the input of the first
recurrent layer at step ``t`` (for token tasks, the embedding output). The profile is

    g(k) = mean over b of ‖∂L_b / ∂x_{b, T_b − k}‖₂,     k = 0, 1, …

the mean over the examples of the per-example Euclidean norm over the features, at lag
``k`` before the last real step ``T_b`` (``k = 0`` is that step itself). With variable
lengths the profiles are aligned on ``k``, and the mean at lag ``k`` runs over the
examples that have a real step there: ``FlowProfile.examples[k]`` says how many (it
falls below the batch size beyond the shortest example's length).
In the notation ``g(t)``, ``t = T − k``: ``g(T)`` is ``g(k=0)``, ``g(1)`` the largest lag.

All gradients of one probe batch come from one backward pass: the per-example losses
are summed, and no example's loss depends on another example's inputs.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import keras
import numpy as np
from keras import ops


#: Backends the gradient flow is implemented for.
FLOW_BACKENDS = ("tensorflow", "jax")


def first_recurrent_layer(model: keras.Model) -> keras.layers.Layer:
    """The first layer named ``rnn_0`` or ``bi_rnn_0`` (see ``rnnbench.model``)."""
    for name in ("rnn_0", "bi_rnn_0"):
        try:
            return model.get_layer(name)
        except ValueError:
            continue
    raise ValueError(f"model {model.name} has no recurrent layer named rnn_0 or bi_rnn_0")


def per_example_loss(loss: Any) -> Callable[[Any, Any], Any]:
    """An unreduced loss function ``fn(y_true, y_pred)`` from what ``Task.loss()`` returns
    (a name, a function or a ``keras.losses.Loss``)."""
    fn = keras.losses.get(loss) if isinstance(loss, (str, dict)) else loss
    if isinstance(fn, keras.losses.Loss):
        return fn.call
    if not callable(fn):
        raise TypeError(f"cannot use {loss!r} as a loss")
    return fn


def valid_steps(lengths: Any | None, batch: int, steps: int) -> np.ndarray:
    """``(batch, steps)`` booleans: step ``t`` of example ``b`` is real when ``t <
    lengths[b]`` (every step when ``lengths`` is None)."""
    if lengths is None:
        return np.ones((batch, steps), bool)
    lengths = np.asarray(lengths).reshape(-1)
    if lengths.shape != (batch,):
        raise ValueError(f"lengths has {lengths.shape[0]} values for a batch of {batch}")
    return np.arange(steps)[None, :] < lengths[:, None]


def last_valid_index(mask: Any | None, features: Any) -> Any:
    """Per example, the index of the last step where ``mask`` is true (``T − 1``
    without a mask; −1 for an example with no valid step)."""
    steps = features.shape[1]
    if mask is None:
        return ops.cast(ops.zeros_like(features[:, 0, 0]), "int32") + (steps - 1)
    m = ops.cast(mask, "int32")
    idx = ops.arange(steps, dtype="int32")[None, :]
    return ops.max(ops.where(m > 0, idx, -1), axis=1)


def _take_step(values: Any, index: Any) -> Any:
    """``values[b, index[b], ...]`` for every ``b``."""
    safe = ops.maximum(index, 0)
    shape = [-1, 1] + [1] * (len(values.shape) - 2)
    picked = ops.take_along_axis(values, ops.reshape(safe, shape), axis=1)
    return ops.squeeze(picked, axis=1)


@dataclass
class FlowProfile:
    """One gradient-flow measurement.

    Args:
        g: ``g(k)`` for lags ``k = 0 … K`` (float64, NaN where no example has lag k).
        examples: how many examples contributed to each lag.
    """

    g: np.ndarray
    examples: np.ndarray

    @property
    def max_lag(self) -> int:
        return len(self.g) - 1


def profile_from_norms(norms: np.ndarray, last: np.ndarray,
                       valid: np.ndarray | None = None) -> FlowProfile:
    """Align per-step norms ``(B, T)`` on each example's final step ``last`` ``(B,)``
    and average over the examples at each lag."""
    norms = np.asarray(norms, dtype=np.float64)
    batch, steps = norms.shape
    lags = np.asarray(last)[:, None] - np.arange(steps)[None, :]
    ok = (lags >= 0) & np.isfinite(norms)
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool)
    counts = np.bincount(lags[ok], minlength=steps)
    sums = np.bincount(lags[ok], weights=norms[ok], minlength=steps)
    top = int(np.max(np.nonzero(counts)[0])) if counts.any() else -1
    with np.errstate(invalid="ignore", divide="ignore"):
        g = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return FlowProfile(g=g[: top + 1], examples=counts[: top + 1])


def summarize(profile: FlowProfile, horizon_fraction: float) -> dict[str, float]:
    """The logged summaries of a profile.

    - ``grad_flow/decay_ratio``: ``g(1) / g(T)``, the gradient at the largest lag over
      the gradient at the final step;
    - ``grad_flow/horizon``: the largest lag ``H`` such that ``g(k) ≥
      horizon_fraction · g(T)`` for every ``k ≤ H`` (the number of steps back the
      gradient stays above that fraction; ``T − 1`` when it never falls below);
    - ``grad_flow/final_step_norm``: ``g(T)`` itself.

    Quantities that are undefined (``g(T)`` zero or not finite) are left out.
    """
    g = profile.g
    out: dict[str, float] = {}
    if len(g) == 0 or not math.isfinite(g[0]):
        return out
    out["grad_flow/final_step_norm"] = float(g[0])
    if g[0] <= 0:
        return out
    if math.isfinite(g[-1]):
        out["grad_flow/decay_ratio"] = float(g[-1] / g[0])
    below = ~(np.nan_to_num(g, nan=-np.inf) >= horizon_fraction * g[0])
    out["grad_flow/horizon"] = float(np.argmax(below) - 1 if below.any() else len(g) - 1)
    return out


def _split_at_first_recurrent(model: keras.Model) -> tuple[Any, keras.Model, int]:
    """``(front, back, n_feeds)``: ``front`` maps the model inputs to what the first
    recurrent layer receives (its input, then its mask if any); ``back`` maps those to
    the model outputs. ``front`` is None when the first layer reads a model input."""
    first = first_recurrent_layer(model)
    feeds = keras.tree.flatten(first.input)
    input_ids = {id(t) for t in keras.tree.flatten(model.inputs)}
    front = None
    if not all(id(t) in input_ids for t in feeds):
        front = keras.Model(model.input, feeds, name=f"{model.name}_frontend")
    back = keras.Model(feeds if len(feeds) > 1 else feeds[0], model.output,
                       name=f"{model.name}_from_rnn_0")
    return front, back, len(feeds)


class GradientFlow:
    """Computes the gradient-flow profile of a model on a probe batch.

    Builds one compiled function on first use and reuses it for every later call, as
    long as the probe's shapes stay the same: a TensorFlow graph (XLA when
    ``jit_compile``), or on JAX a ``jax.jit`` function.

    Args:
        model: a functional model whose first recurrent layer is ``rnn_0`` or
            ``bi_rnn_0``.
        loss: the task's loss (``Task.loss()``).
        seq2seq: whether the model outputs one prediction per step.
        jit_compile: compile the TensorFlow graph with XLA.
        extra: optional ``fn(inputs, valid) -> dict`` of more tensors to compute in the
            same compiled call on the model inputs and the ``(B, T)`` real steps given
            by the lengths (e.g. gate statistics).
    """

    def __init__(self, model: keras.Model, loss: Any, *, seq2seq: bool,
                 jit_compile: bool = False,
                 extra: Callable[[Any], dict[str, Any]] | None = None) -> None:
        self.model = model
        self.loss_fn = per_example_loss(loss)
        self.seq2seq = seq2seq
        self.jit_compile = bool(jit_compile)
        self.extra = extra
        self.front, self.back, self.n_feeds = _split_at_first_recurrent(model)
        self._compiled: Callable | None = None

    # -- the computation, written once with keras.ops -----------------------------------
    def _feeds(self, x: Any) -> list:
        if self.front is None:
            return [x] if self.n_feeds == 1 else list(x)
        out = self.front(x, training=False)
        return list(out) if isinstance(out, (list, tuple)) else [out]

    def _loss_sum(self, pred: Any, y: Any, last: Any) -> Any:
        """The sum over the examples of the loss at each one's final step."""
        if isinstance(pred, (list, tuple)):
            pred = pred[0]
        if self.seq2seq:
            pred = _take_step(pred, last)
            y = _take_step(ops.convert_to_tensor(y), last)
        losses = ops.cast(self.loss_fn(y, pred), "float32")
        if len(losses.shape) > 1:
            losses = ops.sum(ops.reshape(losses, (losses.shape[0], -1)), axis=1)
        return ops.sum(losses * ops.cast(last >= 0, "float32"))

    def _back(self, feeds: list) -> Any:
        with warnings.catch_warnings():
            # the features may carry the front's mask; the back model takes the mask
            # as an input of its own, which Keras does not know when it warns
            warnings.filterwarnings("ignore", message=".*does not support masking.*")
            return self.back(feeds if len(feeds) > 1 else feeds[0], training=False)

    @staticmethod
    def _real_steps(mask: Any | None, valid: Any) -> Any:
        """The steps both the model's mask (if any) and the lengths call real."""
        valid = ops.cast(valid, "bool")
        return valid if mask is None else ops.logical_and(ops.cast(mask, "bool"), valid)

    @staticmethod
    def _mask_of(rest: list) -> Any | None:
        for t in rest:
            if len(t.shape) == 2 and "bool" in str(t.dtype):
                return t
        return None

    def _build_tensorflow(self) -> Callable:
        import tensorflow as tf

        def step(x, y, valid):
            feeds = self._feeds(x)
            features, rest = feeds[0], feeds[1:]
            real = self._real_steps(self._mask_of(rest), valid)
            last = last_valid_index(real, features)
            with tf.GradientTape() as tape:
                tape.watch(features)
                total = self._loss_sum(self._back([features, *rest]), y, last)
            grad = tape.gradient(total, features)
            out = {"norms": tf.norm(tf.cast(grad, tf.float32), axis=-1), "last": last,
                   "valid": real}
            if self.extra is not None:
                out.update(self.extra(x, valid))
            return out

        return tf.function(step, jit_compile=self.jit_compile, reduce_retracing=True)

    def _build_jax(self) -> Callable:
        import jax

        front, back = self.front, self.back

        def step(front_vars, back_vars, x, y, valid):
            if front is not None:
                out, _ = front.stateless_call(*front_vars, x, training=False)
                feeds = list(out) if isinstance(out, (list, tuple)) else [out]
            else:
                feeds = [x] if self.n_feeds == 1 else list(x)
            features, rest = feeds[0], feeds[1:]
            real = self._real_steps(self._mask_of(rest), valid)
            last = last_valid_index(real, features)

            def loss_sum(f):
                fs = [f, *rest]
                pred, _ = back.stateless_call(*back_vars, fs if len(fs) > 1 else fs[0],
                                              training=False)
                return self._loss_sum(pred, y, last)

            grad = jax.grad(loss_sum)(features)
            return {"norms": ops.sqrt(ops.sum(ops.square(ops.cast(grad, "float32")), axis=-1)),
                    "last": last, "valid": real}

        fn = jax.jit(step)  # JAX has no graph mode short of jit

        def call(x, y, valid):
            def values(m):
                if m is None:
                    return None
                return ([v.value for v in m.trainable_variables],
                        [v.value for v in m.non_trainable_variables])
            out = fn(values(front), values(back), x, y, valid)
            if self.extra is not None:
                out.update(self.extra(x, valid))
            return out

        return call

    def compute(self, x: Any, y: Any,
                lengths: Any | None = None) -> tuple[FlowProfile, dict[str, np.ndarray]]:
        """The profile on the probe batch ``(x, y)``, and the ``extra`` outputs as NumPy.

        ``lengths``: the real length of each example, for inputs padded at the end
        without a mask (None: every step the model's mask leaves in is real)."""
        if self._compiled is None:
            backend = keras.backend.backend()
            if backend == "tensorflow":
                self._compiled = self._build_tensorflow()
            elif backend == "jax":
                self._compiled = self._build_jax()
            else:
                raise NotImplementedError(
                    f"gradient flow is implemented for the {' and '.join(FLOW_BACKENDS)} "
                    f"backends, not {backend}")
        x_np = x[0] if isinstance(x, (list, tuple)) else x
        valid = valid_steps(lengths, int(np.shape(x_np)[0]), int(np.shape(x_np)[1]))
        out = {k: keras.ops.convert_to_numpy(v)
               for k, v in self._compiled(x, y, valid).items()}
        profile = profile_from_norms(out.pop("norms"), out.pop("last"), out.pop("valid"))
        return profile, out
