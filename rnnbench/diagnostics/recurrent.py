"""Gate statistics and spectral norms of the recurrent layers.

Both read each recurrent layer through its rnnbench twin (``rnnbench.cells.custom_twin``):
the layer itself for ``impl=custom``, a ``CustomRecurrent`` holding the built-in
layer's weights in rnnbench's fused layout otherwise. A bidirectional layer is read as
its two directions, named as Keras names them (``forward_rnn_0``, ``backward_rnn_0``).

Gates, on the probe batch, over every (example, real step, unit), for every recurrent
layer: a step is real when the layer's mask (if the model has one) leaves it in and,
for a task that pads without a mask, when it comes before the example's length (the
padded steps are still run through the layer, as in the model, but not counted):

- ``gates/<layer>/<gate>_mean``: the mean of each gate the cell has: the names come
  from the cell's family (``CellSpec.gates`` in its ``rnnbench/cells/families/<family>_spec.py``,
  the gates its ``trace()`` reports: ``input``, ``forget``, ``output`` for the LSTM family,
  ``update``, ``reset`` for the GRUs, ``forget`` for JANET, none for ``rnn``), each a
  value in [0, 1];
- ``gates/<layer>/<gate>_saturated``: the fraction of gate values below 0.05 or above
  0.95;
- ``gates/<layer>/state_tanh_saturated``: the fraction of ``|tanh(state)| > 0.95``,
  where the "tanh of the state" is what the cell's ``trace()`` calls ``state_tanh``:
  ``tanh(c')`` for the LSTM family, the candidate ``g`` for ``gru``, ``gru_v1`` and
  ``janet``, ``h'`` itself for ``rnn`` (each family says it in its module's docstring).

Spectral norms (largest singular value), of the weights after the epoch:

- ``spectral_norm/<layer>``: the whole fused recurrent kernel ``U`` (``n × k·n``), which
  maps ``h`` to every block's recurrent pre-activation at once; for ``slstm``, whose
  ``R`` is block-diagonal over heads (stored ``(heads, n/heads, 4·n/heads)``), the
  largest of the heads' norms (the norm of the block-diagonal matrix); for ``indrnn``,
  whose recurrent weight is a vector ``u`` (the diagonal matrix ``diag(u)``), ``max |u|``;
  none for a family without a recurrent weight (``lru``, ``mingru``, ``minlstm``,
  ``mlstm``: their gates and state updates do not read ``h`` through a weight);
- ``spectral_norm/<layer>/<block>``: each ``n × n`` block (``input``, ``forget``,
  ``cell``, ``output``; ``update``, ``reset``, ``candidate``; ``z``, ``input``,
  ``forget``, ``output`` for ``slstm``), for cells with more than one block;
- ``spectral_norm/<layer>/gate_recurrence``: the ``3n × 3n`` gate-to-gate matrix of
  ``fgr``.

Eigenvalue moduli, for a cell with a diagonal complex recurrence (``lru``: its
``eigenvalue_moduli()``, ``|λ|`` of every state), of the weights after the epoch:
``eigenvalue_modulus/<layer>/<stat>`` (``min``, ``q10``, ``median``, ``q90``, ``max``
and ``above_0.99``, the fraction of states with ``|λ| > 0.99``): how close the
eigenvalues sit to the unit circle, where a state's memory stops decaying.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from keras import ops

from rnnbench.tracking.schema import Metrics

SATURATION_LOW, SATURATION_HIGH = 0.05, 0.95
TANH_SATURATION = 0.95


@dataclass
class Direction:
    """One recurrent layer (or one direction of a bidirectional one) and its twin.

    Args:
        name: metric name of the layer (``rnn_0``, ``forward_rnn_0``, …).
        layer: the layer in the model.
        twin: the ``CustomRecurrent`` that traces it (the layer itself when custom);
            None when there is none (a built-in layer with other activations than
            tanh and sigmoid): no gate statistics then.
        taps: the indices of the layer's inputs (its sequence, then its mask if any)
            among the outputs of the taps model.
    """

    name: str
    layer: Any
    twin: Any
    taps: tuple[int, ...]

    def sync(self) -> None:
        """Copy the layer's current weights into its twin (built-in layers only).

        Where the twin's weights have the built-in's shapes, one by one, the layouts are
        the same (rnnbench's fused block order is Keras's) and the values are copied
        as they are; otherwise (``GRU`` with ``reset_after``, whose biases are folded)
        ``custom_twin`` maps them again.
        """
        if self.twin is None or self.twin is self.layer:
            return
        src = self.layer.weights
        if [tuple(v.shape) for v in src] != [tuple(v.shape) for v in self.twin.weights]:
            from rnnbench.cells import custom_twin

            src = custom_twin(self.layer).weights
        for dst, value in zip(self.twin.weights, src):
            dst.assign(keras.ops.copy(value.value))  # not the (donated, on JAX) buffer


def spectral_norm(matrix: np.ndarray) -> float:
    """Largest singular value of a 2-D matrix ``A``: the square root of the largest
    eigenvalue of the smaller of ``A Aᵀ`` and ``Aᵀ A`` (in float64; a symmetric
    eigenvalue problem is far cheaper than an SVD of a wide fused kernel)."""
    a = np.asarray(matrix, dtype=np.float64)
    gram = a @ a.T if a.shape[0] <= a.shape[1] else a.T @ a
    return float(np.sqrt(max(np.linalg.eigvalsh(gram)[-1], 0.0)))


def head_spectral_norm(stack: np.ndarray) -> float:
    """Spectral norm of a block-diagonal matrix given as its blocks ``(heads, r, c)``:
    the largest of the blocks' norms."""
    return max(spectral_norm(block) for block in np.asarray(stack))


#: The thresholds of ``eigenvalue_modulus/<layer>/above_<threshold>``.
MODULUS_THRESHOLDS = (0.99,)


def modulus_statistics(moduli: Any) -> dict[str, float]:
    """``{min, q10, median, q90, max, above_0.99}`` of eigenvalue moduli (finite ones;
    empty when there are none)."""
    m = np.asarray(moduli, dtype=np.float64).ravel()
    m = m[np.isfinite(m)]
    if m.size == 0:
        return {}
    q10, median, q90 = np.quantile(m, [0.1, 0.5, 0.9])
    out = {"min": float(m.min()), "q10": float(q10), "median": float(median),
           "q90": float(q90), "max": float(m.max())}
    for threshold in MODULUS_THRESHOLDS:
        out[f"above_{threshold:g}"] = float(np.mean(m > threshold))
    return out


def _masked_mean(values: Any, weight: Any) -> Any:
    return ops.sum(values * weight) / ops.maximum(ops.sum(weight), 1.0)


def gate_statistics(activations: dict[str, Any], mask: Any | None = None) -> dict[str, Any]:
    """In-graph statistics of one layer's traced activations.

    Args:
        activations: what ``CustomRecurrent.trace`` returns, ``(B, T, n)`` tensors.
        mask: optional ``(B, T)`` mask; masked steps are left out.

    Returns:
        ``{"<gate>_mean", "<gate>_saturated", "state_tanh_saturated"}`` as scalar tensors.
    """
    out: dict[str, Any] = {}
    any_value = next(iter(activations.values()))
    weight = ops.ones_like(ops.cast(any_value, "float32"))
    if mask is not None:
        weight = weight * ops.cast(mask, "float32")[:, :, None]
    for name, value in activations.items():
        v = ops.cast(value, "float32")
        if name == "state_tanh":
            out["state_tanh_saturated"] = _masked_mean(
                ops.cast(ops.abs(v) > TANH_SATURATION, "float32"), weight)
        elif name != "state":
            out[f"{name}_mean"] = _masked_mean(v, weight)
            sat = ops.logical_or(v < SATURATION_LOW, v > SATURATION_HIGH)
            out[f"{name}_saturated"] = _masked_mean(ops.cast(sat, "float32"), weight)
    return out


class RecurrentProbe:
    """Gate statistics (on a probe batch) and spectral norms of a model's recurrent layers.

    Args:
        model: a model built by ``rnnbench.model.build_model`` (recurrent layers
            ``rnn_i`` / ``bi_rnn_i``).
    """

    def __init__(self, model: keras.Model) -> None:
        from rnnbench.cells import custom_twin
        from rnnbench.model import recurrent_layers

        self.directions: list[Direction] = []
        # one flat list of tensors: Keras unwraps a one-element output list, so a
        # nested [[x, mask]] (one layer) would come back as [x, mask] and lose the mask
        taps: list[Any] = []
        for layer in recurrent_layers(model):
            feeds = keras.tree.flatten(layer.input)
            at = tuple(range(len(taps), len(taps) + len(feeds)))
            inner = ([layer.forward_layer, layer.backward_layer]
                     if isinstance(layer, keras.layers.Bidirectional) else [layer])
            for sub in inner:
                try:
                    twin = custom_twin(sub)
                except (TypeError, ValueError) as exc:
                    warnings.warn(f"diagnostics: no gate statistics for layer {sub.name}: "
                                  f"{exc}", stacklevel=2)
                    twin = None
                self.directions.append(Direction(sub.name, sub, twin, at))
            taps.extend(feeds)
        self._traced = [d for d in self.directions if d.twin is not None]
        self._taps_model = keras.Model(model.input, taps, name=f"{model.name}_taps") \
            if self._traced else None

    def sync(self) -> None:
        """Bring every twin up to date with the model's weights (call before tracing)."""
        for d in self.directions:
            d.sync()

    def trace_statistics(self, x: Any, valid: Any | None = None) -> dict[str, Any]:
        """Gate statistics of every layer on the model inputs ``x``, as scalar tensors
        named ``gates/<layer>/<stat>``. Traceable (runs inside a compiled function).

        Args:
            x: the model inputs.
            valid: optional ``(B, T)`` booleans, the real steps of inputs padded at the
                end without a mask (see ``flow.valid_steps``); the layer's own mask,
                if any, also applies.
        """
        if self._taps_model is None:
            return {}
        taps = self._taps_model(x, training=False)
        taps = list(taps) if isinstance(taps, (list, tuple)) else [taps]
        out: dict[str, Any] = {}
        for d in self._traced:
            feeds = [taps[i] for i in d.taps]
            mask = next((t for t in feeds[1:]
                         if len(t.shape) == 2 and "bool" in str(t.dtype)), None)
            activations = d.twin.trace(feeds[0], mask=mask)
            real = mask
            if valid is not None:
                valid = ops.cast(valid, "bool")
                real = valid if mask is None else ops.logical_and(ops.cast(mask, "bool"),
                                                                  valid)
            for key, value in gate_statistics(activations, real).items():
                out[f"gates/{d.name}/{key}"] = value
        return out

    def eigenvalue_moduli(self) -> dict[str, float]:
        """``eigenvalue_modulus/<layer>/<stat>`` of every layer whose cell has
        ``eigenvalue_moduli()`` (``lru``), on the current weights."""
        out: dict[str, float] = {}
        for d in self.directions:
            moduli = getattr((d.twin or d.layer).cell, "eigenvalue_moduli", None)
            if not callable(moduli):
                continue
            for stat, value in modulus_statistics(moduli()).items():
                out[f"{Metrics.EIGENVALUE_MODULUS_PREFIX}{d.name}/{stat}"] = value
        return out

    def spectral_norms(self) -> dict[str, float]:
        """``spectral_norm/…`` metrics of the current weights (finite values only)."""
        out: dict[str, float] = {}
        for d in self.directions:
            cell = (d.twin or d.layer).cell
            if getattr(cell, "recurrent_kernel", None) is None:
                diagonal = getattr(cell, "recurrent_weight", None)  # indrnn's u
                if diagonal is not None and len(diagonal.shape) == 1:
                    u = np.abs(np.asarray(keras.ops.convert_to_numpy(diagonal), np.float64))
                    if u.size and np.all(np.isfinite(u)):
                        out[f"spectral_norm/{d.name}"] = float(u.max())
                continue  # no recurrent weight at all
            kernel = np.asarray(keras.ops.convert_to_numpy(cell.recurrent_kernel))
            if not np.all(np.isfinite(kernel)) or kernel.ndim not in (2, 3):
                continue
            heads = kernel if kernel.ndim == 3 else kernel[None]  # slstm: (H, n/H, 4n/H)
            out[f"spectral_norm/{d.name}"] = head_spectral_norm(heads)
            blocks = tuple(getattr(cell, "blocks", ()))
            size = heads.shape[1]
            if len(blocks) > 1 and heads.shape[2] == len(blocks) * size:
                for i, block in enumerate(blocks):
                    out[f"spectral_norm/{d.name}/{block}"] = head_spectral_norm(
                        heads[:, :, i * size:(i + 1) * size])
            extra = getattr(cell, "gate_recurrent_kernel", None)
            if extra is not None:
                value = np.asarray(keras.ops.convert_to_numpy(extra))
                if np.all(np.isfinite(value)):
                    out[f"spectral_norm/{d.name}/gate_recurrence"] = spectral_norm(value)
        return out
