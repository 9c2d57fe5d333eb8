"""A trained model as an MLflow model (used by :mod:`rnnbench.tracking`).

The model is saved with MLflow's Keras flavour (``mlflow.keras``: ``data/model.keras``).
Its ``python_function`` flavour names this module as its loader and wraps the task's own
pre- and post-processing (``serving.json``): a forecaster takes raw windows in the
series' units and returns forecasts in those units; a classifier or language model
returns probabilities (softmax of its logits; the chorales' 88 keys, sigmoid). The
rnnbench package travels with the model (``code/rnnbench``, MLflow's ``code_paths``),
so ``mlflow.pyfunc.load_model("runs:/<run id>/model")`` works where only the model's
requirements (Keras, its backend, NumPy, all from the package index) are installed.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import mlflow.keras
import numpy as np
from mlflow.keras import load as keras_load
from mlflow.models import Model
from mlflow.models.signature import ModelSignature
from mlflow.types.schema import Schema, TensorSpec

FLAVOR_NAME = "keras"
SERVING_FILE = "serving.json"
CODE_DIR = "code"
_EXAMPLES = 2  # raw windows kept as the input example


def _schema(tensors: list) -> Schema:
    named = len(tensors) > 1
    specs = []
    for t in tensors:
        # the batch dimension is -1 even for a stateful model built for one batch size
        shape = (-1, *(-1 if d is None else int(d) for d in t.shape[1:]))
        name = getattr(t, "name", None) if named else None
        specs.append(TensorSpec(np.dtype(str(t.dtype)), shape, name))
    return Schema(specs)


def signature_of(model: Any, serving: dict | None = None) -> ModelSignature:
    """The pyfunc's signature: the model's Keras inputs and outputs, except for a
    forecaster, whose input is a raw window of ``window`` values (float64, the series'
    units) and whose output is ``horizon`` forecasts in the same units."""
    if serving and serving.get("kind") == "forecast":
        return ModelSignature(
            inputs=Schema([TensorSpec(np.dtype("float64"), (-1, serving["window"], 1))]),
            outputs=Schema([TensorSpec(np.dtype("float64"), (-1, serving["horizon"]))]))
    outputs = model.outputs if isinstance(model.outputs, (list, tuple)) else [model.outputs]
    return ModelSignature(inputs=_schema(list(model.inputs)), outputs=_schema(list(outputs)))


def serving_of(task: Any, data: Any, model: Any) -> tuple[dict, Any]:
    """What the pyfunc does around the Keras model for ``task``, and an input example
    (a few real test inputs, raw for a forecaster)."""
    if task.family == "timeseries":
        cfg, meta = task.cfg, data.meta
        season = int(cfg.season) if cfg.normalize == "seasonal" else 0
        window = int(cfg.lookback) + season
        values = np.asarray(meta["values"], np.float64)
        ends = np.asarray(meta["anchors"]["test"])[:_EXAMPLES] + 1
        example = np.stack([values[e - window:e] for e in ends])[..., None]
        return ({"kind": "forecast", "normalize": cfg.normalize, "scale": float(meta["scale"]),
                 "offset": float(meta["offset"]), "lookback": int(cfg.lookback),
                 "horizon": int(cfg.horizon), "season": season, "window": window,
                 "unit": getattr(task, "unit", "")}, example)
    names = [getattr(t, "name", "") for t in
             (model.outputs if isinstance(model.outputs, (list, tuple)) else [model.outputs])]
    head = getattr(model.layers[-1], "name", "") if getattr(model, "layers", None) else ""
    kind = "identity"
    if head == "key_logits":
        kind = "sigmoid"
    elif head == "logits" or any("logits" in n for n in names):
        kind = "softmax"
    example = None
    x = (getattr(data, "arrays", None) or {}).get("test", (None,))[0]
    if isinstance(x, np.ndarray) and len(model.inputs) == 1:
        example = x[:_EXAMPLES]
    return {"kind": kind, "family": task.family, "task": task.name}, example


class ServingModel:
    """The pyfunc model: the task's pre-processing, the Keras model, its post-processing."""

    def __init__(self, inner: Any, serving: dict) -> None:
        self.inner = inner
        self.serving = serving

    def get_raw_model(self) -> Any:
        """The bare Keras model (on normalised values)."""
        return self.inner.get_raw_model()

    def predict(self, data: Any, params: dict | None = None) -> Any:
        s = self.serving
        if s.get("kind") == "forecast":
            return forecast(self.inner, np.asarray(data, np.float64), s)
        out = _predict(self.inner, data)
        if s.get("kind") == "softmax":
            z = out - out.max(axis=-1, keepdims=True)
            e = np.exp(z)
            return e / e.sum(axis=-1, keepdims=True)
        if s.get("kind") == "sigmoid":
            return 1.0 / (1.0 + np.exp(-out))
        return out


def _predict(inner: Any, data: Any) -> np.ndarray:
    """The Keras model's outputs for array ``data``, without Keras's progress bar (MLflow
    runs the model on the input example when it logs it)."""
    raw = inner.get_raw_model() if hasattr(inner, "get_raw_model") else None
    if raw is not None and hasattr(raw, "predict") and not hasattr(data, "columns"):
        return np.asarray(raw.predict(np.asarray(data), verbose=0))
    return np.asarray(inner.predict(data))


def forecast(inner: Any, raw: np.ndarray, s: dict) -> np.ndarray:
    """Forecasts in the series' units from raw windows ``(batch, window[, 1])``: the
    normalisation of :class:`rnnbench.tasks.timeseries.SeriesTask`, the model, and back."""
    if raw.ndim == 3 and raw.shape[-1] == 1:
        raw = raw[..., 0]
    if raw.ndim != 2 or raw.shape[1] != s["window"]:
        raise ValueError(f"expected raw windows of shape (batch, {s['window']}, 1) in the "
                         f"series' units, got {raw.shape}")
    lb, hz, m, scale = s["lookback"], s["horizon"], s["season"], s["scale"]
    x = raw[:, m:]
    if s["normalize"] == "window":
        x_base = y_base = raw[:, -1:]
    elif s["normalize"] == "seasonal":  # the change from one season earlier
        x_base = raw[:, :lb] + s["offset"]
        y_base = raw[:, lb:lb + hz] + s["offset"]
    else:
        x_base = y_base = s["offset"]
    z = ((x - x_base) / scale)[..., None].astype(np.float32)
    pred = np.asarray(_predict(inner, z), np.float64).reshape(len(raw), hz)
    return pred * scale + y_base


def _ship_code(path: str) -> str:
    """Copy the rnnbench package into the model (``code/rnnbench``); the sub-path."""
    import rnnbench

    src = Path(rnnbench.__file__).resolve().parent
    shutil.copytree(src, Path(path) / CODE_DIR / "rnnbench",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return CODE_DIR


def save_model(model: Any, path: str, mlflow_model: Model | None = None,
               serving: dict | None = None, input_example: Any = None,
               **kwargs: Any) -> None:
    """``mlflow.keras.save_model``, then this module as the pyfunc loader, with the
    serving description, the input example and the rnnbench code."""
    from mlflow.models.utils import _save_example

    mlflow_model = mlflow_model if mlflow_model is not None else Model()
    mlflow.keras.save_model(model, path, mlflow_model=mlflow_model, **kwargs)
    if input_example is not None:  # after the folder exists (Keras's saver writes it first)
        _save_example(mlflow_model, input_example, path)
    with open(os.path.join(path, SERVING_FILE), "w") as f:
        json.dump(serving or {"kind": "identity"}, f, indent=1, sort_keys=True)
    pyfunc = mlflow_model.flavors["python_function"]
    pyfunc["loader_module"] = __name__
    pyfunc["code"] = _ship_code(path)
    mlflow_model.save(os.path.join(path, "MLmodel"))


def _load_pyfunc(path: str) -> Any:
    """pyfunc's entry point: register rnnbench's Keras objects, MLflow's own loader, then
    the task's pre- and post-processing around it."""
    import importlib

    import rnnbench

    rnnbench.register_keras_objects()
    root = Path(path)
    model_dir = root if (root / SERVING_FILE).is_file() else root.parent
    serving_file = model_dir / SERVING_FILE
    serving = json.loads(serving_file.read_text()) if serving_file.is_file() else {}
    if serving.get("family") == "music" or not serving:
        importlib.import_module("rnnbench.tasks.music")  # the chorales' loss, for compile
    return ServingModel(keras_load._load_pyfunc(path), serving)


def requirements() -> list[str]:
    """What loading the model needs, every one from the package index (rnnbench itself
    travels as code)."""
    import keras

    reqs = [f"keras=={keras.__version__}", f"numpy=={np.__version__}"]
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(
        keras.backend.backend())
    try:
        if module:
            reqs.append(f"{module}=={__import__(module).__version__}")
    except ImportError:
        pass
    return reqs


def stateless_copy(model: Any) -> Any:
    """``model`` itself, or, when a layer is stateful (a language model that carries its
    state from window to window, built for one batch size), its stateless twin: the same
    architecture and weights, every call from a zero state, any batch size. The logged
    model is the twin: a stateful one could only ever predict batches of the training
    batch size (MLflow's own check of the input example failed on every such run)."""
    import keras

    if not any(getattr(layer, "stateful", False) for layer in model._flatten_layers()):
        return model

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: (False if k == "stateful" and v is True
                        else [None, *v[1:]] if k == "batch_shape" and isinstance(v, (list, tuple))
                        else strip(v)) for k, v in node.items()}
        if isinstance(node, (list, tuple)):
            return type(node)(strip(v) for v in node)
        return node

    twin = keras.Model.from_config(strip(model.get_config()))
    twin.set_weights(model.get_weights())
    return twin


def log_model(run_id: str, experiment_id: str, model: Any, name: str = "model",
              task: Any = None, data: Any = None) -> Any:
    """Log ``model`` to the run ``run_id`` as the MLflow model ``name``; with the run's
    ``task`` and ``data``, its pyfunc wraps the task's normalisation."""
    import sys

    model = stateless_copy(model)
    serving, example = serving_of(task, data, model) if task is not None else ({}, None)
    # the model belongs to the run's experiment; MLflow takes the process's active one
    # (else the Default experiment), where runs:/<run id>/model would not find it
    mlflow.set_experiment(experiment_id=experiment_id)
    return Model.log(artifact_path=None, name=name, flavor=sys.modules[__name__], model=model,
                     run_id=run_id, signature=signature_of(model, serving),
                     input_example=example, serving=serving,
                     pip_requirements=requirements())
