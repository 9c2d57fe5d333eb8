"""Vanishing-gradient diagnostics of a training run (how to read them: `docs/diagnostics.md`).

- :mod:`~rnnbench.diagnostics.flow`: gradient flow through time, ``g(k)``, its decay
  ratio and effective horizon.
- :mod:`~rnnbench.diagnostics.gradient_norms`: global and per-layer gradient norms before
  clipping and the clipped fraction, recorded inside the compiled train step
  (:func:`attach` a :class:`GradientNormRecorder` to a compiled model).
- :mod:`~rnnbench.diagnostics.recurrent`: gate statistics on the probe batch and
  spectral norms of the recurrent kernels.
- :mod:`~rnnbench.diagnostics.callback`: :class:`DiagnosticsCallback`, which computes
  all of it during ``fit`` and logs it to MLflow.
"""

from __future__ import annotations

from typing import Any

from rnnbench.diagnostics.callback import DiagnosticsCallback, detached_copy
from rnnbench.diagnostics.flow import FlowProfile, GradientFlow, profile_from_norms, summarize
from rnnbench.diagnostics.gradient_norms import GradientNormRecorder, attach, recorder_of
from rnnbench.diagnostics.recurrent import RecurrentProbe, gate_statistics, spectral_norm

__all__ = [
    "DiagnosticsCallback",
    "FlowProfile",
    "GradientFlow",
    "GradientNormRecorder",
    "RecurrentProbe",
    "attach",
    "detached_copy",
    "draw_probe",
    "gate_statistics",
    "profile_from_norms",
    "recorder_of",
    "spectral_norm",
    "summarize",
]


def draw_probe(task: Any, data: Any, size: int, seed: int) -> tuple[Any, Any, Any]:
    """The run's fixed probe batch ``(x, y, lengths)``: ``task.probe_batch`` (``size``
    examples of the validation split, chosen with ``seed``), or, for a task without
    in-memory arrays, the first ``size`` examples of its validation pipeline.
    ``lengths`` is the real length of each example (None: no padding, or only what the
    model's own mask says)."""
    import numpy as np

    try:
        probe = tuple(task.probe_batch(data, size, seed))
        return probe if len(probe) == 3 else (*probe, None)
    except KeyError:  # no in-memory validation arrays
        pass
    xs, ys = [], []
    count = 0
    for x, y in data.val:
        xs.append(np.asarray(x))
        ys.append(np.asarray(y))
        count += len(xs[-1])
        if count >= size:
            break
    return np.concatenate(xs)[:size], np.concatenate(ys)[:size], None
