"""rnnbench: compare recurrent cell variants fairly and reproducibly.

Importing rnnbench registers its custom Keras objects (the layer of
``rnnbench.cells.custom``, its cells and their initializers) for deserialisation, so that a saved
model with a ``janet`` or ``peephole`` layer loads with ``keras.saving.load_model``
after ``import rnnbench``. That import stays light (``rnnbench-report`` never imports
TensorFlow): when Keras is not imported yet, the registration waits for it and runs
right after Keras's own import, with the backend the process chose.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from typing import Any

__version__ = "0.1.0"

_KERAS_OBJECTS = "rnnbench.cells.custom"  # imports the cells (variants) and initializers too


def register_keras_objects() -> None:
    """Register rnnbench's custom Keras objects now (imports Keras)."""
    importlib.import_module(_KERAS_OBJECTS)


class _RegisterAfterImport(importlib.abc.Loader):
    """Keras's own loader, followed by the registration."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._loader.exec_module(module)
        _KerasHook.remove()
        try:
            register_keras_objects()
        except Exception as exc:  # never break `import keras`; loading such a model will say
            warnings.warn(f"rnnbench could not register its Keras objects: {exc}", stacklevel=2)

    def __getattr__(self, name: str) -> Any:  # resources, is_package, get_code, ...
        return getattr(self._loader, name)


class _KerasHook(importlib.abc.MetaPathFinder):
    """Finds ``keras`` through the other finders and wraps its loader."""

    _busy = False

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "keras" or self._busy:
            return None
        self._busy = True
        try:
            spec = importlib.util.find_spec(name)
        finally:
            self._busy = False
        if spec is not None and spec.loader is not None:
            spec.loader = _RegisterAfterImport(spec.loader)
        return spec

    @staticmethod
    def remove() -> None:
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _KerasHook)]


if "keras" in sys.modules:
    register_keras_objects()
elif not any(isinstance(f, _KerasHook) for f in sys.meta_path):
    sys.meta_path.insert(0, _KerasHook())
