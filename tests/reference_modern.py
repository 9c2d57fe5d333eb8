"""Float64 NumPy references of indrnn, mingru and minlstm, one step at a time, written
from the papers' equations (not from the Keras code).

Weights are given unfused, by name, as the papers write them; `x` is `(B, T, d)`.
Each function returns `h` for every step, `(B, T, n)`. A mask `(B, T)` keeps the
previous state at a masked step; `go_backwards` runs from the last step and returns the
states in that order (Keras's conventions).
"""

from __future__ import annotations

import numpy as np


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def g(x):
    """Feng et al. 2024, the log-space version's activation: x + 0.5 for x ≥ 0, σ(x) else."""
    return np.where(x >= 0, x + 0.5, sigmoid(x))


def _run(step, x, n, mask=None, go_backwards=False, h0=None):
    x = np.asarray(x, np.float64)
    batch, steps = x.shape[:2]
    order = range(steps - 1, -1, -1) if go_backwards else range(steps)
    h = np.zeros((batch, n)) if h0 is None else np.asarray(h0, np.float64)
    out = []
    for t in order:
        new = step(x[:, t], h)
        if mask is not None:
            new = np.where(np.asarray(mask)[:, t, None], new, h)
        h = new
        out.append(h)
    return np.stack(out, 1)


def indrnn(x, P, u_max=None, u_min=None, **kw):
    """Li et al. 2018, Eq. (2): h_t = relu(W x_t + u ⊙ h_{t−1} + b).

    With the bound of Eq. (4) (|u| ≤ γ^{1/T}, and |u| ≥ ε^{1/T} if asked), the recurrent
    weight used is u with |u| clipped to [u_min, u_max], sign kept.
    """
    u = np.asarray(P["u"], np.float64)
    if u_max is not None or u_min is not None:
        mag = np.clip(np.abs(u), u_min if u_min is not None else 0.0,
                      u_max if u_max is not None else np.inf)
        u = np.where(u < 0, -mag, mag)
    W, b = P["W"], P["b"]
    return _run(lambda xt, h: np.maximum(xt @ W + u * h + b, 0.0), x, len(b), **kw)


def mingru(x, P, log_space=False, **kw):
    """Feng et al. 2024, Section 3.1 (minGRU):
    z_t = σ(Linear_z(x_t)); h̃_t = Linear_h(x_t); h_t = (1 − z_t) ⊙ h_{t−1} + z_t ⊙ h̃_t.
    With log_space, h̃_t = g(Linear_h(x_t)) (the paper's log-space version, Appendix)."""
    Wz, bz, Wh, bh = P["Wz"], P["bz"], P["Wh"], P["bh"]

    def step(xt, h):
        z = sigmoid(xt @ Wz + bz)
        cand = xt @ Wh + bh
        cand = g(cand) if log_space else cand
        return (1.0 - z) * h + z * cand

    return _run(step, x, len(bz), **kw)


def minlstm(x, P, log_space=False, **kw):
    """Feng et al. 2024, Section 3.2 (minLSTM):
    f_t = σ(Linear_f(x_t)); i_t = σ(Linear_i(x_t)); h̃_t = Linear_h(x_t);
    f'_t = f_t / (f_t + i_t); i'_t = i_t / (f_t + i_t); h_t = f'_t ⊙ h_{t−1} + i'_t ⊙ h̃_t.
    With log_space, h̃_t = g(Linear_h(x_t))."""
    Wf, bf, Wi, bi, Wh, bh = (P[k] for k in ("Wf", "bf", "Wi", "bi", "Wh", "bh"))

    def step(xt, h):
        f = sigmoid(xt @ Wf + bf)
        i = sigmoid(xt @ Wi + bi)
        cand = xt @ Wh + bh
        cand = g(cand) if log_space else cand
        return f / (f + i) * h + i / (f + i) * cand

    return _run(step, x, len(bf), **kw)


def linear_recurrence(a, b, h0=None, mask=None, go_backwards=False):
    """h_t = a_t ⊙ h_{t−1} + b_t with a plain loop (a, b real or complex arrays)."""
    a, b = np.asarray(a), np.asarray(b)
    batch, steps, n = a.shape
    h = np.zeros((batch, n), a.dtype) if h0 is None else np.asarray(h0, a.dtype)
    order = range(steps - 1, -1, -1) if go_backwards else range(steps)
    out = []
    for t in order:
        new = a[:, t] * h + b[:, t]
        if mask is not None:
            new = np.where(np.asarray(mask)[:, t, None], new, h)
        h = new
        out.append(h)
    return np.stack(out, 1)
