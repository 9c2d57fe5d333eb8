"""The forget-gate options shared by the `lstm` and `janet` families (no Keras)."""

from __future__ import annotations

from typing import Any

from rnnbench.cells.families import Option

#: The smallest `cell.chrono_init` (T_max). The chrono initialisation draws the forget
#: bias as `log(u)` with `u ~ Uniform(1, T_max - 1)` (Tallec & Ollivier 2018); at
#: T_max = 2 that range is the single point 1, so every forget bias would be 0 and
#: nothing would be drawn. 3 is the smallest T_max for which the option does what it says.
CHRONO_INIT_MIN = 3

FORGET_BIAS = Option(
    "forget_bias", float, None,
    "initial forget-gate bias; null gives 1.0 (Jozefowicz et al. 2015)",
    allowed="null or a finite number",
)

CHRONO_INIT = Option(
    "chrono_init", int, None,
    "T_max of the chrono initialisation, bf = log(u), u ~ U(1, T_max - 1)",
    check=lambda v: v >= CHRONO_INIT_MIN,
    allowed=f"null or an integer T_max >= {CHRONO_INIT_MIN} (the longest dependency, in steps)",
)


def one_forget_bias(values: dict[str, Any]) -> str | None:
    """`Family.check` of the families with both options: only one may be set."""
    if values.get("forget_bias") is not None and values.get("chrono_init") is not None:
        return ("cell.forget_bias and cell.chrono_init both set the forget-gate bias; "
                "set only one of them")
    return None
