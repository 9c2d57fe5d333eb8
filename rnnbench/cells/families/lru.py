"""The `lru` family, heavy half: the Linear Recurrent Unit (Orvieto et al. 2023,
"Resurrecting Recurrent Neural Networks for Long Sequences"), the cell alone.

Equations (the paper's eq. (1) with a complex diagonal A, §3.2, §3.3):

    λ = exp(−exp(ν_log) + i·exp(θ_log))              (diagonal of Λ, |λ| < 1 always)
    x_t = λ ⊙ x_{t−1} + γ ⊙ (B u_t),  γ = exp(γ_log)  (x complex, n states)
    y_t = Re(C x_t) + D ⊙ u_t

At initialisation λ is uniform on the ring `r_min ≤ |λ| ≤ r_max` with phase in
`[0, max_phase]` (Lemma 3.2: `ν = −½ log(u₁(r_max² − r_min²) + r_min²)`, `θ =
max_phase·u₂`), and `γ = sqrt(1 − |λ|²)` (§3.3); γ_log is then trained, as in the
paper. B (n×d) and C (n×n) are complex, kept as real and imaginary parts, initialised
as the paper does (`N(0, 1/(2d))` and `N(0, 1/n)` per part). `D ⊙ u` is the paper's
diagonal D when the input size d equals n; for d ≠ n it is eq. (1)'s general
feedthrough, a real d×n matrix (`N(0, 1/d)`). The paper's MLP/GLU block is not part
of the cell.

Layout: `kernel` is `[Re B | Im B]` (d × 2n, x @ kernel), `output_kernel` is
`[Re C; Im C]` (2n × n, rows the state), `skip` is D (n, or d × n); `nu_log`,
`theta_log`, `gamma_log` are n each. No bias. `project` computes
`[γ⊙Re(Bu), γ⊙Im(Bu), D u]` for every step before the loop; the step is then
element-wise plus the output product. State: `[y, Re x, Im x]` (`y` first, as the
layer's loop wants the output there; it is not fed back).

Training (`scan`) runs the recurrence as a parallel scan over time (`rnnbench.cells.scan`) and the output
product as one matrix product over all steps; stepping (`forward`) gives the same
numbers and runs for generation and the trace. `eigenvalue_moduli()` gives |λ|.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from rnnbench.cells.base import SpecCell, register
from rnnbench.cells.families.lru_spec import check_ring
from rnnbench.cells.scan import complex_linear_scan, linear_scan
from rnnbench.errors import ConfigError


class _RingNuLog(keras.initializers.Initializer):
    """ν_log with |λ| = exp(−exp(ν_log)) uniform in area on the ring [r_min, r_max]."""

    def __init__(self, r_min, r_max, seed=None):
        self.r_min, self.r_max, self.seed = r_min, r_max, seed

    def __call__(self, shape, dtype=None):
        u = keras.random.uniform(shape, dtype="float32", seed=self.seed)
        nu = -0.5 * ops.log(u * (self.r_max**2 - self.r_min**2) + self.r_min**2)
        return ops.cast(ops.log(nu), dtype or "float32")


class _PhaseLog(keras.initializers.Initializer):
    """θ_log with θ = exp(θ_log) uniform in (0, max_phase]."""

    def __init__(self, max_phase, seed=None):
        self.max_phase, self.seed = max_phase, seed

    def __call__(self, shape, dtype=None):
        u = keras.random.uniform(shape, minval=1e-6, maxval=1.0, dtype="float32", seed=self.seed)
        return ops.cast(ops.log(self.max_phase * u), dtype or "float32")


def masked_outputs(values, mask, first, zero_output_for_mask=False):
    """The outputs Keras's loop gives at masked steps: zeros with `zero_output_for_mask`,
    else the output of the last unmasked step before (`first` before any), a scan of
    `y_t = (1 − m_t) y_{t−1} + m_t v_t`. `values` `(B, T, n)` in processing order."""
    keep = ops.cast(ops.expand_dims(ops.cast(mask, "bool"), -1), values.dtype)
    if zero_output_for_mask:
        return values * keep
    keep = ops.broadcast_to(keep, ops.shape(values))
    return linear_scan(1.0 - keep, keep * values, h0=first)


@register
class LRUCell(SpecCell):
    """The Linear Recurrent Unit (see the module docstring for the equations).

    Args:
        units: number of (complex) states and outputs `n`.
        r_min: smallest |λ| at initialisation, in [0, r_max).
        r_max: largest |λ| at initialisation, below 1.
        max_phase: largest phase of λ at initialisation, in (0, 2π].
        parallel: train with the parallel scan over time (`scan`); False runs the step
            loop (the same numbers).
        Other arguments: those of `SpecCell` (`recurrent_dropout` must be 0: the cell has
        no recurrent product; the initialisers of B, C, D are the paper's).
    """

    family = "lru"
    blocks = ("re", "im", "skip")
    recurrent = False
    gradient_kernel = None

    def __init__(self, units, r_min=0.9, r_max=0.999, max_phase=2 * math.pi, parallel=True,
                 **kwargs):
        message = check_ring({"r_min": r_min, "r_max": r_max})
        if message:
            raise ConfigError(message)
        if kwargs.get("recurrent_dropout", 0.0):
            raise ConfigError("cell.recurrent_dropout must be 0 for cell lru: it has no "
                              "recurrent product to drop (use cell.dropout)")
        super().__init__(units, **kwargs)
        self.r_min, self.r_max, self.max_phase = float(r_min), float(r_max), float(max_phase)
        self.parallel = bool(parallel)
        self.state_size = [self.units] * 3

    def build(self, input_shape):
        d, n = int(input_shape[-1]), self.units
        self.input_dim = d
        self.kernel = self.add_weight(
            shape=(d, 2 * n), name="kernel",
            initializer=keras.initializers.RandomNormal(stddev=1 / math.sqrt(2 * d)))
        self.output_kernel = self.add_weight(
            shape=(2 * n, n), name="output_kernel",
            initializer=keras.initializers.RandomNormal(stddev=1 / math.sqrt(n)))
        diagonal = d == n
        self.skip = self.add_weight(
            shape=(n,) if diagonal else (d, n), name="skip",
            initializer=keras.initializers.RandomNormal(stddev=1.0 if diagonal else 1 / math.sqrt(d)))
        self.nu_log = self.add_weight(shape=(n,), name="nu_log",
                                      initializer=_RingNuLog(self.r_min, self.r_max))
        self.theta_log = self.add_weight(shape=(n,), name="theta_log",
                                         initializer=_PhaseLog(self.max_phase))
        modulus = ops.exp(-ops.exp(ops.convert_to_tensor(self.nu_log)))
        self.gamma_log = self.add_weight(shape=(n,), name="gamma_log", initializer="zeros")
        self.gamma_log.assign(ops.cast(0.5 * ops.log(1.0 - modulus**2), self.gamma_log.dtype))
        self.built = True

    # -- λ, γ ----------------------------------------------------------------------
    def _lambda(self, dtype):
        nu = ops.exp(ops.cast(self.nu_log, dtype))
        theta = ops.exp(ops.cast(self.theta_log, dtype))
        modulus = ops.exp(-nu)
        return modulus * ops.cos(theta), modulus * ops.sin(theta)

    def eigenvalue_moduli(self) -> np.ndarray:
        """|λ| of every state, `(n,)` float64: how close each eigenvalue sits to the unit
        circle (1 would be an undamped memory)."""
        return np.exp(-np.exp(np.asarray(ops.convert_to_numpy(self.nu_log), np.float64)))

    # -- what the layer calls ----------------------------------------------------------
    def project(self, sequences, training=False, bias=True):
        """`[γ⊙Re(B u), γ⊙Im(B u), D u]` for every step, `(B, T, 3n)` (no bias)."""
        dtype = self.compute_dtype
        u = ops.cast(sequences, dtype)
        if training and self.dropout > 0:
            keep = keras.random.dropout(ops.ones_like(u[:, 0, :]), self.dropout,
                                        seed=self.seed_generator)
            u = u * ops.expand_dims(keep, 1)
        gamma = ops.exp(ops.cast(self.gamma_log, dtype))
        bu = ops.matmul(u, ops.cast(self.kernel, dtype)) * ops.concatenate([gamma, gamma])
        skip = ops.cast(self.skip, dtype)
        du = u * skip if len(self.skip.shape) == 1 else ops.matmul(u, skip)
        return ops.concatenate([bu, du], axis=-1)

    def read_step_weights(self, batch_like=None):
        dtype = self.compute_dtype
        lam_re, lam_im = self._lambda(dtype)
        return {"lam_re": lam_re, "lam_im": lam_im,
                "output_kernel": ops.cast(ops.convert_to_tensor(self.output_kernel), dtype)}

    @property
    def trace_names(self):
        return ("state", "state_tanh")

    def _output(self, x_re, x_im, du, output_kernel):
        """`Re(C x) + D u` = `[Re x, −Im x] @ [Re C; Im C] + D u` (any leading shape)."""
        return ops.matmul(ops.concatenate([x_re, -x_im], -1), output_kernel) + du

    def forward(self, z_x, states, w, dm):
        _, x_re, x_im = states
        b_re, b_im, du = ops.split(z_x, 3, axis=-1)
        lr, li = w["lam_re"], w["lam_im"]
        new_re = lr * x_re - li * x_im + b_re
        new_im = lr * x_im + li * x_re + b_im
        y = self._output(new_re, new_im, du, w["output_kernel"])
        return y, [y, new_re, new_im], {"state": y, "state_tanh": ops.tanh(y)}

    def scan(self, projected, initial_state, mask, *, return_sequences=True,
             zero_output_for_mask=False):
        """Every step at once: the recurrence as one parallel scan over time
        (`rnnbench.cells.scan`), then the output product over all steps (only the last
        one without `return_sequences` and mask). `projected` is in processing order.
        None (the step loop) when `parallel` is off."""
        if not self.parallel:
            return None  # the step loop
        w = self.read_step_weights()
        y0, x0_re, x0_im = initial_state
        b_re, b_im, du = ops.split(projected, 3, axis=-1)
        a_re = ops.broadcast_to(w["lam_re"], ops.shape(b_re))
        a_im = ops.broadcast_to(w["lam_im"], ops.shape(b_im))
        # a masked step keeps the state (a = 1, b = 0: done by the scan)
        x_re, x_im = complex_linear_scan((a_re, a_im), (b_re, b_im), h0=(x0_re, x0_im),
                                         mask=mask)
        if not return_sequences and mask is None:  # only the last output is read
            y = self._output(x_re[:, -1], x_im[:, -1], du[:, -1], w["output_kernel"])
            return y, ops.expand_dims(y, 1), [y, x_re[:, -1], x_im[:, -1]]
        y = self._output(x_re, x_im, du, w["output_kernel"])
        if mask is not None:
            y = masked_outputs(y, mask, y0, zero_output_for_mask)
        return y[:, -1], y, [y[:, -1], x_re[:, -1], x_im[:, -1]]

    def get_config(self):
        return {**super().get_config(), "r_min": self.r_min, "r_max": self.r_max,
                "max_phase": self.max_phase, "parallel": self.parallel}


CELL = LRUCell
