"""What a run really ran on, read back from the compiled model, and what to tell the user
when the hardware refuses something while it runs.

:func:`what_ran` reads from the model itself: the device its weights live on, whether
Keras compiles the train step with XLA (it may turn it off after it was asked for),
and for every recurrent layer whether cuDNN runs it (the rules are in
:mod:`rnnbench.cudnn`). Those become the run's MLflow tags. A backend that cannot run
an op deterministically raises an error that :func:`determinism_message` turns into
one line naming the op.
"""

from __future__ import annotations

import re
from typing import Any

from rnnbench import cudnn
from rnnbench.tracking.schema import EnvTags, Tags

# What TensorFlow says when an op cannot honour op determinism.
_DETERMINISM_MARKERS = ("determinism is enabled", "determinism is not yet supported")


def _model_masked(model: Any) -> bool:
    import keras

    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.Masking) or getattr(layer, "mask_zero", False):
            return True
    return False


def _placement(model: Any, hw: Any) -> str:
    """The device the model's first weight lives on, as the backend names it."""
    if hw.strategy is not None:
        return ",".join(hw.devices_used)
    if not model.weights:
        return hw.device
    value = model.weights[0].value
    if hw.backend == "jax":
        return ",".join(sorted(str(d) for d in value.devices()))
    return str(value.device)


def what_ran(model: Any, hw: Any, what: dict[str, Any],
             batch_size: int) -> dict[str, str]:
    """The MLflow tags that say what a compiled model runs on, read from the model.

    Adds ``cudnn`` and ``cudnn_reason`` to each layer of ``what["layers"]`` (the
    description from ``rnnbench.model.describe_model``).

    Args:
        model: the compiled model.
        hw: the :class:`~rnnbench.hardware.devices.HardwareInfo` of the run.
        what: ``describe_model(model)``.
        batch_size: ``train.batch_size``, the global batch.
    """
    import keras

    tags = hw.tags()
    jit = bool(model.jit_compile)  # after compile: what Keras really does
    tags[Tags.XLA] = "on" if jit else "off"
    if hw.xla_request == "on" and not jit:
        hw.notes.append("hardware.xla=on, but Keras compiled without XLA: the model has a "
                        "layer that XLA cannot compile (a cuDNN LSTM/GRU on TensorFlow)")
        tags[EnvTags.HARDWARE_NOTES] = " | ".join(hw.notes)
    tags[EnvTags.DEVICE] = _placement(model, hw)
    tags[Tags.GLOBAL_BATCH_SIZE] = str(batch_size)
    tags[Tags.REPLICA_BATCH_SIZE] = f"{batch_size / hw.replicas:g}"
    try:
        lr = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
        tags[Tags.EFFECTIVE_LR] = f"{lr:.6g}"
    except (AttributeError, TypeError, ValueError):
        pass  # a schedule, or no optimizer yet

    masked = _model_masked(model)
    by_name = {layer.name: layer for layer in model.layers}
    ran = []
    for name, desc in what.get("layers", {}).items():
        layer = by_name.get(name)
        if layer is None or not isinstance(layer, keras.layers.Layer):
            continue
        used, reason = cudnn.layer_cudnn(layer, hw.backend, hw.device_type, masked)
        desc["cudnn"] = used
        desc["cudnn_reason"] = reason
        tags[Tags.CUDNN_LAYER_PREFIX + name] = str(used).lower()
        ran.append(used)
    tags[Tags.CUDNN] = str(bool(ran) and all(ran)).lower()
    tags[Tags.CUDNN_LAYERS] = f"{sum(ran)}/{len(ran)}"
    return tags


# ---- determinism errors -----------------------------------------------------------------

def is_determinism_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a backend's refusal to run an op deterministically."""
    text = str(exc).lower()
    return any(marker in text for marker in _DETERMINISM_MARKERS)


def determinism_message(exc: BaseException, hw: Any) -> str:
    """A user-facing message for a determinism refusal, naming the op and its source."""
    text = str(exc)
    node = None
    for pattern in (r"Detected at node '?([^\s']+?)'? defined at", r"\{\{node ([^}]+)\}\}",
                    r"\[Op:(?!__inference)(\w+)\]", r'"(\w+)" cannot be called'):
        match = re.search(pattern, text)
        if match:
            node = match.group(1)
            break
    op = node.rsplit("/", 1)[-1] if node else "an op"
    where = f" (node {node})" if node and "/" in node else ""
    frames = re.findall(r'File "([^"]+)", line (\d+), in (\S+)', text)
    if frames:
        where += f", created at {frames[-1][0]}:{frames[-1][1]} in {frames[-1][2]}()"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    reason = next((line for line in lines
                   if any(marker in line.lower() for marker in _DETERMINISM_MARKERS)),
                  lines[0] if lines else type(exc).__name__)
    reason = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", reason)
    reason = re.sub(r"\s*\[\[.*$|\s*\[Op:.*$", "", reason).rstrip(".")
    return (
        f"hardware.deterministic=true, but {op}{where} has no deterministic implementation "
        f"on {hw.backend} ({hw.device}): {reason}. Use hardware.deterministic=false (the run "
        "then repeats only up to floating-point reduction order), or remove that op from "
        "the model, its metrics and callbacks."
    )
