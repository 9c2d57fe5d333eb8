"""Every cell against a float64 NumPy reference written from shared/specs/cells.md.

The references below are written from the spec's equations, one gate at a time, with
separate matrices per gate (`W[g]` is d×n, `U[g]` n×n, `b[g]`, `p[g]` n). The test maps
them onto the layer's documented fused layout (`rnnbench.cells.variants` module
docstring) and compares outputs and final states over 60 steps.
"""

import zlib

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from rnnbench.cells import CELLS, CustomRecurrent

B, T, D, N = 3, 60, 5, 7
REL_TOL = 1e-5


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# ---------------------------------------------------------------- references (spec)
def ref_rnn(x, P):
    h = np.zeros((x.shape[0], N))
    hs = []
    for t in range(x.shape[1]):
        h = np.tanh(x[:, t] @ P["W"]["h"] + h @ P["U"]["h"] + P["b"]["h"])
        hs.append(h)
    return np.stack(hs, 1), [h]


def ref_gru(x, P, reset_after):
    W, U, b = P["W"], P["U"], P["b"]
    h = np.zeros((x.shape[0], N))
    hs = []
    for t in range(x.shape[1]):
        xt = x[:, t]
        z = sigmoid(xt @ W["z"] + h @ U["z"] + b["z"])
        r = sigmoid(xt @ W["r"] + h @ U["r"] + b["r"])
        if reset_after:
            g = np.tanh(xt @ W["h"] + b["h"] + r * (h @ U["h"] + P["bh2"]))
        else:
            g = np.tanh(xt @ W["h"] + (r * h) @ U["h"] + b["h"])
        h = z * h + (1 - z) * g
        hs.append(h)
    return np.stack(hs, 1), [h]


def ref_lstm_family(x, P, variant):
    """`lstm`/`np` (no peepholes), `peephole`, and the Greff et al. variants."""
    W, U, b, p, R = P["W"], P["U"], P["b"], P.get("p", {}), P.get("R", {})
    peep = variant not in ("lstm", "np")
    batch = x.shape[0]
    h, c = np.zeros((batch, N)), np.zeros((batch, N))
    prev = {g: np.zeros((batch, N)) for g in "ifo"}  # fgr: previous gate activations
    hs = []

    def pre(gate, xt, cell_state):
        a = xt @ W[gate] + h @ U[gate] + b[gate]
        if peep:
            a = a + p[gate] * cell_state
        if variant == "fgr":
            a = a + sum(prev[src] @ R[gate + src] for src in "ifo")
        return a

    for t in range(x.shape[1]):
        xt = x[:, t]
        i = np.ones_like(h) if variant == "nig" else sigmoid(pre("i", xt, c))
        if variant == "nfg":
            f = np.ones_like(h)
        elif variant == "cifg":
            f = 1 - i
        else:
            f = sigmoid(pre("f", xt, c))
        a_c = xt @ W["c"] + h @ U["c"] + b["c"]
        g = a_c if variant == "niaf" else np.tanh(a_c)
        c_new = f * c + i * g
        o = np.ones_like(h) if variant == "nog" else sigmoid(pre("o", xt, c_new))
        h_new = o * c_new if variant == "noaf" else o * np.tanh(c_new)
        prev = {"i": i, "f": f, "o": o}
        h, c = h_new, c_new
        hs.append(h)
    states = [h, c]
    if variant == "fgr":
        states.append(np.concatenate([prev["i"], prev["f"], prev["o"]], axis=1))
    return np.stack(hs, 1), states


def ref_janet(x, P):
    W, U, b = P["W"], P["U"], P["b"]
    h = np.zeros((x.shape[0], N))
    hs = []
    for t in range(x.shape[1]):
        s = x[:, t] @ W["f"] + h @ U["f"] + b["f"]
        g = np.tanh(x[:, t] @ W["c"] + h @ U["c"] + b["c"])
        h = sigmoid(s) * h + (1 - sigmoid(s - 1.0)) * g
        hs.append(h)
    return np.stack(hs, 1), [h]


def reference(cell, x, P):
    if cell == "rnn":
        return ref_rnn(x, P)
    if cell in ("gru", "gru_v1"):
        return ref_gru(x, P, reset_after=cell == "gru")
    if cell == "janet":
        return ref_janet(x, P)
    return ref_lstm_family(x, P, cell)


# ------------------------------------------------- the layer's documented layout
BLOCKS = {
    "rnn": "h",
    "gru": "zrh",
    "gru_v1": "zrh",
    "janet": "fc",
    "nig": "fco",
    "nfg": "ico",
    "cifg": "ico",
    "nog": "ifc",
}
PEEPHOLES = {"lstm": "", "np": "", "nig": "fo", "nfg": "io", "cifg": "io", "nog": "if"}
PEEPHOLE_NAME = {"i": "input", "f": "forget", "o": "output"}


def random_params(cell, rng, scale=0.6):
    blocks = BLOCKS.get(cell, "ifco")
    P = {
        "W": {g: rng.uniform(-scale, scale, (D, N)) for g in blocks},
        "U": {g: rng.uniform(-scale, scale, (N, N)) / np.sqrt(N) * 2 for g in blocks},
        "b": {g: rng.uniform(-0.5, 0.5, N) for g in blocks},
    }
    if cell == "gru":
        P["bh2"] = rng.uniform(-0.5, 0.5, N)
    if CELLS[cell].family == "lstm":
        P["p"] = {g: rng.uniform(-0.5, 0.5, N) for g in PEEPHOLES.get(cell, "ifo")}
    if cell == "fgr":
        P["R"] = {
            a + s: rng.uniform(-scale, scale, (N, N)) / np.sqrt(N) for a in "ifo" for s in "ifo"
        }
    return P


def load_params(layer, cell, P):
    blocks = BLOCKS.get(cell, "ifco")
    c = layer.cell
    c.kernel.assign(np.concatenate([P["W"][g] for g in blocks], 1))
    c.recurrent_kernel.assign(np.concatenate([P["U"][g] for g in blocks], 1))
    c.bias.assign(np.concatenate([P["b"][g] for g in blocks]))
    if cell == "gru":
        c.recurrent_bias.assign(P["bh2"])
    for g, value in P.get("p", {}).items():
        getattr(c, f"peephole_{PEEPHOLE_NAME[g]}").assign(value)
    if cell == "fgr":
        # rows: the previous gate (source), columns: the gate it feeds (target)
        R = np.block([[P["R"][tgt + src] for tgt in "ifo"] for src in "ifo"])
        c.gate_recurrent_kernel.assign(R)


def rel_err(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / max(np.max(np.abs(b)), 1e-12))


@pytest.mark.parametrize("cell", list(CELLS))
def test_cell_matches_numpy_reference(cell):
    rng = np.random.default_rng(zlib.crc32(cell.encode()))
    x = rng.normal(size=(B, T, D))
    P = random_params(cell, rng)
    layer = CustomRecurrent(cell, N, return_sequences=True, return_state=True)
    layer.build((None, T, D))
    # the weights the spec needs, no more: removed gates create nothing
    assert layer.count_params() == CELLS[cell].param_count(D, N)
    load_params(layer, cell, P)

    out, *states = layer(x.astype("float32"))
    ref_out, ref_states = reference(cell, x, P)

    assert rel_err(out, ref_out) < REL_TOL, cell
    assert len(states) == len(ref_states)
    for got, want in zip(states, ref_states):
        assert rel_err(got, want) < REL_TOL, cell
    # the reference itself is not degenerate
    assert np.std(ref_out[:, -1]) > 0.05


def test_reference_detects_peephole_on_old_cell_state():
    """The output gate must look at c' (new), not c: the test would see the difference."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(B, T, D))
    P = random_params("peephole", rng)
    layer = CustomRecurrent("peephole", N, return_sequences=True)
    layer.build((None, T, D))
    load_params(layer, "peephole", P)
    out = np.asarray(layer(x.astype("float32")))
    wrong = dict(P, p=dict(P["p"], o=P["p"]["o"] * 0.5))
    assert rel_err(out, reference("peephole", x, wrong)[0]) > 1e-3
