"""The `indrnn` family: the independently recurrent network (Li et al. 2018, "Independently
Recurrent Neural Network (IndRNN): Building A Longer and Deeper RNN", CVPR 2018).

Equation (2) of the paper, with ReLU as σ:

    h' = relu(W x + u⊙h + b)

`u` is one recurrent weight per unit (a vector, not a matrix). The gradient through
`T − t` steps of unit `n` is `u_n^(T−t)` times the activation derivatives (Eq. 3); the
paper keeps it within `[ε, γ]` by bounding the recurrent weight (Eq. 4): for ReLU,
`ε^(1/T) ≤ |u_n| ≤ γ^(1/T)`. Options: `u_bound_steps` is `T` (null: no bound),
`u_gamma` is `γ` (2.0 when null), `u_epsilon` is `ε` (null: no lower bound). The bound is
a constraint on `u` (applied after each optimiser update, sign kept) and holds from
initialisation: `u` is drawn uniform in [0, 1) and projected into it.

Fused blocks: `h` (one); no recurrent kernel; extra weight `recurrent_weight` (u, `n`).
The recurrence is not linear in `h` (the ReLU), so it runs step by step. Gradient:
autodiff.
"""

from __future__ import annotations

import keras
from keras import ops

from rnnbench.cells.base import SpecCell, register

#: γ of the bound when `u_gamma` is null.
DEFAULT_GAMMA = 2.0


def bounds(steps, gamma=None, epsilon=None):
    """`(low, high)` of |u| for the bound over `steps` steps (Eq. 4), or None if unbounded."""
    if steps is None:
        return None
    high = (DEFAULT_GAMMA if gamma is None else gamma) ** (1.0 / steps)
    low = 0.0 if epsilon is None else epsilon ** (1.0 / steps)
    return low, high


@register
class MagnitudeBound(keras.constraints.Constraint):
    """Clips |w| into [low, high], keeping the sign of each weight."""

    def __init__(self, low, high):
        self.low, self.high = float(low), float(high)

    def __call__(self, w):
        mag = ops.clip(ops.abs(w), self.low, self.high)
        return ops.where(w < 0, -mag, mag)

    def get_config(self):
        return {"low": self.low, "high": self.high}


@register
class IndRNNCell(SpecCell):
    """IndRNN: `h' = relu(W x + u⊙h + b)`.

    Args:
        units: number of units.
        u_bound_steps: T of the bound on |u|, or None.
        u_gamma: γ of the bound (None: 2.0).
        u_epsilon: ε of the bound (None: no lower bound).
        **kwargs: those of `SpecCell` (`recurrent_dropout` multiplies `h` where it meets
            `u`).
    """

    family = "indrnn"
    blocks = ("h",)
    recurrent = False

    def __init__(self, units, u_bound_steps=None, u_gamma=None, u_epsilon=None, **kwargs):
        super().__init__(units, **kwargs)
        self.u_bound_steps = u_bound_steps
        self.u_gamma = u_gamma
        self.u_epsilon = u_epsilon
        self.u_bounds = bounds(u_bound_steps, u_gamma, u_epsilon)

    def build_extra(self):
        constraint = None if self.u_bounds is None else MagnitudeBound(*self.u_bounds)
        self.recurrent_weight = self.add_weight(
            shape=(self.units,), name="recurrent_weight", constraint=constraint,
            initializer=keras.initializers.RandomUniform(0.0, 1.0, seed=self.seed),
        )
        if constraint is not None:
            self.recurrent_weight.assign(constraint(self.recurrent_weight))

    @property
    def trace_names(self):
        return ("state", "state_tanh")

    def forward(self, z_x, states, w, dm):
        h_prev = states[0] if dm is None else states[0] * dm
        h = ops.relu(z_x + w["recurrent_weight"] * h_prev)
        return h, [h], {"state": h, "state_tanh": ops.tanh(h)}

    def get_config(self):
        return {**super().get_config(), "u_bound_steps": self.u_bound_steps,
                "u_gamma": self.u_gamma, "u_epsilon": self.u_epsilon}


CELL = IndRNNCell
