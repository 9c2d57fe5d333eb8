"""Float64 NumPy references of `lru`, `slstm` and `mlstm`, written from their papers.

- `lru`: Orvieto et al. 2023, "Resurrecting Recurrent Neural Networks for Long
  Sequences": eq. (1) (the linear recurrence and output, with A diagonal), §3.2 (the
  exponential parameterisation λ = exp(−exp(ν_log) + i·exp(θ_log))), §3.3 (the
  normalisation γ, initialised at sqrt(1 − |λ|²), trained as γ_log).
- `slstm`, `mlstm`: Beck et al. 2024, "xLSTM: Extended Long Short-Term Memory": sLSTM
  eqs. (8)-(14) with the stabiliser (15)-(17); mLSTM eqs. (19)-(27) with the same
  stabiliser (Appendix: h̃ = C q / max(|nᵀq|, exp(−m))).

The references use the papers' orientation (column vectors, `B` is N×H, `C` is H×N,
one matrix per gate) in complex or float64 arithmetic; the tests map them onto the
layers' fused layouts. `run` applies a mask and `go_backwards` the way Keras's RNN
does: a masked step keeps the previous state and repeats the previous output (zeros
before the first valid step); with `go_backwards` the steps run from the last one and
the outputs come back in that (reversed) order.
"""

from __future__ import annotations

import numpy as np


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


def run(step, state, x, mask=None, go_backwards=False):
    """Runs `step(state, x_t) -> (y_t, state)` over `x` `(B, T, d)`.

    Returns `(outputs (B, T, n) in processing order, final state)`.
    """
    batch, steps = x.shape[:2]
    order = range(steps - 1, -1, -1) if go_backwards else range(steps)
    ys, y_prev = [], None
    for t in order:
        y, new = step(state, x[:, t])
        if y_prev is None:
            y_prev = np.zeros_like(y)
        if mask is not None:
            keep = ~mask[:, t]
            y = np.where(keep[:, None], y_prev, y)
            new = [np.where(keep.reshape((-1,) + (1,) * (s.ndim - 1)), o, s)
                   for o, s in zip(state, new)]
        ys.append(y)
        y_prev, state = y, new
    return np.stack(ys, 1), state


# ------------------------------------------------------------------------- LRU
def lru_init(rng, n, h_in, r_min=0.0, r_max=1.0, max_phase=2 * np.pi):
    """Parameters at the paper's initialisation (Lemma 3.2: λ uniform on the ring
    r_min ≤ |λ| ≤ r_max, phase uniform in [0, max_phase]; §3.3: γ = sqrt(1 − |λ|²))."""
    u1, u2 = rng.uniform(size=n), rng.uniform(size=n)
    nu = -0.5 * np.log(u1 * (r_max**2 - r_min**2) + r_min**2)
    theta = max_phase * u2
    lam = np.exp(-nu + 1j * theta)
    return {
        "nu_log": np.log(nu),
        "theta_log": np.log(theta),
        "gamma_log": np.log(np.sqrt(1 - np.abs(lam) ** 2)),
        "B": (rng.normal(size=(n, h_in)) + 1j * rng.normal(size=(n, h_in))) / np.sqrt(2 * h_in),
        "C": (rng.normal(size=(n, n)) + 1j * rng.normal(size=(n, n))) / np.sqrt(n),
    }


def lru_lambda(P):
    return np.exp(-np.exp(P["nu_log"]) + 1j * np.exp(P["theta_log"]))


def lru(x, P, mask=None, go_backwards=False, state=None):
    """x_k = λ ⊙ x_{k−1} + γ ⊙ (B u_k);  y_k = Re(C x_k) + D u_k.

    `P["D"]` is a vector (D ⊙ u, the paper's diagonal D, when H_in = H_out) or an
    H_out×H_in matrix (eq. 1's general feedthrough). The state is returned as
    `[Re x, Im x]`.
    """
    lam, gamma = lru_lambda(P), np.exp(P["gamma_log"])
    Bn, C, D = P["B"] * gamma[:, None], P["C"], P["D"]
    n = lam.shape[0]

    def step(s, u):
        xs = s[0] + 1j * s[1]
        xs = lam * xs + u @ Bn.T
        y = (xs @ C.T).real + (u * D if D.ndim == 1 else u @ D.T)
        return y, [xs.real, xs.imag]

    if state is None:
        state = [np.zeros((x.shape[0], n)), np.zeros((x.shape[0], n))]
    return run(step, state, x, mask, go_backwards)


# ----------------------------------------------------------------------- sLSTM
def slstm(x, P, heads=1, mask=None, go_backwards=False, forget="sigmoid"):
    """sLSTM, eqs. (8)-(17): gates z, i, f, o from W x + R h_{t−1} + b, with R
    block-diagonal over `heads`; state [h, c, n, m] (stabilised c and n)."""
    W, R, b = P["W"], P["R"], P["b"]
    n = b["z"].shape[0]
    size = n // heads

    def rec(g, h):
        # block-diagonal R: head k only sees its own part of h_{t−1}
        return np.concatenate(
            [h[:, k * size:(k + 1) * size] @ R[g][k] for k in range(heads)], axis=1)

    def step(s, xt):
        h, c, nn, m = s
        pre = {g: xt @ W[g] + rec(g, h) + b[g] for g in "zifo"}
        z = np.tanh(pre["z"])                                              # (11)
        log_i = pre["i"]                                                   # (12) i = exp(ĩ)
        log_f = log_sigmoid(pre["f"]) if forget == "sigmoid" else pre["f"]  # (13)
        o = sigmoid(pre["o"])                                              # (14)
        m_new = np.maximum(log_f + m, log_i)                               # (15)
        i_s = np.exp(log_i - m_new)                                        # (16)
        f_s = np.exp(log_f + m - m_new)                                    # (17)
        c = f_s * c + i_s * z                                              # (8)
        nn = f_s * nn + i_s                                                # (9)
        h = o * (c / nn)                                                   # (10)
        return h, [h, c, nn, m_new]

    zero = np.zeros((x.shape[0], n))
    return run(step, [zero] * 4, x, mask, go_backwards)


def slstm_unstabilised(x, P, heads=1, forget="sigmoid"):
    """The same cell without the stabiliser (eqs. 8-14 only): h must be equal."""
    W, R, b = P["W"], P["R"], P["b"]
    n = b["z"].shape[0]
    size = n // heads
    h, c, nn = (np.zeros((x.shape[0], n)) for _ in range(3))
    hs = []
    for t in range(x.shape[1]):
        xt = x[:, t]
        pre = {g: xt @ W[g] + np.concatenate(
            [h[:, k * size:(k + 1) * size] @ R[g][k] for k in range(heads)], 1) + b[g]
            for g in "zifo"}
        f = sigmoid(pre["f"]) if forget == "sigmoid" else np.exp(pre["f"])
        i = np.exp(pre["i"])
        c = f * c + i * np.tanh(pre["z"])
        nn = f * nn + i
        h = sigmoid(pre["o"]) * c / nn
        hs.append(h)
    return np.stack(hs, 1)


# ----------------------------------------------------------------------- mLSTM
def mlstm(x, P, mask=None, go_backwards=False, forget="sigmoid", state=None):
    """mLSTM, eqs. (19)-(27), one head, stabilised: state [C (B, n, n), n_t, m]."""
    W, b = P["W"], P["b"]
    n = b["q"].shape[0]

    def step(s, xt):
        C, nv, m = s
        q = xt @ W["q"] + b["q"]                                     # (22)
        k = (xt @ W["k"]) / np.sqrt(n) + b["k"]                      # (23)
        v = xt @ W["v"] + b["v"]                                     # (24)
        log_i = xt @ W["i"] + b["i"]                                 # (25), (B, 1)
        f_pre = xt @ W["f"] + b["f"]                                 # (26), (B, 1)
        log_f = log_sigmoid(f_pre) if forget == "sigmoid" else f_pre
        o = sigmoid(xt @ W["o"] + b["o"])                            # (27)
        m_new = np.maximum(log_f + m, log_i)                         # (15)
        i_s, f_s = np.exp(log_i - m_new), np.exp(log_f + m - m_new)  # (16), (17)
        C = f_s[:, :, None] * C + i_s[:, :, None] * np.einsum("bi,bj->bij", v, k)  # (19)
        nv = f_s * nv + i_s * k                                      # (20)
        num = np.einsum("bij,bj->bi", C, q)
        den = np.maximum(np.abs(np.sum(nv * q, -1, keepdims=True)), np.exp(-m_new))
        h = o * num / den                                            # (21)
        return h, [C, nv, m_new]

    if state is None:
        batch = x.shape[0]
        state = [np.zeros((batch, n, n)), np.zeros((batch, n)), np.zeros((batch, 1))]
    return run(step, state, x, mask, go_backwards)


def mlstm_unstabilised(x, P, forget="sigmoid"):
    """eqs. (19)-(27) as printed: h̃ = C q / max(|nᵀq|, 1), no stabiliser."""
    W, b = P["W"], P["b"]
    n = b["q"].shape[0]
    C, nv = np.zeros((x.shape[0], n, n)), np.zeros((x.shape[0], n))
    hs = []
    for t in range(x.shape[1]):
        xt = x[:, t]
        q, k = xt @ W["q"] + b["q"], xt @ W["k"] / np.sqrt(n) + b["k"]
        v = xt @ W["v"] + b["v"]
        i = np.exp(xt @ W["i"] + b["i"])
        f_pre = xt @ W["f"] + b["f"]
        f = sigmoid(f_pre) if forget == "sigmoid" else np.exp(f_pre)
        C = f[:, :, None] * C + i[:, :, None] * np.einsum("bi,bj->bij", v, k)
        nv = f * nv + i * k
        den = np.maximum(np.abs(np.sum(nv * q, -1, keepdims=True)), 1.0)
        hs.append(sigmoid(xt @ W["o"] + b["o"]) * np.einsum("bij,bj->bi", C, q) / den)
    return np.stack(hs, 1)


# ------------------------------------------------------------ random parameters
def random_slstm(rng, d, n, heads=1, scale=0.5):
    size = n // heads
    return {
        "W": {g: rng.uniform(-scale, scale, (d, n)) for g in "zifo"},
        "R": {g: [rng.uniform(-scale, scale, (size, size)) / np.sqrt(size) for _ in range(heads)]
              for g in "zifo"},
        "b": {g: rng.uniform(-0.5, 0.5, n) for g in "zifo"},
    }


def random_mlstm(rng, d, n, scale=0.5):
    W = {g: rng.uniform(-scale, scale, (d, n)) for g in "qkvo"}
    W.update({g: rng.uniform(-scale, scale, (d, 1)) for g in "if"})
    b = {g: rng.uniform(-0.5, 0.5, n) for g in "qkvo"}
    b.update({"i": rng.uniform(-0.5, 0.5, 1), "f": rng.uniform(1.0, 2.0, 1)})
    return {"W": W, "b": b}
