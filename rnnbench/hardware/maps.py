"""The kernel's limit on a process's memory maps, checked before each run of a long
process (a sweep, an in-process multirun).

XLA on the CPU (TensorFlow 2.21, rnnbench's default there: ``hardware.xla=auto``) puts
each compiled function's machine code in mappings of its own and never unmaps them,
not even after ``keras.backend.clear_session()``: a 1-layer LSTM that is fitted,
evaluated and predicted adds about 230 mappings, a Greff sweep trial up to about 1,250. Linux
refuses a process more than ``vm.max_map_count`` mappings (65,530 by default), and
TensorFlow then crashes with a segmentation fault, taking the trial in flight with it.
That is after some 50-80 trials of a sweep, roughly 20 minutes. (The process's memory
grows with each run as well, with or without XLA: about 10-30 MB per small LSTM model
here, 50-100 MB per Greff trial; a fresh process frees both.)

:func:`check_headroom` is called before each run. It measures what the previous run of
this process cost in mappings and refuses to start one that could cross the limit, with
a :class:`~rnnbench.errors.HardwareError` that says how to go on: a sweep then stops
with its state saved, and the same command resumes it in a fresh process.

Linux only; elsewhere (no ``/proc``) the check does nothing.
"""

from __future__ import annotations

from pathlib import Path

from rnnbench.errors import ProcessSpent

LIMIT_FILE = Path("/proc/sys/vm/max_map_count")
MAPS_FILE = Path("/proc/self/maps")
# stop while twice the costliest run so far is still free
SAFETY = 2.0
RAISE_TO = 1_048_576

_state: dict[str, int | None] = {"last": None, "worst": 0}


def map_count() -> int | None:
    """The number of memory mappings this process holds, or None without ``/proc``."""
    try:
        with open(MAPS_FILE, "rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return None


def map_limit() -> int | None:
    """The kernel's ``vm.max_map_count``, or None where it cannot be read."""
    try:
        return int(LIMIT_FILE.read_text().strip())
    except (OSError, ValueError):
        return None


def check_headroom() -> int | None:
    """Refuse a run that could take this process past ``vm.max_map_count``.

    Returns:
        The mappings the previous run of this process cost (None for the first run).

    Raises:
        ProcessSpent: fewer mappings are left than twice the costliest run so far (a
            HardwareError: a multirun launched by this process stops there).
    """
    now, limit = map_count(), map_limit()
    if now is None or limit is None:
        return None
    last = _state["last"]
    cost = None if last is None else max(now - last, 0)
    if cost is not None:
        _state["worst"] = max(int(_state["worst"] or 0), cost)
    _state["last"] = now
    worst = int(_state["worst"] or 0)
    if worst and now + SAFETY * worst > limit:
        raise ProcessSpent(
            f"this process holds {now:,} memory mappings of the kernel's limit of {limit:,} "
            f"(vm.max_map_count), and a run here has cost up to {worst:,}: XLA on the CPU "
            "never unmaps the code it compiles, and past the limit TensorFlow crashes "
            "(segmentation fault). Stopped before starting another run; nothing finished is "
            "lost. Run the same command again to go on in a fresh process (a sweep resumes "
            "where it stopped), or compile without XLA (hardware.xla=off, slower on the "
            f"CPU). Raising the limit (sudo sysctl -w vm.max_map_count={RAISE_TO}) lets "
            "this process go on, but its memory grows with every run too (TensorFlow keeps "
            "some of each model), so a fresh process is the safer way on.")
    return cost


def reset() -> None:
    """Forget the runs measured so far (for a new process-like start, and tests)."""
    _state.update(last=None, worst=0)
