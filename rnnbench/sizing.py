"""Equal-size models: the width at which a cell has ``model.params`` weights.

``model.params=N`` replaces ``model.units``: for the configured cell, implementation,
cell options, depth, direction and task, :func:`solve` finds the integer width whose
weight count comes nearest to N, and refuses the run when no width comes within
``TOLERANCE`` (2%) of it. ``model.params_of`` says which weights count:

- ``all``: every weight of the model (``model.count_params()``): the task's frontend
  (an embedding for language tasks), the recurrent layers and the head;
- ``recurrent``: the weights of the recurrent layers only (every layer of the stack,
  both directions of a bidirectional one: the ``recurrent_params`` metric).

The counts are those of the layers really built, not of the spec's equations (Keras's
GRU, for one, keeps two biases per gate where the spec has one for two of them): the
model is built at a few small widths, and its count is a polynomial of degree two in
the width (kernels ``d×n`` and ``n×n``, biases ``n``), fitted exactly through three of
them and checked on a fourth. The widths are then searched one by one, not solved in
closed form, and :func:`check_built` holds the solution against the model built.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from fractions import Fraction
from typing import Any

from rnnbench.config import MAX_UNITS
from rnnbench.errors import ConfigError

#: The largest relative distance between the solved count and ``model.params``.
TOLERANCE = 0.02
#: Widths the model is built at to fit its count (three fit it, the next checks it).
PROBE_WIDTHS = range(1, 33)


@dataclass(frozen=True)
class Sizing:
    """The solved width: ``units`` gives ``count`` weights of kind ``of`` for ``target``."""

    target: int
    of: str
    units: int
    count: int

    @property
    def error(self) -> float:
        """Relative distance of ``count`` from ``target`` (signed)."""
        return (self.count - self.target) / self.target

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "error": round(self.error, 6)}


def fitted_count(count_at: Callable[[int], int], what: str) -> Callable[[int], int]:
    """``count(n)`` for every width from ``count_at`` evaluated at a few small widths:
    the first five of ``PROBE_WIDTHS`` that build. A width that raises ValueError or
    ConfigError is one the cell refuses (``cell.heads`` must divide the width): the
    widths then allowed are the multiples of the greatest common divisor of those that
    built, and ``count`` raises ValueError for the others.

    The count is a polynomial of degree two through three of the points that holds at
    all five, or at all but one: a cell may count differently at one width (the LRU's
    skip term D is a vector when the width equals the input's, a matrix otherwise), and
    :func:`check_built` holds the solved width against the model really built."""
    points: list[tuple[int, int]] = []
    refused: Exception | None = None
    for n in PROBE_WIDTHS:
        try:
            points.append((n, int(count_at(n))))
        except (ValueError, ConfigError) as exc:
            refused = refused or exc
            continue
        if len(points) == 5:
            break
    if len(points) < 4:
        raise ConfigError(f"{what}: the model could not be built at widths "
                          f"{PROBE_WIDTHS.start} to {PROBE_WIDTHS.stop - 1} to count its "
                          f"weights ({refused}); set model.units instead.")
    step = math.gcd(*(n for n, _ in points))

    def through(chosen: list[tuple[int, int]]) -> Callable[[int], int]:
        def poly(n: int) -> int:  # Lagrange through the chosen points, exact
            if n % step:
                raise ValueError(f"{n} units: not a multiple of {step}")
            total = Fraction(0)
            for i, (xi, yi) in enumerate(chosen):
                term = Fraction(yi)
                for j, (xj, _) in enumerate(chosen):
                    if j != i:
                        term *= Fraction(n - xj, xi - xj)
                total += term
            return int(total)
        return poly

    allowed_misses = len(points) - 4  # four points: all must agree; five: one may not
    for skip in [None, *range(len(points))]:
        rest = [pt for k, pt in enumerate(points) if k != skip]
        poly = through(rest[:3])
        misses = sum(poly(n) != c for n, c in points)
        if misses <= allowed_misses:
            return poly
    n4, c4 = points[3]
    poly = through(points[:3])
    raise ConfigError(f"{what}: the model's weight count is not a polynomial of degree "
                      f"two in the width (at {n4} units it has {c4:,}, not {poly(n4):,}); "
                      "set model.units instead.")


def describe_target(cfg: Any, task_name: str) -> str:
    which = ("weights of the whole model" if cfg.model.params_of == "all"
             else "weights of the recurrent layers")
    return (f"model.params={cfg.model.params} ({which}, model.params_of="
            f"{cfg.model.params_of}) for cell={cfg.cell.name} on task={task_name}")


def solve(count: Callable[[int], int], target: int, of: str, what: str,
          max_units: int = MAX_UNITS) -> Sizing:
    """The width in ``1..max_units`` whose ``count`` is nearest ``target`` (the smaller
    width on a tie); ConfigError when none is within ``TOLERANCE``. ``what`` names the
    target in messages. A width the cell refuses (``count`` raises ValueError) is
    skipped."""
    below: tuple[int, int] | None = None  # the widest width with count <= target
    above: tuple[int, int] | None = None  # the narrowest width with count > target
    for n in range(1, max_units + 1):
        try:
            c = int(count(n))
        except ValueError:
            continue
        if c > target:  # counts grow with the width: every wider one is further away
            above = (n, c)
            break
        below = (n, c)
    if below is None and above is None:
        raise ConfigError(f"{what}: the cell accepts no width from 1 to {max_units}.")
    near = [w for w in (below, above) if w is not None]
    n, c = min(near, key=lambda w: (abs(w[1] - target), w[0]))
    if abs(c - target) <= TOLERANCE * target:
        return Sizing(target=target, of=of, units=n, count=c)
    if below is None:
        raise ConfigError(
            f"{what} is too small: the narrowest width ({n} unit{'s' * (n > 1)}) already "
            f"has {c:,} such weights, more than {TOLERANCE:.0%} above {target:,}. Use "
            f"model.params >= {_least(c):,}, or set model.units (and model.params=null).")
    if above is None:
        raise ConfigError(
            f"{what} is too large: even {n:,} units (model.units is at most {max_units}) "
            f"give only {c:,} weights. Use a smaller model.params, or more model.layers.")
    raise ConfigError(
        f"{what}: no integer width comes within {TOLERANCE:.0%} of {target:,} weights: "
        f"{below[0]} units give {below[1]:,} and {above[0]} units give {above[1]:,}. "
        "Use a model.params near one of them (or a larger one: the steps between "
        "widths shrink, relatively, as the model grows).")


def _least(count_at_one: int) -> int:
    """The smallest target that a count of ``count_at_one`` is within TOLERANCE of."""
    target = int(count_at_one / (1 + TOLERANCE))
    while abs(count_at_one - target) > TOLERANCE * target:
        target += 1
    return target


def size_model(cfg: Any, count_at: Callable[[int], int], task_name: str) -> Sizing:
    """Solve the width for ``cfg.model.params``; ``count_at(n)`` builds the model at
    width ``n`` and counts the weights ``cfg.model.params_of`` names."""
    what = describe_target(cfg, task_name)
    return solve(fitted_count(count_at, what), int(cfg.model.params), cfg.model.params_of,
                 what)


def check_built(sizing: Sizing, model: Any, recurrent: list[Any], what: str) -> Sizing:
    """The sizing with the count of the model really built; ConfigError when that count
    is not within TOLERANCE of the target (it cannot be, unless the fit was wrong)."""
    real = counted(sizing.of, model, recurrent)
    if abs(real - sizing.target) > TOLERANCE * sizing.target:
        raise ConfigError(
            f"{what}: {sizing.units} units were solved to give {sizing.count:,} weights, "
            f"but the model built has {real:,}; set model.units instead (and "
            "model.params=null).")
    return replace(sizing, count=real)


def counted(of: str, model: Any, recurrent: list[Any]) -> int:
    """The weights ``of`` names in a built model (``recurrent``: its recurrent layers)."""
    return int(model.count_params() if of == "all"
               else sum(layer.count_params() for layer in recurrent))


@contextmanager
def random_state_kept() -> Iterator[None]:
    """Python's and NumPy's global random states as they were before the block: Keras
    draws the seed of each unseeded initializer from Python's, so models built only to
    be counted must not move it (the model then built starts from the same weights as
    one given its width by model.units, at the same seed)."""
    import random

    import numpy as np

    py, npy = random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
