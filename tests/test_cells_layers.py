"""The recurrent layers: Keras equivalence, parameters, gradients, masks, saving, trace."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from rnnbench.cells import (
    CELLS,
    CustomRecurrent,
    custom_twin,
    describe_layer,
    make_recurrent_layer,
)

ALL = list(CELLS)
BUILTIN = ["rnn", "lstm", "gru", "gru_v1"]


def cfg(name, impl="custom", **fields):
    return {"name": name, "impl": impl, **fields}


def randomize(layer, rng, scale=0.4):
    """Random values in every weight (biases included), so no term is zero."""
    for w in layer.weights:
        w.assign(rng.uniform(-scale, scale, tuple(w.shape)).astype("float32"))


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


# ------------------------------------------------------------- Keras equivalence
@pytest.mark.parametrize("cell", BUILTIN)
def test_custom_matches_keras_builtin_on_same_weights(cell):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 30, 6)).astype("float32")
    builtin = make_recurrent_layer(cfg(cell, "builtin"), 9, return_sequences=True)
    custom = make_recurrent_layer(cfg(cell), 9, return_sequences=True)
    builtin.build(x.shape)
    custom.build(x.shape)
    randomize(builtin, rng)
    kernel, recurrent, bias = (w.numpy() for w in builtin.weights)
    if cell == "gru":  # Keras: (2, 3n) input + recurrent biases; spec: bz, br, bh, bh2
        n = 9
        folded = bias[0] + np.concatenate([bias[1, : 2 * n], np.zeros(n, "float32")])
        custom.set_weights([kernel, recurrent, folded, bias[1, 2 * n :]])
    else:  # same fused layout as Keras
        custom.set_weights([kernel, recurrent, bias])
    assert rel_err(custom(x), builtin(x)) < 1e-5


@pytest.mark.parametrize("cell", BUILTIN)
def test_custom_twin_computes_the_builtin_function(cell):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 25, 5)).astype("float32")
    builtin = make_recurrent_layer(cfg(cell, "builtin"), 7, return_sequences=True)
    builtin.build(x.shape)
    randomize(builtin, rng)
    twin = custom_twin(builtin)
    assert isinstance(twin, CustomRecurrent) and twin.cell_name == cell
    assert describe_layer(twin)["impl"] == "custom"
    want = builtin(x)
    assert rel_err(twin(x), want) < 1e-5
    assert rel_err(twin.trace(x)["state"], want) < 1e-5


def test_custom_twin_of_bidirectional_lstm_and_of_custom_layer():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 12, 4)).astype("float32")
    layer = keras.layers.Bidirectional(
        make_recurrent_layer(cfg("lstm", "builtin"), 6, return_sequences=True)
    )
    layer.build(x.shape)
    randomize(layer, rng)
    twin = custom_twin(layer)
    assert describe_layer(twin)["impl"] == "custom" and describe_layer(twin)["bidirectional"]
    assert rel_err(twin(x), layer(x)) < 1e-5
    custom = make_recurrent_layer(cfg("peephole"), 6, return_sequences=False)
    assert custom_twin(custom) is custom


# --------------------------------------------------------------- parameters
@pytest.mark.parametrize("cell", ALL)
def test_param_counts_match_the_spec(cell):
    d, n = 5, 6
    layer = make_recurrent_layer(cfg(cell), n, return_sequences=False)
    layer.build((None, None, d))
    assert layer.count_params() == CELLS[cell].param_count(d, n)
    assert describe_layer(layer)["params"] == CELLS[cell].param_count(d, n)
    if CELLS[cell].has_builtin:
        builtin = make_recurrent_layer(cfg(cell, "builtin"), n, return_sequences=False)
        builtin.build((None, None, d))
        # Keras's GRU keeps two redundant recurrent biases (z and r) the spec has not
        extra = 2 * n if cell == "gru" else 0
        assert builtin.count_params() == CELLS[cell].param_count(d, n) + extra


def test_removed_gates_create_no_weights():
    d, n = 5, 6

    def weights(cell):
        layer = make_recurrent_layer(cfg(cell), n, return_sequences=False)
        layer.build((None, None, d))
        return {w.name: tuple(w.shape) for w in layer.weights}

    full = weights("peephole")
    assert full["kernel"] == (d, 4 * n)
    assert {k for k in full if k.startswith("peephole_")} == {
        "peephole_input",
        "peephole_forget",
        "peephole_output",
    }
    for cell, missing in [
        ("nig", "input"),
        ("nfg", "forget"),
        ("nog", "output"),
        ("cifg", "forget"),
    ]:
        w = weights(cell)
        assert w["kernel"] == (d, 3 * n) and w["recurrent_kernel"] == (n, 3 * n)
        assert f"peephole_{missing}" not in w and len(w) == 5
    assert not any(k.startswith("peephole") for k in weights("lstm"))
    assert weights("fgr")["gate_recurrent_kernel"] == (3 * n, 3 * n)
    assert weights("janet")["kernel"] == (d, 2 * n)


# ------------------------------------------------------------ initialisation
def test_forget_bias_defaults_and_chrono_init():
    n = 8

    def bias(cell, impl="custom", **fields):
        layer = make_recurrent_layer(cfg(cell, impl, **fields), n, return_sequences=False)
        layer.build((None, None, 3))
        b = layer.weights[2].numpy()
        return b.reshape(-1, n)

    lstm = bias("lstm")  # blocks i, f, c, o
    np.testing.assert_array_equal(lstm[1], 1.0)
    np.testing.assert_array_equal(lstm[[0, 2, 3]], 0.0)
    np.testing.assert_array_equal(bias("peephole", forget_bias=2.5)[1], 2.5)
    np.testing.assert_array_equal(bias("janet")[0], 1.0)  # blocks f, c
    np.testing.assert_array_equal(bias("cifg")[0], -1.0)  # f = 1 - i = σ(-a_i)
    np.testing.assert_array_equal(bias("nfg")[0], 0.0)  # no forget gate: nothing to set
    chrono = bias("lstm", chrono_init=50)
    assert np.all(chrono[1] >= 0) and np.all(chrono[1] <= np.log(49) + 1e-6)
    assert np.std(chrono[1]) > 0
    np.testing.assert_allclose(chrono[0], -chrono[1])
    nig = bias("nig", chrono_init=50)  # blocks f, c, o: no input gate to set
    assert np.all(nig[0] >= 0) and np.all(nig[1:] == 0)
    # the Keras built-in keeps its own default (unit_forget_bias) and takes ours
    np.testing.assert_array_equal(bias("lstm", "builtin")[1], 1.0)
    np.testing.assert_array_equal(bias("lstm", "builtin", forget_bias=3.0)[1], 3.0)
    keras_chrono = bias("lstm", "builtin", chrono_init=20)
    np.testing.assert_allclose(keras_chrono[0], -keras_chrono[1])


# -------------------------------------------------------------- gradients
@pytest.mark.slow
def test_gradients_are_finite_on_500_steps():
    rng = np.random.default_rng(3)
    x = tf.constant(rng.normal(size=(2, 500, 3)).astype("float32"))
    layers = [make_recurrent_layer(cfg(c), 8, return_sequences=True) for c in ALL]
    for layer in layers:
        layer.build(x.shape)

    @tf.function
    def grads():
        with tf.GradientTape() as tape:
            loss = tf.add_n([tf.reduce_sum(layer(x)[:, -1] ** 2) for layer in layers])
        variables = [w for layer in layers for w in layer.trainable_weights]
        return tape.gradient(loss, variables)

    values = grads()
    names = [(c, w.name) for c, layer in zip(ALL, layers) for w in layer.trainable_weights]
    for (cell, name), g in zip(names, values):
        assert g is not None and np.all(np.isfinite(g.numpy())), (cell, name)
        if name == "recurrent_kernel":
            assert np.any(g.numpy() != 0), cell


# ---------------------------------------------------------------- masking
@pytest.mark.parametrize("cell", ALL)
def test_masked_batch_equals_sequences_one_by_one(cell):
    rng = np.random.default_rng(4)
    lengths = [9, 5, 2]
    x = np.zeros((3, 9, 4), "float32")
    for i, length in enumerate(lengths):
        x[i, :length] = rng.normal(size=(length, 4))
    mask = np.arange(9)[None, :] < np.array(lengths)[:, None]
    for go_backwards in (False, True) if cell == "peephole" else (False,):
        layer = make_recurrent_layer(cfg(cell), 6, return_sequences=True, go_backwards=go_backwards)
        seq = np.asarray(layer(x, mask=mask))
        last = CustomRecurrent.from_config({**layer.get_config(), "return_sequences": False})
        last.build(x.shape)
        last.set_weights(layer.get_weights())
        final = np.asarray(last(x, mask=mask))
        for i, length in enumerate(lengths):
            alone = np.asarray(layer(x[i : i + 1, :length]))[0]
            if not go_backwards:
                np.testing.assert_allclose(seq[i, :length], alone, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(final[i], alone[-1], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_masking_from_embedding_and_bidirectional_stack_train():
    rng = np.random.default_rng(5)
    lengths = [11, 7, 3, 9]
    tokens = rng.integers(1, 20, size=(4, 11))
    for i, length in enumerate(lengths):
        tokens[i, length:] = 0  # right padding, masked by the embedding
    inputs = keras.Input((None,), dtype="int32")
    h = keras.layers.Embedding(20, 5, mask_zero=True)(inputs)
    h = keras.layers.Bidirectional(make_recurrent_layer(cfg("peephole"), 6, return_sequences=True))(
        h
    )
    h = make_recurrent_layer(
        cfg("gru_v1", dropout=0.2, recurrent_dropout=0.2), 6, return_sequences=False
    )(h)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(h))
    model.compile("adam", "sparse_categorical_crossentropy", run_eagerly=True)
    history = model.fit(tokens, rng.integers(0, 2, 4), epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    batch = np.asarray(model(tokens))
    for i, length in enumerate(lengths):
        alone = np.asarray(model(tokens[i : i + 1, :length]))
        np.testing.assert_allclose(batch[i], alone[0], rtol=1e-5, atol=1e-6)
    info = describe_layer(model.layers[2])
    assert info["bidirectional"] and info["cell"] == "peephole" and info["impl"] == "custom"
    assert info["params"] == 2 * CELLS["peephole"].param_count(5, 6)


def test_stateful_layer_carries_states_between_calls():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(2, 10, 3)).astype("float32")
    layer = make_recurrent_layer(cfg("fgr"), 5, return_sequences=True, stateful=True)
    layer.build((2, 10, 3))
    first, second = layer(x[:, :6]), layer(x[:, 6:])
    layer.reset_state()
    whole = layer(x)
    np.testing.assert_allclose(np.concatenate([first, second], 1), whole, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ dropout
def test_dropout_masks_are_fixed_over_time_and_training_only():
    rng = np.random.default_rng(7)
    layer = make_recurrent_layer(
        cfg("lstm", dropout=0.5, recurrent_dropout=0.3), 6, return_sequences=True
    )
    x = np.repeat(rng.normal(size=(4, 1, 5)).astype("float32"), 8, axis=1)
    layer.build(x.shape)
    cell = layer.cell
    dropped = np.asarray(cell.project(x, training=True))
    np.testing.assert_allclose(dropped, np.repeat(dropped[:, :1], 8, axis=1))  # same each step
    assert not np.allclose(dropped, np.asarray(cell.project(x, training=False)))
    with cell.looping(np.zeros((4, 6), "float32"), training=True):
        mask = np.asarray(cell.recurrent_mask)
    assert mask.shape == (4, 6)
    assert np.all(np.isclose(mask, 0) | np.isclose(mask, 1 / 0.7)) and np.any(mask == 0)
    assert cell.recurrent_mask is None
    np.testing.assert_array_equal(layer(x, training=False), layer(x, training=False))
    assert not np.allclose(layer(x, training=True), layer(x, training=False))


# ----------------------------------------------------------------- saving
def test_keras_save_and_load_give_identical_outputs(tmp_path):
    rng = np.random.default_rng(8)
    x = rng.normal(size=(3, 12, 4)).astype("float32")
    inputs = keras.Input((12, 4))
    branches = [
        make_recurrent_layer(cfg(c), 5, return_sequences=False)(inputs)
        for c in ("peephole", "fgr", "gru", "cifg", "janet")
    ]
    branches.append(
        keras.layers.Bidirectional(
            make_recurrent_layer(cfg("gru_v1", chrono_init=None), 5, return_sequences=False)
        )(inputs)
    )
    branches.append(
        make_recurrent_layer(cfg("lstm", "builtin", forget_bias=2.0), 5, return_sequences=False)(
            inputs
        )
    )
    model = keras.Model(inputs, keras.layers.Concatenate()(branches))
    for w in model.weights:
        w.assign(w.numpy() + rng.normal(scale=0.1, size=w.shape).astype("float32"))
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))
    assert [type(layer).__name__ for layer in loaded.layers] == [
        type(layer).__name__ for layer in model.layers
    ]


# ------------------------------------------------------------------ trace
@pytest.mark.parametrize("cell", ALL)
def test_trace_gates_in_unit_interval_and_state_matches_output(cell):
    rng = np.random.default_rng(9)
    x = rng.normal(size=(3, 15, 4)).astype("float32")
    layer = make_recurrent_layer(cfg(cell), 6, return_sequences=True)
    out = np.asarray(layer(x))
    trace = {k: np.asarray(v) for k, v in layer.trace(x).items()}
    assert set(trace) == {*CELLS[cell].gates, "state", "state_tanh"}
    for name, value in trace.items():
        assert value.shape == (3, 15, 6), name
    for gate in CELLS[cell].gates:
        assert trace[gate].min() >= 0 and trace[gate].max() <= 1, gate
    assert np.all(np.abs(trace["state_tanh"]) <= 1)
    np.testing.assert_allclose(trace["state"], out, rtol=1e-5, atol=1e-6)
    if cell == "cifg":
        np.testing.assert_allclose(trace["forget"], 1 - trace["input"], atol=1e-6)
    if cell == "rnn":
        np.testing.assert_array_equal(trace["state_tanh"], trace["state"])


def test_trace_of_backwards_layer_is_in_input_time_order():
    x = np.random.default_rng(10).normal(size=(2, 7, 3)).astype("float32")
    layer = make_recurrent_layer(cfg("lstm"), 4, return_sequences=True, go_backwards=True)
    out = np.asarray(layer(x))  # Keras: in processing order (reversed)
    np.testing.assert_allclose(layer.trace(x)["state"], out[:, ::-1], rtol=1e-5, atol=1e-6)


# --------------------------------------------------------- builtins, describe
@pytest.mark.parametrize("cell", ALL)
def test_each_implementation_is_built_from_the_registry(cell):
    spec = CELLS[cell]
    custom = make_recurrent_layer(cfg(cell), 4, return_sequences=False)
    assert custom.cell.family == spec.family
    assert {key: getattr(custom.cell, key) for key in spec.variant} == dict(spec.variant)
    assert describe_layer(custom)["cell"] == cell
    if spec.has_builtin:
        builtin = make_recurrent_layer(cfg(cell, "builtin"), 4, return_sequences=False)
        assert type(builtin).__name__ == spec.builtin.layer
        assert describe_layer(builtin)["cell"] == cell
    for option in {"forget_bias", "chrono_init"} - spec.options:
        with pytest.raises(ValueError, match=f"no option '{option}'"):
            CustomRecurrent(cell, 4, **{option: 10})


def test_builtin_layers_and_description():
    lstm = make_recurrent_layer(
        cfg("lstm", "builtin", dropout=0.1), 4, return_sequences=True, name="rec"
    )
    assert isinstance(lstm, keras.layers.LSTM) and lstm.name == "rec" and lstm.dropout == 0.1
    gru_v1 = make_recurrent_layer(cfg("gru_v1", "auto"), 4, return_sequences=False)
    assert isinstance(gru_v1, keras.layers.GRU) and not gru_v1.cell.reset_after
    rnn = make_recurrent_layer(cfg("rnn", "builtin"), 4, return_sequences=False)
    assert isinstance(rnn, keras.layers.SimpleRNN)
    peephole = make_recurrent_layer(cfg("peephole", "auto"), 4, return_sequences=False)
    assert isinstance(peephole, CustomRecurrent)

    def eligible(cell, **fields):
        return describe_layer(make_recurrent_layer(cfg(cell, **fields), 4, return_sequences=False))[
            "cudnn_eligible"
        ]

    assert eligible("lstm", impl="builtin") and eligible("gru", impl="builtin")
    assert not eligible("lstm", impl="builtin", recurrent_dropout=0.1)
    assert eligible("lstm", impl="builtin", dropout=0.1)
    assert not eligible("gru_v1", impl="builtin")
    assert not eligible("rnn", impl="builtin")
    assert not eligible("lstm", impl="custom")
    info = describe_layer(lstm)
    assert info == {
        "impl": "builtin",
        "cell": "lstm",
        "cudnn_eligible": True,
        "params": None,
        "bidirectional": False,
        "gradient": "autodiff",
        "form": "step",
    }
    bi = keras.layers.Bidirectional(
        make_recurrent_layer(cfg("gru", "builtin"), 4, return_sequences=False)
    )
    bi.build((None, 5, 3))
    info = describe_layer(bi)
    assert info["cell"] == "gru" and info["cudnn_eligible"] and info["bidirectional"]
    assert info["params"] == 2 * (CELLS["gru"].param_count(3, 4) + 8)


@pytest.mark.slow
def test_xla_compiled_training_step():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(4, 10, 3)).astype("float32")
    inputs = keras.Input((10, 3))
    branches = [
        make_recurrent_layer(cfg(c, dropout=0.1, recurrent_dropout=0.1), 5, return_sequences=False)(
            inputs
        )
        for c in ("peephole", "gru_v1", "fgr")
    ]
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Concatenate()(branches)))
    model.compile("sgd", "mse", jit_compile=True)
    before = [w.numpy() for w in model.weights]
    losses = [model.train_on_batch(x, np.ones((4, 1))) for _ in range(2)]
    assert np.all(np.isfinite(losses))
    assert all(np.any(a != b.numpy()) for a, b in zip(before, model.weights))
