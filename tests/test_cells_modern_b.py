"""`lru`, `slstm`, `mlstm` against float64 NumPy references written from their papers
(`reference_modern_b.py`): the layer's outputs and final states over 60 steps, with a
mask and `go_backwards`; the parallel form against the step form (outputs, states and
gradients); the stabiliser; the LRU's ring initialisation and |λ|; parameter counts;
bad options; and a smoke training run of each cell on four tasks."""

from __future__ import annotations

import math

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

import reference_modern_b as ref  # noqa: E402
from rnnbench.cells import CELLS, CustomRecurrent, make_recurrent_layer, validate_cell_config  # noqa: E402
from rnnbench.cells.listing import format_table  # noqa: E402
from rnnbench.errors import ConfigError  # noqa: E402

B, T, D, N = 3, 60, 5, 8
HEADS = {"slstm": 2}  # the block-diagonal form is the one tested; heads=1 is one block


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


def make_layer(cell, *, dtype="float32", d=D, **kwargs):
    options = {"heads": HEADS[cell]} if cell in HEADS else {}
    layer = CustomRecurrent(cell, N, return_sequences=True, return_state=True,
                            dtype=dtype, **options, **kwargs)
    layer.build((None, T, d))
    return layer


# --------------------------------------------- reference parameters ↔ layer weights
def random_params(cell, rng, d=D):
    if cell == "lru":
        P = ref.lru_init(rng, N, d, r_min=0.5, r_max=0.99, max_phase=math.pi)
        P["D"] = rng.normal(size=N) if d == N else rng.normal(size=(N, d)) / np.sqrt(d)
        return P
    if cell == "slstm":
        return ref.random_slstm(rng, d, N, heads=HEADS["slstm"])
    return ref.random_mlstm(rng, d, N)


def load(layer, cell, P):
    """Writes the reference parameters into the layer's documented layout (the module
    docstrings of rnnbench.cells.families.lru / slstm and MLSTMCell's)."""
    c = layer.cell
    if cell == "lru":
        c.nu_log.assign(P["nu_log"])
        c.theta_log.assign(P["theta_log"])
        c.gamma_log.assign(P["gamma_log"])
        c.kernel.assign(np.concatenate([P["B"].real.T, P["B"].imag.T], 1))
        c.output_kernel.assign(np.concatenate([P["C"].real.T, P["C"].imag.T], 0))
        c.skip.assign(P["D"].T)
    elif cell == "slstm":
        c.kernel.assign(np.concatenate([P["W"][g] for g in "zifo"], 1))
        c.bias.assign(np.concatenate([P["b"][g] for g in "zifo"]))
        c.recurrent_kernel.assign(np.stack([
            np.concatenate([P["R"][g][k] for g in "zifo"], 1) for k in range(len(P["R"]["z"]))]))
    else:
        c.kernel.assign(np.concatenate([P["W"][g] for g in "qkvoif"], 1))
        c.bias.assign(np.concatenate([P["b"][g] for g in "qkvoif"]))


def reference(cell, x, P, mask=None, go_backwards=False):
    if cell == "lru":
        out, (x_re, x_im) = ref.lru(x, P, mask, go_backwards)
        return out, [out_last(out), x_re, x_im]
    if cell == "slstm":
        return ref.slstm(x, P, HEADS["slstm"], mask, go_backwards)
    out, (C, nrm, m) = ref.mlstm(x, P, mask, go_backwards)
    # the layer stores the stabilised C, n with their m; compare the true C = C'·e^m
    return out, [out_last(out), C.reshape(B, -1) * np.exp(m), nrm * np.exp(m), None]


def out_last(out):
    return out[:, -1]


def compare_states(cell, got, want, tol):
    got = [np.asarray(s, np.float64) for s in got]
    if cell == "mlstm":  # undo the stabiliser before comparing
        got = [got[0], got[1] * np.exp(got[3]), got[2] * np.exp(got[3])]
    for g, w in zip(got, want):
        if w is not None:
            assert rel_err(g, w) < tol, cell


def inputs_and_mask(seed, batch=B):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, T, D))
    mask = rng.uniform(size=(batch, T)) > 0.3
    mask[0] = np.arange(T) < 41          # right padding
    mask[1, :7] = False                  # left padding: nothing may leak before step 7
    return rng, x, mask


@pytest.mark.parametrize("cell", ["lru", "slstm", "mlstm"])
@pytest.mark.parametrize("case", ["plain", "masked_backwards"])
def test_cell_matches_its_papers_equations(cell, case):
    rng, x, mask = inputs_and_mask(len(cell))
    P = random_params(cell, rng)
    layer = make_layer(cell, go_backwards=case != "plain")
    heads = HEADS.get(cell, 1)
    expected = CELLS[cell].param_count(D, N) if heads == 1 else 4 * (D * N + N * N // heads + N)
    assert layer.count_params() == expected
    load(layer, cell, P)
    m = mask if case != "plain" else None
    out, *states = layer(x.astype("float32"), mask=m)
    want, want_states = reference(cell, x, P, m, go_backwards=case != "plain")
    assert rel_err(out, want) < 1e-5, cell
    compare_states(cell, states, want_states, 1e-5)
    assert np.std(want[:, -1]) > 0.05  # the reference is not degenerate
    if m is not None:  # padding does not leak: other values at masked steps change nothing
        noisy = np.where(mask[:, :, None], x, 50.0 * rng.normal(size=x.shape))
        out2, *states2 = layer(noisy.astype("float32"), mask=m)
        assert np.array_equal(np.asarray(out), np.asarray(out2))
        for a, b in zip(states, states2):
            assert np.array_equal(np.asarray(a), np.asarray(b))


def test_parameter_counts_are_the_weights_created_and_listed():
    for cell, d in (("lru", D), ("lru", N), ("mlstm", D)):
        layer = make_layer(cell, d=d)
        assert layer.count_params() == CELLS[cell].param_count(d, N), (cell, d)
    for heads in (1, 2, 4):
        layer = CustomRecurrent("slstm", N, heads=heads)
        layer.build((None, T, D))
        assert layer.count_params() == 4 * (D * N + N * N // heads + N)
    assert CELLS["slstm"].param_count(D, N) == 4 * (D * N + N * N + N)
    table = format_table(64, 256)
    for cell in ("lru", "slstm", "mlstm"):
        line = next(row for row in table.splitlines() if row.startswith(cell + " "))
        assert f"{CELLS[cell].param_count(64, 256):,}" in line
    # the LRU's D is diagonal (D ⊙ u) only where the input and output sizes agree
    assert CELLS["lru"].param_count(N, N) == 3 * N + 2 * N * N + 2 * N * N + N
    assert CELLS["lru"].param_count(D, N) == 3 * N + 2 * D * N + 2 * N * N + D * N


@pytest.mark.parametrize("cell", ["lru", "mlstm"])
@pytest.mark.parametrize("dtype, tol", [("float32", 1e-5), ("float64", 1e-10)])
def test_parallel_form_equals_the_step_form(cell, dtype, tol, monkeypatch):
    """The layer trains with the parallel form (`scan`); with `parallel=False` it steps.
    Outputs, final states and gradients agree, with a mask and go_backwards, and
    without a mask (where the LRU's output product runs for the last step only)."""
    rng, x, mask = inputs_and_mask(7)
    P = random_params(cell, rng)
    calls = []
    cls = type(make_layer(cell).cell)
    scan = cls.scan

    def counted(self, *args, **kwargs):
        result = scan(self, *args, **kwargs)
        calls.extend([] if result is None else [1])
        return result

    monkeypatch.setattr(cls, "scan", counted)
    for m, backwards, sequences in ((mask, True, True), (None, False, False)):
        results = []
        for parallel in (True, False):
            layer = CustomRecurrent(cell, N, return_sequences=sequences, return_state=True,
                                    go_backwards=backwards, parallel=parallel, dtype=dtype)
            layer.build((None, T, D))
            load(layer, cell, P)
            xt = tf.constant(x, dtype)
            with tf.GradientTape() as tape:
                tape.watch(xt)
                out, *states = layer(xt, mask=m, training=True)
                weight = tf.cos(tf.range(out.shape[-1], dtype=dtype))
                loss = tf.reduce_sum(out * weight) + sum(tf.reduce_sum(s) for s in states)
            grads = tape.gradient(loss, [layer.trainable_weights, xt])
            results.append((out, states, grads))
        assert len(calls) == (1 if m is not None else 2), "the parallel form ran, and only once"
        (o1, s1, g1), (o2, s2, g2) = results
        assert rel_err(o1, o2) < tol
        for a, b in zip(s1, s2):
            assert rel_err(a, b) < tol
        for a, b in zip(g1[0] + [g1[1]], g2[0] + [g2[1]]):
            assert rel_err(a, b) < tol * 10



@pytest.mark.parametrize("chunk", [7, 20])
def test_mlstm_chunkwise_form_equals_the_papers_equations_and_the_whole_parallel_form(chunk):
    """Chunks of 7 (60 = 8·7 + 4: the last chunk shorter) and 20 (three whole chunks):
    outputs and states equal the float64 reference with a mask and go_backwards, the
    gradients equal those of the whole-sequence parallel form (`chunk=0`), and a state
    handed over half-way gives the second half of the whole run."""
    rng, x, mask = inputs_and_mask(11)
    P = random_params("mlstm", rng)
    want, want_states = reference("mlstm", x, P, mask, go_backwards=True)
    results = []
    for c in (chunk, 0):
        layer = make_layer("mlstm", dtype="float64", go_backwards=True, chunk=c)
        load(layer, "mlstm", P)
        assert layer.cell.chunk == c
        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            out, *states = layer(xt, mask=mask, training=True)
            weight = tf.cos(tf.range(out.shape[-1], dtype="float64"))
            loss = tf.reduce_sum(out * weight) + sum(tf.reduce_sum(s) for s in states)
        results.append((out, tape.gradient(loss, [layer.trainable_weights, xt])))
        assert rel_err(out, want) < 1e-10
        compare_states("mlstm", states, want_states, 1e-10)
    (o1, g1), (o2, g2) = results
    assert rel_err(o1, o2) < 1e-10
    for a, b in zip(g1[0] + [g1[1]], g2[0] + [g2[1]]):
        assert rel_err(a, b) < 1e-9
    # the state carried in: the second half from the first half's final state
    layer = make_layer("mlstm", dtype="float64", chunk=chunk)
    load(layer, "mlstm", P)
    whole = layer(tf.constant(x))[0]
    _, *half_states = layer(tf.constant(x[:, :T // 2]))
    rest = layer(tf.constant(x[:, T // 2:]), initial_state=half_states)[0]
    assert rel_err(rest, whole[:, T // 2:]) < 1e-10


def test_mlstm_chunk_must_not_be_negative():
    with pytest.raises(ConfigError, match=r"cell\.chunk"):
        validate_cell_config({"name": "mlstm", "chunk": -1})

def test_stabiliser_does_not_change_h():
    """The stabilised equations (15)-(17) give the h of the plain ones (8)-(14), (19)-(27)."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(B, T, D))
    for forget in ("sigmoid", "exp"):
        P = ref.random_slstm(rng, D, N, heads=2)
        got = ref.slstm(x, P, 2, forget=forget)[0]
        assert rel_err(got, ref.slstm_unstabilised(x, P, 2, forget=forget)) < 1e-12
        P = ref.random_mlstm(rng, D, N)
        got = ref.mlstm(x, P, forget=forget)[0]
        assert rel_err(got, ref.mlstm_unstabilised(x, P, forget=forget)) < 1e-12


def test_exp_forget_gate_matches_reference():
    rng, x, _ = inputs_and_mask(11)
    for cell in ("slstm", "mlstm"):
        P = random_params(cell, rng)
        P["b"]["f"] = -P["b"]["f"]  # f = exp(f̃) mostly below 1, as a forget gate is
        layer = make_layer(cell, forget_activation="exp")
        load(layer, cell, P)
        out = layer(x.astype("float32"))[0]
        fn = ref.slstm if cell == "slstm" else ref.mlstm
        kwargs = {"heads": HEADS["slstm"]} if cell == "slstm" else {}
        want = fn(x, P, forget="exp", **kwargs)[0]
        assert rel_err(out, want) < 1e-5, cell
        assert rel_err(out, fn(x, P, **kwargs)[0]) > 1e-3  # the option changes something


def test_lru_ring_initialisation_and_eigenvalue_moduli():
    keras.utils.set_random_seed(0)
    layer = CustomRecurrent("lru", 256, r_min=0.4, r_max=0.8, max_phase=1.0)
    layer.build((None, None, 3))
    cell = layer.cell
    moduli = cell.eigenvalue_moduli()
    assert moduli.shape == (256,) and moduli.dtype == np.float64
    assert 0.4 - 1e-6 <= moduli.min() and moduli.max() <= 0.8 + 1e-6
    # uniform in area on the ring: E|λ|² is the middle of [r_min², r_max²] (0.4 ± 0.02)
    assert abs(np.mean(moduli**2) - (0.16 + 0.64) / 2) < 0.03
    assert np.allclose(moduli, np.exp(-np.exp(np.asarray(cell.nu_log, np.float64))))
    theta = np.exp(np.asarray(cell.theta_log, np.float64))
    assert 0 < theta.min() and theta.max() <= 1.0 + 1e-6
    gamma = np.exp(np.asarray(cell.gamma_log, np.float64))
    assert np.allclose(gamma, np.sqrt(1 - moduli**2), rtol=1e-5)


@pytest.mark.parametrize("cfg, match", [
    ({"name": "lru", "r_min": 0.95, "r_max": 0.9}, r"cell\.r_min=0\.95 must be below cell\.r_max"),
    ({"name": "lru", "r_min": 0.9, "r_max": 0.9}, r"cell\.r_min=0\.9 must be below"),
    ({"name": "lru", "r_max": 1.0}, r"cell\.r_max=1\.0"),
    ({"name": "lru", "max_phase": 0.0}, r"cell\.max_phase"),
    ({"name": "slstm", "heads": 0}, r"cell\.heads"),
    ({"name": "mlstm", "forget_activation": "tanh"}, r"cell\.forget_activation"),
])
def test_bad_options_are_config_errors(cfg, match):
    with pytest.raises(ConfigError, match=match):
        validate_cell_config(cfg)


@pytest.mark.parametrize("cfg, keys", [
    ({"name": "slstm", "r_min": 0.5}, ("heads", "forget_activation")),
    ({"name": "slstm", "parallel": False}, ("heads", "forget_activation")),
    ({"name": "lru", "heads": 2}, ("r_min", "r_max", "max_phase", "parallel")),
    ({"name": "mlstm", "heads": 2}, ("forget_activation", "parallel")),
])
def test_an_option_of_another_family_names_the_keys_it_has(cfg, keys):
    with pytest.raises(ConfigError) as info:
        validate_cell_config(cfg)
    assert all(key in str(info.value) for key in keys), str(info.value)


def test_heads_must_divide_units_and_recurrent_dropout_needs_a_recurrent_product():
    with pytest.raises(ConfigError, match=r"cell\.heads=3 must divide the number of units \(8\)"):
        make_recurrent_layer({"name": "slstm", "heads": 3}, 8, return_sequences=False)
    for name in ("lru", "mlstm"):
        with pytest.raises(ConfigError, match="cell.recurrent_dropout must be 0"):
            make_recurrent_layer({"name": name, "recurrent_dropout": 0.2}, 8,
                                 return_sequences=False)


@pytest.mark.slow
@pytest.mark.parametrize("cell", ["lru", "slstm", "mlstm"])
def test_cell_trains_on_four_tasks(cell, inputs, tmp_path):
    from helpers import assert_trains_on_smoke_tasks

    assert_trains_on_smoke_tasks(cell, inputs, tmp_path)
