"""The diagnostics a run reports describe the weights its test metrics come from: those
early stopping restores, probed once more at the end of training."""

from __future__ import annotations

import json

import keras
import mlflow
import numpy as np
import pytest

from rnnbench import tracking
from rnnbench.diagnostics import (
    DiagnosticsCallback,
    GradientFlow,
    RecurrentProbe,
    attach,
    summarize,
)


@pytest.mark.slow
def test_final_probe_is_on_the_restored_weights_and_is_what_the_run_shows(tmp_path):
    import tensorflow as tf

    keras.utils.set_random_seed(6)
    inp = keras.Input((8, 2), name="inputs")
    h = keras.layers.LSTM(4, name="rnn_0")(inp)
    model = keras.Model(inp, keras.layers.Dense(1, name="head")(h))
    model.compile(optimizer=keras.optimizers.Adam(3e-2), loss="mse")
    attach(model)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 8, 2)).astype("float32"), rng.normal(size=(32, 1))
    # "best" = the highest training loss, i.e. the first epoch: the weights restored at
    # the end are not the last epoch's
    stopping = keras.callbacks.EarlyStopping(monitor="loss", mode="max", patience=10,
                                             restore_best_weights=True)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.configure(uri)
    with tracking.start_run("diagnostics-test", "r", {}) as run:
        callback = DiagnosticsCallback(run, (x[:6], y[:6]), loss="mse", seq2seq=False,
                                       early_stopping=stopping)
        model.fit(x, y, batch_size=8, epochs=4, verbose=0, callbacks=[stopping, callback])
    assert stopping.best_epoch == 0

    # independently: the probe run directly on the model as training left it
    probe = RecurrentProbe(model)
    probe.sync()
    profile, _ = GradientFlow(model, "mse", seq2seq=False).compute(x[:6], y[:6])
    want = summarize(profile, 0.01)
    gates = {k: float(v) for k, v in tf.function(probe.trace_statistics)(x[:6]).items()}

    client = mlflow.MlflowClient(uri)
    got = client.get_run(run.run_id)
    metrics = got.data.metrics
    assert got.data.tags["diagnostics_weights_epoch"] == "1"
    assert metrics["grad_flow/weights_epoch"] == 1
    for key, value in {**want, **gates}.items():
        assert metrics[key] == pytest.approx(value, rel=1e-5), key
    # logged at the last epoch's step, after that epoch's own (different) evaluation
    history = client.get_metric_history(run.run_id, "grad_flow/final_step_norm")
    steps = sorted((m.step, m.timestamp) for m in history)
    assert [s for s, _ in steps] == [0, 1, 2, 3, 4, 4]
    at_4 = sorted((m for m in history if m.step == 4), key=lambda m: m.timestamp)
    assert at_4[-1].value == pytest.approx(want["grad_flow/final_step_norm"], rel=1e-5)
    assert at_4[0].value != pytest.approx(at_4[-1].value, rel=1e-3)

    mlflow.set_tracking_uri(uri)
    table = json.loads(mlflow.artifacts.load_text(
        f"runs:/{run.run_id}/diagnostics/grad_flow.json"))
    assert [e["epoch"] for e in table["epochs"]] == [0, 1, 2, 3, 4]
    assert table["final"]["epoch"] == 1
    np.testing.assert_allclose(table["final"]["g"], profile.g, rtol=1e-5)
    # the weights after epoch 1 are the ones evaluated at step 1 during training
    np.testing.assert_allclose(table["epochs"][1]["g"], profile.g, rtol=1e-5)
