"""Tasks and their data. ``get_task(cfg)`` returns the :class:`Task` named by ``cfg.name``.

Importing this package is light; task modules (which import TensorFlow) load on demand.
"""

from __future__ import annotations

import importlib
from typing import Any

from rnnbench.errors import ConfigError

# task name -> "module:Class"
TASKS: dict[str, str] = {
    "co2": "rnnbench.tasks.timeseries:Co2Task",
    "sunspots": "rnnbench.tasks.timeseries:SunspotsTask",
    "electricity": "rnnbench.tasks.timeseries:ElectricityTask",
    "timeseries_csv": "rnnbench.tasks.timeseries:CsvSeriesTask",
    "lm_char": "rnnbench.tasks.language:CharLMTask",
    "lm_word": "rnnbench.tasks.language:WordLMTask",
    "speech_vowels": "rnnbench.tasks.speech:VowelsTask",
    "speech_audio": "rnnbench.tasks.speech:AudioTask",
    "adding": "rnnbench.tasks.probes:AddingTask",
    "copy": "rnnbench.tasks.probes:CopyTask",
    "chorales": "rnnbench.tasks.music:ChoralesTask",
}


def get_task(cfg: Any):
    """Build the task named ``cfg.name`` with its config node."""
    try:
        target = TASKS[cfg.name]
    except KeyError:
        raise ConfigError(
            f"task={cfg.name!r} is not a task. Available: {', '.join(sorted(TASKS))}."
        ) from None
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)(cfg)
