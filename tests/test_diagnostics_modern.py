"""The diagnostics of the cells of issue 24 (indrnn, mingru, minlstm, lru, slstm, mlstm):
gradient flow against a direct `tf.GradientTape` computation through the step form
(so that the parallel scan the probe runs through is checked against the steps), gate
statistics against NumPy gates computed from the weights, spectral norms of the
recurrent weights there are, and |λ| of lru logged at every probe epoch."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from rnnbench.cells import make_recurrent_layer
from rnnbench.diagnostics import DiagnosticsCallback, GradientFlow, RecurrentProbe
from rnnbench.diagnostics.recurrent import modulus_statistics
from rnnbench.tracking.schema import Metrics

tf = pytest.importorskip("tensorflow")

MODERN = ("indrnn", "mingru", "minlstm", "lru", "slstm", "mlstm")
STEPS, FEATURES, UNITS = 7, 3, 4
LENGTHS = (7, 4, 2)  # right-padded, masked


def model_of(cell: str, *, mask: bool = False, sequences: bool = False,
             units: int = UNITS, options: dict | None = None) -> keras.Model:
    inp = keras.Input((STEPS, FEATURES), name="inputs")
    h = keras.layers.Masking(0.0, name="mask")(inp) if mask else inp
    layer = make_recurrent_layer({"name": cell, "impl": "custom", **(options or {})}, units,
                                 return_sequences=sequences, name="rnn_0")
    return keras.Model(inp, keras.layers.Dense(1, name="head")(layer(h)))


def padded_batch(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(len(LENGTHS), STEPS, FEATURES)).astype("float32")
    x += np.sign(x) * 0.1  # no exact zero inside a sequence (the mask value)
    for b, n in enumerate(LENGTHS):
        x[b, n:] = 0.0
    return x, rng.normal(size=(len(LENGTHS), 1)).astype("float32")


def stepped(layer, x):
    """`h` after the last step of `x` `(1, t, d)`: the cell's `step`, one step at a time
    (never the family's scan)."""
    cell = layer.cell
    projected = cell.project(x)
    sizes = cell.state_size if isinstance(cell.state_size, (list, tuple)) else [
        cell.state_size]
    states = [tf.zeros((x.shape[0], s)) for s in sizes]
    with cell.looping(states[0]):
        for t in range(x.shape[1]):
            h, states, _ = cell.step(projected[:, t], states)
    return h


@pytest.mark.parametrize("cell", MODERN)
def test_gradient_flow_equals_a_direct_tape_through_the_steps(cell):
    keras.utils.set_random_seed(11)
    model = model_of(cell, mask=True)
    x, y = padded_batch(3)
    profile, _ = GradientFlow(model, "mse", seq2seq=False).compute(x, y)

    layer, head = model.get_layer("rnn_0"), model.get_layer("head")
    per_lag: dict[int, list[float]] = {}
    for b, n in enumerate(LENGTHS):  # each example alone, cut at its length: no mask
        xb = tf.constant(x[b:b + 1, :n])
        with tf.GradientTape() as tape:
            tape.watch(xb)
            loss = keras.losses.mean_squared_error(y[b:b + 1], head(stepped(layer, xb)))
        g = np.linalg.norm(tape.gradient(loss, xb).numpy()[0], axis=-1)
        for lag in range(n):
            per_lag.setdefault(lag, []).append(g[n - 1 - lag])
    want = np.array([np.mean(per_lag[k]) for k in sorted(per_lag)])
    assert list(profile.examples) == [len(per_lag[k]) for k in sorted(per_lag)] \
        == [3, 3, 2, 2, 1, 1, 1]
    assert want[0] > 0
    np.testing.assert_allclose(profile.g, want, rtol=2e-4, atol=1e-6 * want[0])


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def stabilised(i_pre, log_f):
    """The stabilised gates i', f' of sLSTM/mLSTM, eqs. (15)-(17), m starting at 0."""
    m = np.zeros_like(i_pre[:, 0])
    ins, fs = [], []
    for t in range(i_pre.shape[1]):
        m_new = np.maximum(log_f[:, t] + m, i_pre[:, t])
        ins.append(np.exp(i_pre[:, t] - m_new))
        fs.append(np.exp(log_f[:, t] + m - m_new))
        m = m_new
    return np.stack(ins, 1), np.stack(fs, 1)


def numpy_gates(cell: str, layer, x: np.ndarray) -> dict[str, np.ndarray]:
    """The cell's gates (and state_tanh where it does not need h) from its weights, in
    float64, for gates that read x only (slstm: with R = 0)."""
    c = layer.cell
    n = c.units
    kernel = np.asarray(c.kernel, np.float64)
    z = x.astype(np.float64) @ kernel + np.asarray(c.bias, np.float64)
    if cell == "mingru":
        return {"update": sigmoid(z[..., :n])}
    if cell == "minlstm":
        f, i = sigmoid(z[..., :n]), sigmoid(z[..., n:2 * n])
        return {"forget": f / (f + i), "input": i / (f + i)}
    if cell == "slstm":  # blocks z, i, f, o
        i_s, f_s = stabilised(z[..., n:2 * n], -np.logaddexp(0.0, -z[..., 2 * n:3 * n]))
        return {"input": i_s, "forget": f_s, "output": sigmoid(z[..., 3 * n:]),
                "state_tanh": np.tanh(z[..., :n])}
    # mlstm: q, k, v, o (n each), then the scalar ĩ, f̃
    i_s, f_s = stabilised(z[..., 4 * n:4 * n + 1], -np.logaddexp(0.0, -z[..., 4 * n + 1:]))
    ones = np.ones(z.shape[:-1] + (n,))
    return {"input": i_s * ones, "forget": f_s * ones, "output": sigmoid(z[..., 3 * n:4 * n])}


def expected_stats(values: dict[str, np.ndarray], real: np.ndarray) -> dict[str, float]:
    w = np.broadcast_to(real[:, :, None], next(iter(values.values())).shape)
    out = {}
    for name, v in values.items():
        if name == "state_tanh":
            out["state_tanh_saturated"] = float(np.mean((np.abs(v) > 0.95)[w]))
        else:
            out[f"{name}_mean"] = float(np.mean(v[w]))
            out[f"{name}_saturated"] = float(np.mean(((v < 0.05) | (v > 0.95))[w]))
    return out


@pytest.mark.parametrize("cell", MODERN)
def test_gate_statistics_of_each_familys_own_gates(cell):
    from rnnbench.cells import CELLS

    keras.utils.set_random_seed(5)
    model = model_of(cell, mask=True, sequences=True)
    layer = model.get_layer("rnn_0")
    x, _ = padded_batch(7)
    model(x)
    c = layer.cell
    if cell != "lru":  # wide biases: gates spread over [0, 1], some saturated
        bias = np.random.default_rng(1).normal(scale=3.0, size=c.bias.shape)
        c.bias.assign(bias.astype("float32"))
    if cell == "slstm":
        c.recurrent_kernel.assign(np.zeros(c.recurrent_kernel.shape, "float32"))
    real = np.array([[t < n for t in range(STEPS)] for n in LENGTHS])
    probe = RecurrentProbe(model)
    stats = {k: float(v) for k, v in tf.function(probe.trace_statistics)(x).items()}
    names = {k.split("/")[-1] for k in stats}
    gates = CELLS[cell].gates
    assert names == {f"{g}_{s}" for g in gates for s in ("mean", "saturated")} | {
        "state_tanh_saturated"}
    want = {}
    if gates:
        want = expected_stats(numpy_gates(cell, layer, x), real)
        saturated = [want[f"{g}_saturated"] for g in gates]  # not all alike: a real check
        assert any(0 < v < 1 for v in saturated) or len(set(saturated)) > 1, want
    if "state_tanh_saturated" not in want:  # tanh(h'), h' the layer's own outputs
        h = np.asarray(keras.Model(model.input, layer.output)(x), np.float64)
        want["state_tanh_saturated"] = expected_stats({"state_tanh": np.tanh(h)},
                                                      real)["state_tanh_saturated"]
    for key, value in want.items():
        assert stats[f"gates/rnn_0/{key}"] == pytest.approx(value, abs=1e-6), key


def test_spectral_norms_of_the_recurrent_weights_there_are():
    keras.utils.set_random_seed(2)
    x = np.ones((1, STEPS, FEATURES), "float32")
    norms = {}
    for cell in MODERN:
        model = model_of(cell, units=6, options={"heads": 2} if cell == "slstm" else None)
        model(x)
        norms[cell] = RecurrentProbe(model).spectral_norms()
    assert not norms["lru"] and not norms["mingru"] and not norms["minlstm"] \
        and not norms["mlstm"]  # no recurrent weight
    model = model_of("indrnn")
    model(x)
    c = model.get_layer("rnn_0").cell
    c.recurrent_weight.assign(np.array([0.5, -1.7, 0.2, 1.1], "float32"))  # diag(u)
    assert RecurrentProbe(model).spectral_norms() == {"spectral_norm/rnn_0": pytest.approx(1.7)}
    # slstm, 2 heads: R is block-diagonal; its norm is that of the full (n × 4n) matrix
    model = model_of("slstm", units=6, options={"heads": 2})
    model(x)
    r = np.asarray(model.get_layer("rnn_0").cell.recurrent_kernel)  # (2, 3, 12)
    full = np.zeros((6, 24))
    for head in range(2):
        for block in range(4):
            full[head * 3:(head + 1) * 3, block * 6 + head * 3:block * 6 + (head + 1) * 3] = \
                r[head][:, block * 3:(block + 1) * 3]
    got = RecurrentProbe(model).spectral_norms()
    assert got["spectral_norm/rnn_0"] == pytest.approx(np.linalg.norm(full, 2), rel=1e-6)
    for block, name in enumerate(("z", "input", "forget", "output")):
        assert got[f"spectral_norm/rnn_0/{name}"] == pytest.approx(
            np.linalg.norm(full[:, block * 6:(block + 1) * 6], 2), rel=1e-6)
    assert set(norms["slstm"]) == set(got)


def test_modulus_statistics():
    out = modulus_statistics([0.5, 0.9, 0.995, 0.999, np.nan])
    assert out["min"] == 0.5 and out["max"] == 0.999 and out["above_0.99"] == 0.5
    assert out["median"] == pytest.approx(0.9475)
    assert out["q10"] == pytest.approx(0.62) and out["q90"] == pytest.approx(0.9978)
    assert modulus_statistics([]) == {}


class _Run:
    """What the callback writes besides the metrics (artifacts, tags), dropped."""

    def log_json(self, *args):
        pass

    log_text = log_figure = set_tags = log_json


@pytest.mark.slow
def test_lru_eigenvalue_moduli_are_logged_at_every_probe_epoch(monkeypatch):
    keras.utils.set_random_seed(4)
    model = model_of("lru")
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, STEPS, FEATURES)).astype("float32")
    y = (3.0 * x[:, :1, :1].reshape(16, 1)).astype("float32")
    cell = model.get_layer("rnn_0").cell
    seen = {0: cell.eigenvalue_moduli()}

    class Moduli(keras.callbacks.Callback):  # placed before the diagnostics
        def on_epoch_end(self, epoch, logs=None):
            seen[epoch + 1] = cell.eigenvalue_moduli()

    rows: list = []
    monkeypatch.setattr("rnnbench.tracking.log_metric_steps",
                        lambda run, batch: rows.extend(batch))
    diagnostics = DiagnosticsCallback(_Run(), (x[:4], y[:4]), loss="mse", seq2seq=False,
                                      background=False, write_every_s=0)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[Moduli(), diagnostics])
    prefix = f"{Metrics.EIGENVALUE_MODULUS_PREFIX}rnn_0/"
    logged = {step: {k[len(prefix):]: v for k, v in m.items() if k.startswith(prefix)}
              for step, m in rows if any(k.startswith(prefix) for k in m)}
    assert sorted(logged) == [0, 1, 2]
    assert not np.allclose(seen[0], seen[2])  # training moved λ
    for step, stats in logged.items():
        assert set(stats) == {"min", "q10", "median", "q90", "max", "above_0.99"}
        want = modulus_statistics(seen[step])
        for key, value in want.items():
            assert stats[key] == pytest.approx(value, rel=1e-6), (step, key)
        assert 0 < stats["min"] <= stats["median"] <= stats["max"] < 1
    assert all(not k.startswith(Metrics.EIGENVALUE_MODULUS_PREFIX)
               for _, m in rows for k in m if "rnn_0" not in k)


@pytest.mark.slow
def test_a_real_run_of_lru_logs_every_diagnostic_of_both_directions(inputs, tmp_path):
    # speech_vowels: masked utterances and a bidirectional layer (two directions)
    import mlflow

    from helpers import tiny_task_run

    db = tmp_path / "lru.db"
    _, result = tiny_task_run("speech_vowels", inputs, db, "cell=lru", "train.epochs=1",
                              "tracking.log_model=false")
    assert result.status == "FINISHED"
    metrics = mlflow.MlflowClient(f"sqlite:///{db}").get_run(result.run_id).data.metrics
    for layer in ("forward_rnn_0", "backward_rnn_0"):
        stats = {k.rsplit("/", 1)[1]: v for k, v in metrics.items()
                 if k.startswith(f"{Metrics.EIGENVALUE_MODULUS_PREFIX}{layer}/")}
        assert set(stats) == {"min", "q10", "median", "q90", "max", "above_0.99"}, layer
        assert 0 < stats["min"] <= stats["q10"] <= stats["median"] <= stats["q90"] \
            <= stats["max"] < 1
        assert 0 <= metrics[f"gates/{layer}/state_tanh_saturated"] <= 1
        assert f"spectral_norm/{layer}" not in metrics  # no recurrent weight
    assert 0 < metrics["grad_flow/decay_ratio"] and metrics["grad_flow/horizon"] >= 0
