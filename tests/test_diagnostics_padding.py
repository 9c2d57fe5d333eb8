"""Diagnostics on padded batches, checked against independent computations.

The gradient flow is compared with a plain ``tf.GradientTape`` pass over each sequence
cut to its real length (no padding, no mask); the gate statistics with an LSTM written
out in NumPy that runs over the real steps only. Both for one and two recurrent
layers, on masked inputs and on inputs padded without a mask (the lengths given).
"""

from __future__ import annotations

import functools

import keras
import numpy as np
import pytest

from rnnbench.diagnostics import GradientFlow, RecurrentProbe

FEATURES, UNITS, STEPS = 3, 4, 10
LENGTHS = np.array([10, 7, 4, 9, 2])


def padded_batch(*, zero_steps: bool, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` right-padded with zeros after ``LENGTHS``; ``zero_steps`` puts all-zero
    inputs at real steps too (a rest in a piano roll), one of them the last real step."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(len(LENGTHS), STEPS, FEATURES)).astype("float32")
    for b, n in enumerate(LENGTHS):
        x[b, n:] = 0.0
    if zero_steps:
        x[1, 2] = 0.0
        x[1, LENGTHS[1] - 1] = 0.0  # the last real step looks like padding
        x[3, 0] = 0.0
    y = rng.normal(size=(len(LENGTHS), STEPS, 2)).astype("float32")
    return x, y


def lstm_model(layers: int, *, masked: bool, seq2seq: bool, seed: int = 1) -> keras.Model:
    """Masking (optional) → ``layers`` LSTMs named ``rnn_i`` → Dense(2), with weights
    large enough that some gates saturate."""
    keras.utils.set_random_seed(seed)
    init = keras.initializers.RandomNormal(stddev=1.2, seed=seed)
    inp = keras.Input((None, FEATURES), name="inputs")
    h = keras.layers.Masking(0.0, name="mask")(inp) if masked else inp
    for i in range(layers):
        last = i == layers - 1
        h = keras.layers.LSTM(UNITS, name=f"rnn_{i}", return_sequences=seq2seq or not last,
                              kernel_initializer=init, recurrent_initializer=init,
                              bias_initializer=keras.initializers.RandomNormal(seed=seed + i))(h)
    return keras.Model(inp, keras.layers.Dense(2, name="head")(h))


# -- gradient flow ----------------------------------------------------------------------

def expected_profile(model: keras.Model, x: np.ndarray, y: np.ndarray, seq2seq: bool):
    """g(k) and the number of sequences at each lag, one sequence at a time, each cut to
    its real length: ``‖∂L_b/∂x_{b, T_b−k}‖`` with ``L_b`` the MSE at its last step."""
    import tensorflow as tf

    per_lag: dict[int, list[float]] = {}
    for b, n in enumerate(LENGTHS):
        xb = tf.constant(x[b:b + 1, :n])
        with tf.GradientTape() as tape:
            tape.watch(xb)
            pred = model(xb, training=False)
            target = y[b:b + 1, n - 1] if seq2seq else y[b:b + 1]
            if seq2seq:
                pred = pred[:, -1]
            loss = tf.reduce_mean(tf.square(pred - target))
        norms = np.linalg.norm(tape.gradient(loss, xb).numpy()[0], axis=-1)
        for k in range(n):
            per_lag.setdefault(k, []).append(float(norms[n - 1 - k]))
    lags = sorted(per_lag)
    return (np.array([np.mean(per_lag[k]) for k in lags]),
            np.array([len(per_lag[k]) for k in lags]))


CASES = [  # (masked, seq2seq): masked classification, masked and unmasked seq2seq
    pytest.param(True, False, id="masked-seq2one"),
    pytest.param(True, True, id="masked-seq2seq"),
    pytest.param(False, True, id="padded-no-mask-seq2seq"),
]


@functools.cache
def probed(layers: int, masked: bool, seq2seq: bool):
    """The model, its padded batch, and what the probe measures on it (the gradient-flow
    profile and, in the same compiled call, the gate statistics), once per case."""
    model = lstm_model(layers, masked=masked, seq2seq=seq2seq)
    x, y = padded_batch(zero_steps=not masked)
    targets = y if seq2seq else y[:, 0]
    probe = RecurrentProbe(model)
    probe.sync()
    flow = GradientFlow(model, "mse", seq2seq=seq2seq, extra=probe.trace_statistics)
    # masked: the mask alone says where each sequence ends
    profile, gates = (flow.compute(x, targets) if masked
                      else flow.compute(x, targets, LENGTHS))
    return model, x, targets, profile, gates


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("masked,seq2seq", CASES)
@pytest.mark.slow
def test_profile_matches_a_gradient_tape_on_each_unpadded_sequence(layers, masked, seq2seq):
    model, x, targets, profile, _ = probed(layers, masked, seq2seq)
    want, counts = expected_profile(model, x, targets, seq2seq)
    np.testing.assert_allclose(profile.g, want, rtol=2e-4, atol=1e-9)
    assert list(profile.examples) == list(counts) == [5, 5, 4, 4, 3, 3, 3, 2, 2, 1]


# -- gate statistics ---------------------------------------------------------------------

def numpy_lstm(layer: keras.layers.Layer, seq: np.ndarray) -> tuple[dict, np.ndarray]:
    """Keras's LSTM (gates i, f, c, o; sigmoid, tanh) over one unpadded sequence from the
    zero state, in float64: the per-step gate values and the outputs ``h``."""
    kernel, recurrent, bias = (np.asarray(w, np.float64) for w in layer.get_weights())
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    h = np.zeros(UNITS)
    c = np.zeros(UNITS)
    gates: dict[str, list] = {"input": [], "forget": [], "output": [], "state_tanh": []}
    outputs = []
    for x_t in seq:
        z = x_t @ kernel + h @ recurrent + bias
        i, f, g, o = sig(z[:UNITS]), sig(z[UNITS:2 * UNITS]), np.tanh(z[2 * UNITS:3 * UNITS]), \
            sig(z[3 * UNITS:])
        c = f * c + i * g
        h = o * np.tanh(c)
        for name, value in (("input", i), ("forget", f), ("output", o),
                            ("state_tanh", np.tanh(c))):
            gates[name].append(value)
        outputs.append(h)
    return gates, np.array(outputs)


def expected_gate_statistics(model: keras.Model, x: np.ndarray, layers: int,
                             lengths: np.ndarray = LENGTHS) -> dict:
    """``gates/rnn_i/…`` over the first ``lengths[b]`` steps of each sequence, in NumPy."""
    collected: dict[str, dict[str, list]] = {f"rnn_{i}": {} for i in range(layers)}
    for b, n in enumerate(lengths):
        seq = x[b, :n].astype(np.float64)
        for i in range(layers):
            gates, seq = numpy_lstm(model.get_layer(f"rnn_{i}"), seq)
            for name, values in gates.items():
                collected[f"rnn_{i}"].setdefault(name, []).extend(values)
    out = {}
    for layer, gates in collected.items():
        for name, values in gates.items():
            v = np.concatenate(values)
            if name == "state_tanh":
                out[f"gates/{layer}/state_tanh_saturated"] = float(np.mean(np.abs(v) > 0.95))
            else:
                out[f"gates/{layer}/{name}_mean"] = float(v.mean())
                out[f"gates/{layer}/{name}_saturated"] = float(np.mean((v < 0.05) | (v > 0.95)))
    return out


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("masked,seq2seq", CASES)
def test_gate_statistics_match_numpy_over_the_real_steps_only(layers, masked, seq2seq):
    model, x, _, _, got = probed(layers, masked, seq2seq)
    want = expected_gate_statistics(model, x, layers)
    assert set(got) == set(want)
    for key, value in want.items():
        assert float(got[key]) == pytest.approx(value, rel=1e-5, abs=1e-6), key
    # counting the padded steps would change them: the check can tell
    padded_in = expected_gate_statistics(model, x, layers, np.full(len(LENGTHS), STEPS))
    assert any(abs(padded_in[k] - want[k]) > 1e-3 for k in want)


# -- tasks that pad without a mask give the lengths ---------------------------------------

@pytest.mark.slow
def test_chorales_probe_ends_each_chorale_on_its_own_last_step():
    from rnnbench.diagnostics import draw_probe
    from rnnbench.tasks import get_task, music
    from rnnbench.tasks.configs import ChoralesConfig

    task = get_task(ChoralesConfig(name="chorales", limit=3))
    data = task.prepare(batch_size=2, seed=0)
    for split, (x, _) in data.arrays.items():
        w = data.meta["windows"][split][2]
        np.testing.assert_array_equal(data.lengths[split], w.sum(axis=1))
    x, y, lengths = draw_probe(task, data, 8, seed=0)
    assert len(lengths) == len(x) == 3 and lengths.min() < x.shape[1]
    keras.utils.set_random_seed(0)
    inp = keras.Input((None, music.N_KEYS), name="inputs")
    h = keras.layers.LSTM(4, return_sequences=True, name="rnn_0")(inp)
    model = keras.Model(inp, keras.layers.Dense(music.N_KEYS, name="key_logits")(h))
    profile, _ = GradientFlow(model, task.loss(), seq2seq=True).compute(x, y, lengths)
    assert profile.max_lag == lengths.max() - 1
    np.testing.assert_array_equal(profile.examples,
                                  [(lengths > k).sum() for k in range(lengths.max())])
    # k = 0 is each chorale's own last real step: its loss there, by a tape on it alone
    loss = music.PianoRollNLL(reduction=None)
    import tensorflow as tf

    norms = []
    for b, n in enumerate(lengths):
        xb = tf.constant(x[b:b + 1, :n])
        with tf.GradientTape() as tape:
            tape.watch(xb)
            value = loss(y[b:b + 1, n - 1], model(xb)[:, -1])
        norms.append(np.linalg.norm(tape.gradient(value, xb).numpy()[0, -1]))
    assert profile.g[0] == pytest.approx(np.mean(norms), rel=1e-4)


@pytest.mark.parametrize("stateful", [False, True])
def test_language_windows_give_lengths_that_end_before_the_padding(tmp_path, monkeypatch,
                                                                  stateful):
    from rnnbench.diagnostics import draw_probe
    from rnnbench.tasks import get_task
    from rnnbench.tasks.configs import LanguageConfig

    monkeypatch.setenv("RNNBENCH_CACHE", str(tmp_path / "cache"))
    f = tmp_path / "c.txt"
    f.write_text("the cat sat on the mat; a dog met it.\n" * 20)
    task = get_task(LanguageConfig(name="lm_char", corpus="path", path=str(f), bptt=7,
                                   carry_state=stateful))
    data = task.prepare(batch_size=3, seed=0)
    padded = 0
    for split, (x, y) in data.arrays.items():
        w = data.meta["windows"][split][2]
        lengths = data.lengths[split]
        steps = np.arange(x.shape[1])[None, :]
        # the weights are 1 exactly before the length: padding only ends a row
        np.testing.assert_array_equal(w > 0, steps < lengths[:, None])
        padded += int((lengths < x.shape[1]).sum())
    assert padded > 0  # the check has padding to find
    x, _, lengths = draw_probe(task, data, 4, seed=0)
    assert len(lengths) == len(x)
