"""Ctrl-C (SIGINT), SIGTERM and SIGHUP (a closed terminal) end a run as KILLED.

A stop request is a flag first. The handler, installed explicitly for the three
signals, remembers which signal came, then raises KeyboardInterrupt, as Python's own
does, so that a blocking call (a download, a slow store) stops at once. Python keeps
SIGINT ignored when the process inherits it ignored, as every command started with
``&`` from a script does; such a run would otherwise train on through ``kill -INT``.

The exception can be lost: library code that runs under a bare ``except:`` (Keras,
while it builds a model), or a ``__del__`` method or garbage-collection callback
(where Python only prints "Exception ignored"). The flag is not lost: it is honoured at
every check point, :func:`raise_if_requested` (before every batch and after every
epoch, by :class:`~rnnbench.callbacks.InterruptCheck`; after training; when a run's
block ends; when a job ends), so the run still ends KILLED and the process still exits
with the stop's status, :func:`exit_code` (128 + the signal's number, as a shell
reports a process killed by it: 130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP).

While :func:`deferred` holds (a run being created and being closed: steps that must
not be cut in half), the handler only sets the flag; the run's own code honours it
right after.

Light on purpose: the CLI installs the handler before the Keras backend is imported.
"""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager
from typing import Any, Iterator

SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")
_requested: str | None = None
_held = 0  # depth of deferred() blocks: the handler raises nothing while > 0
_signals = 0  # how many stop signals this process received
_killed: list[str] = []  # MLflow runs closed as KILLED because of a stop request
_default_unraisable = sys.unraisablehook


def _handler(signum: int, frame: Any) -> None:
    global _requested, _signals
    _signals += 1
    if _requested is None:
        _requested = signal.Signals(signum).name
    if not _held:
        raise KeyboardInterrupt(f"{_requested} received")


def _unraisable(info: Any) -> None:
    """Say it once, quietly, when a stop request's exception was swallowed where Python
    cannot raise (``__del__``, a garbage-collection callback): it is still honoured."""
    if isinstance(info.exc_value, KeyboardInterrupt) and _requested is not None:
        return
    _default_unraisable(info)


def install() -> None:
    """Handle SIGINT (Ctrl-C), SIGTERM and SIGHUP in this process. A no-op outside the
    main thread (only it may set signal handlers; a launcher's worker thread)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for name in SIGNALS:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), _handler)
    sys.unraisablehook = _unraisable


def requested() -> str | None:
    """The name of the signal that asked this process to stop, or None."""
    return _requested


def raise_if_requested() -> None:
    """A check point: raise KeyboardInterrupt when a stop was asked for (a no-op otherwise)."""
    if _requested is not None:
        raise KeyboardInterrupt(f"{_requested} received")


def exit_code(default: str = "SIGINT") -> int:
    """The exit status of a process stopped by the request: 128 + the signal's number."""
    return 128 + int(getattr(signal, _requested or default))


def reason() -> str:
    """The ``failure_reason`` of a run that a stop request closed."""
    what = {"SIGINT": "SIGINT: Ctrl-C or kill -INT", "SIGTERM": "SIGTERM",
            "SIGHUP": "SIGHUP: the terminal closed"}.get(_requested or "", _requested or "")
    return f"interrupted ({what})" if what else "interrupted"


class Hold:
    """What :func:`deferred` yields: ``signalled`` says whether a stop signal came while
    the block ran."""

    def __init__(self) -> None:
        self._at = _signals

    @property
    def signalled(self) -> bool:
        return _signals > self._at


@contextmanager
def deferred() -> Iterator[Hold]:
    """While the block runs, a stop request only sets the flag (nothing is raised);
    the caller honours it after the block (``signalled``, :func:`raise_if_requested`)."""
    global _held
    _held += 1
    try:
        yield Hold()
    finally:
        _held -= 1


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
