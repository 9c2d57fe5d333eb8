"""Tasks and their data. ``get_task(cfg)`` returns the :class:`Task` named by ``cfg.name``;
``TASKS`` (defined in ``rnnbench.tasks.configs``) is the table of every task.

Importing this package is light; task modules (which import TensorFlow) load on demand.
"""

from __future__ import annotations

import importlib
from typing import Any

from rnnbench.errors import ConfigError
from rnnbench.tasks.configs import TASKS

__all__ = ["TASKS", "get_task"]


def get_task(cfg: Any):
    """Build the task named ``cfg.name`` with its config node."""
    try:
        target = TASKS[cfg.name].target
    except KeyError:
        raise ConfigError(
            f"task={cfg.name!r} is not a task. Available: {', '.join(sorted(TASKS))}."
        ) from None
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)(cfg)
