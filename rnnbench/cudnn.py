"""Whether cuDNN runs a recurrent layer: everything the project knows about it.

Keras (3.15) decides per layer, each time the layer runs, and never says which path it
took. This module makes the same decision from the layer's own arguments, so that a
run can record it. Keras's steps, in its order:

1. The layer (``keras/src/layers/rnn/lstm.py``, ``gru.py``, ``inner_loop``) tries the
   fast path only when ``use_cudnn`` is ``"auto"`` or True and ``recurrent_dropout`` is 0.
2. The backend's ``lstm``/``gru`` (``keras/src/backend/<backend>/rnn.py``) takes it only
   when its ``cudnn_ok`` holds: activation tanh, recurrent activation sigmoid (Keras's
   function, ``keras.ops``'s, or the backend's own), ``unroll=False``, ``use_bias=True``,
   for a GRU also ``reset_after=True``, and a GPU is there.
3. Each backend refuses what its kernel cannot do:

   | backend | LSTM | GRU | masks |
   | --- | --- | --- | --- |
   | tensorflow | cuDNN | cuDNN | right-padded only (checked while it runs) |
   | jax | cuDNN (``jax.experimental.rnn``) | never (``lax.scan``) | no cuDNN |
   | torch | cuDNN | cuDNN | no cuDNN |

With ``use_cudnn="auto"`` a refusal falls back to the generic loop silently; with
``use_cudnn=True`` it raises. On TensorFlow a layer that can take the cuDNN path turns
XLA off for the whole model (``supports_jit = False``).

Two questions are answered here: whether a layer's arguments qualify
(:func:`arguments_ok`, known when the model is built: the ``cudnn_eligible`` tag), and
whether cuDNN runs the layer in a given run (:func:`layer_cudnn`, which adds the
backend, the device and masks: the ``cudnn.<layer>`` tags). rnnbench's own cells never
run on cuDNN. Keras is imported only when a layer is looked at.
"""

from __future__ import annotations

import sys
from typing import Any

# The built-in layers each backend has a cuDNN kernel for.
CUDNN_LAYERS = {"tensorflow": ("LSTM", "GRU"), "jax": ("LSTM",), "torch": ("LSTM", "GRU")}
# Backends whose cuDNN path refuses masks (TensorFlow takes right-padded masks).
NO_MASK_BACKENDS = ("jax", "torch")
# The backend's own functions that its cudnn_ok accepts besides Keras's (the module, and
# its tanh and sigmoid; JAX's cudnn_ok takes jnp.tanh but no JAX sigmoid).
_NATIVE = {"tensorflow": ("tensorflow", "tanh", "sigmoid"),
           "jax": ("jax.numpy", "tanh", None),
           "torch": ("torch", "tanh", "sigmoid")}


def _native(backend: str, name: str | None) -> tuple[Any, ...]:
    """The backend's own ``name`` function, if that backend is loaded (a layer can only
    hold a function of a module that was imported)."""
    module_name, tanh, sigmoid = _NATIVE.get(backend, (None, None, None))
    module = sys.modules.get(module_name) if module_name else None
    attr = {"tanh": tanh, "sigmoid": sigmoid}[name] if name else None
    fn = getattr(module, attr, None) if module is not None and attr else None
    return (fn,) if fn is not None else ()


def _argument_faults(layer: Any, backend: str) -> list[str]:
    """Why Keras would not take the cuDNN path for ``layer``'s arguments (steps 1 and 2
    of the module docstring, without the GPU); empty when they qualify."""
    import keras

    if not isinstance(layer, (keras.layers.LSTM, keras.layers.GRU)):
        return [f"{type(layer).__name__} is not a Keras LSTM/GRU layer "
                "(only those have a cuDNN kernel)"]
    cell = layer.cell
    faults = []
    if getattr(layer, "use_cudnn", "auto") is False:
        faults.append("use_cudnn=False")
    if cell.recurrent_dropout:
        faults.append("recurrent_dropout > 0")
    tanh = (keras.activations.tanh, keras.ops.tanh, *_native(backend, "tanh"))
    sigmoid = (keras.activations.sigmoid, keras.ops.sigmoid, *_native(backend, "sigmoid"))
    if cell.activation not in tanh:
        faults.append("activation is not tanh")
    if cell.recurrent_activation not in sigmoid:
        faults.append("recurrent_activation is not sigmoid")
    if layer.unroll:
        faults.append("unroll=True")
    if not cell.use_bias:
        faults.append("use_bias=False")
    if isinstance(layer, keras.layers.GRU) and not cell.reset_after:
        faults.append("reset_after=False")
    return faults


def _inner_layers(layer: Any) -> list[Any]:
    import keras

    if isinstance(layer, keras.layers.Bidirectional):
        return [layer.forward_layer, layer.backward_layer]
    return [layer]


def arguments_ok(layer: Any, backend: str | None = None) -> bool:
    """Whether ``layer``'s arguments let Keras run it on cuDNN, given a GPU.

    Args:
        layer: a recurrent layer, or a ``keras.layers.Bidirectional`` wrapping one (both
            directions must qualify).
        backend: the Keras backend whose rules apply; the running one by default.
    """
    import keras

    backend = backend or keras.backend.backend()
    return not any(_argument_faults(inner, backend) for inner in _inner_layers(layer))


def layer_cudnn(layer: Any, backend: str, device_type: str, masked: bool) -> tuple[bool, str]:
    """Whether cuDNN runs ``layer`` in a run, and why not when it does not.

    Args:
        layer: a recurrent layer of the model (possibly wrapped in Bidirectional).
        backend: the Keras backend of the run.
        device_type: ``cpu`` or ``gpu``, what the run computes on.
        masked: whether the model feeds masks to its recurrent layers.

    Returns:
        ``(True, "cuDNN")``, or False and the first reason, in Keras's order of checks.
    """
    for inner in _inner_layers(layer):
        kind = type(inner).__name__
        faults = _argument_faults(inner, backend)
        if faults and "not a Keras LSTM/GRU" in faults[0]:
            return False, faults[0]
        if device_type != "gpu":
            return False, "the run is on the CPU"
        if kind not in CUDNN_LAYERS.get(backend, ()):
            return False, f"Keras's {backend} backend has no cuDNN kernel for {kind}"
        if faults:
            return False, "; ".join(faults)
        if masked and backend in NO_MASK_BACKENDS:
            return False, f"masked inputs: the {backend} cuDNN path takes no mask"
    return True, "cuDNN"
