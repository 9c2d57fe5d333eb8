"""Ctrl-C (SIGINT) and SIGTERM end a run as KILLED.

The handler is installed explicitly for both signals. Python keeps SIGINT ignored when
the process inherits it ignored, as every command started with ``&`` from a script
does; such a run would then train on through ``kill -INT`` and leave its MLflow run
RUNNING.

The handler raises KeyboardInterrupt, as Python's own does, and also remembers that
the signal came. Some library code runs under a bare ``except:`` (Keras, while it
builds a model, tries things that way), and an interrupt that lands there would be
swallowed. The :class:`~rnnbench.callbacks.InterruptCheck` callback calls
:func:`raise_if_requested` before every batch and after every epoch, which raises it
again where nothing swallows it.

Light on purpose: the CLI installs the handler before the Keras backend is imported.
"""

from __future__ import annotations

import signal
from typing import Any

_requested: str | None = None
_killed: list[str] = []  # MLflow runs closed as KILLED because of a stop request


def _handler(signum: int, frame: Any) -> None:
    global _requested
    _requested = signal.Signals(signum).name
    raise KeyboardInterrupt(f"{_requested} received")


def install() -> None:
    """Handle SIGINT (Ctrl-C) and SIGTERM in this process (main thread only)."""
    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)


def requested() -> str | None:
    """The name of the signal that asked this process to stop, or None."""
    return _requested


def raise_if_requested() -> None:
    """Raise KeyboardInterrupt again when a stop was asked for (a no-op otherwise)."""
    if _requested is not None:
        raise KeyboardInterrupt(f"{_requested} received")


def reset() -> None:
    """Forget a stop request (for code that handled it and goes on, and for tests)."""
    global _requested
    _requested = None


def note_killed(run_id: str | None) -> None:
    """Remember that a stop request closed MLflow run ``run_id`` as KILLED."""
    if run_id and run_id not in _killed:
        _killed.append(run_id)


def killed_runs() -> list[str]:
    """The MLflow runs closed as KILLED in this process, oldest first."""
    return list(_killed)
