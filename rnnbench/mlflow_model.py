"""A trained model as an MLflow model (used by :mod:`rnnbench.tracking`).

The model is saved with MLflow's Keras flavour (``mlflow.keras``: ``data/model.keras``)
and its signature, taken from the model's own input and output shapes (a length that
varies is -1). Its ``python_function`` flavour names this module as its loader, which
registers rnnbench's custom cells before Keras reads the file: so
``mlflow.pyfunc.load_model("runs:/<run id>/model")`` works in any process where rnnbench
is installed, without importing it first (the custom loss of ``chorales`` is registered
too).
"""

from __future__ import annotations

import os
from typing import Any

import mlflow.keras
from mlflow.keras import load as keras_load
from mlflow.models import Model
from mlflow.models.signature import ModelSignature
from mlflow.types.schema import Schema, TensorSpec

FLAVOR_NAME = "keras"


def _schema(tensors: list) -> Schema:
    import numpy as np

    named = len(tensors) > 1
    specs = []
    for t in tensors:
        # the batch dimension is -1 even for a stateful model built for one batch size
        shape = (-1, *(-1 if d is None else int(d) for d in t.shape[1:]))
        name = getattr(t, "name", None) if named else None
        specs.append(TensorSpec(np.dtype(str(t.dtype)), shape, name))
    return Schema(specs)


def signature_of(model: Any) -> ModelSignature:
    """The model's signature from its Keras inputs and outputs."""
    outputs = model.outputs if isinstance(model.outputs, (list, tuple)) else [model.outputs]
    return ModelSignature(inputs=_schema(list(model.inputs)), outputs=_schema(list(outputs)))


def save_model(model: Any, path: str, mlflow_model: Model | None = None, **kwargs: Any) -> None:
    """``mlflow.keras.save_model``, then this module as the pyfunc loader."""
    mlflow_model = mlflow_model if mlflow_model is not None else Model()
    mlflow.keras.save_model(model, path, mlflow_model=mlflow_model, **kwargs)
    mlflow_model.flavors["python_function"]["loader_module"] = __name__
    mlflow_model.save(os.path.join(path, "MLmodel"))


def _load_pyfunc(path: str) -> Any:
    """pyfunc's entry point: register rnnbench's Keras objects, then MLflow's own loader."""
    import importlib

    import rnnbench

    rnnbench.register_keras_objects()
    importlib.import_module("rnnbench.tasks.music")  # the chorales' loss, for compile
    return keras_load._load_pyfunc(path)


def log_model(run_id: str, experiment_id: str, model: Any, name: str = "model") -> Any:
    """Log ``model`` to the run ``run_id`` as the MLflow model ``name``."""
    import keras

    from rnnbench import __version__

    backend = keras.backend.backend()
    requirements = [f"keras=={keras.__version__}", f"rnnbench=={__version__}"]
    try:
        module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[backend]
        requirements.append(f"{module}=={__import__(module).__version__}")
    except (KeyError, ImportError):
        pass
    import sys

    # the model belongs to the run's experiment; MLflow takes the process's active one
    # (else the Default experiment), where runs:/<run id>/model would not find it
    mlflow.set_experiment(experiment_id=experiment_id)
    return Model.log(artifact_path=None, name=name, flavor=sys.modules[__name__], model=model,
                     run_id=run_id, signature=signature_of(model),
                     pip_requirements=requirements)
