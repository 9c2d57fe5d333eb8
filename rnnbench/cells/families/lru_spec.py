"""The `lru` family, light half: the Linear Recurrent Unit of Orvieto et al. 2023
(`rnnbench.cells.families.lru`)."""

from __future__ import annotations

import math
from typing import Any

from rnnbench.cells.families import CellSpec, Family, Option
from rnnbench.cells.families.slstm_spec import PARALLEL


def check_ring(values: dict[str, Any]) -> str | None:
    """The rule between `r_min` and `r_max`: the ring of the initial |λ| is not empty."""
    r_min, r_max = values.get("r_min"), values.get("r_max")
    if r_min is not None and r_max is not None and r_min >= r_max:
        return (f"cell.r_min={r_min} must be below cell.r_max={r_max}: the initial |λ| is "
                "drawn from the ring r_min ≤ |λ| ≤ r_max (e.g. cell.r_min=0.9 cell.r_max=0.999)")
    if r_max is not None and not 0 < r_max < 1:
        return (f"cell.r_max={r_max} must be in (0, 1): |λ| ≥ 1 is an unstable recurrence "
                "(e.g. cell.r_max=0.999)")
    return None


def param_count(d: int, n: int) -> int:
    """ν_log, θ_log, γ_log (n each), B and C complex (2·d·n and 2·n·n), D: n when d = n
    (the paper's diagonal D ⊙ u), a d×n matrix otherwise."""
    return 3 * n + 2 * d * n + 2 * n * n + (n if d == n else d * n)


FAMILY = Family(
    name="lru",
    summary="Linear Recurrent Unit, x' = λ⊙x + γ⊙(B u), y = Re(C x') + D⊙u (Orvieto et al. 2023)",
    kernel=False,
    parallel=True,
    options=(
        Option("r_min", float, 0.9, "smallest |λ| at initialisation (the ring's inner radius)",
               check=lambda v: 0 <= v < 1, allowed="a number in [0, 1)"),
        Option("r_max", float, 0.999, "largest |λ| at initialisation (the ring's outer radius)",
               check=lambda v: 0 < v < 1, allowed="a number in (0, 1), above cell.r_min"),
        Option("max_phase", float, 2 * math.pi, "largest phase of λ at initialisation",
               check=lambda v: 0 < v <= 2 * math.pi, allowed="a number in (0, 2π]"),
        PARALLEL,
    ),
    check=check_ring,
    cells=(
        CellSpec(
            name="lru",
            summary=("λ = exp(−exp(ν) + i·exp(θ)); x' = λ⊙x + γ⊙(B u), γ = sqrt(1 − |λ|²) "
                     "at init; y = Re(C x') + D⊙u"),
            gates=(),
            options=frozenset({"r_min", "r_max", "max_phase", "parallel"}),
            param_count=param_count,
            source="Orvieto et al. 2023, eq. (1), §3.2-3.3",
        ),
    ),
)
