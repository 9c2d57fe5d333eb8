"""The diagnostics in real runs: the CLI's MLflow record, a run that explodes, every cell
of the spec, and the JAX backend."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest
from keras import ops

from helpers import ROOT, cli_env, run_cli, store_runs, tiny_task_run
from rnnbench.tasks import TASKS

pytestmark = pytest.mark.slow


def metric_steps(client, run_id: str, key: str) -> dict[int, float]:
    return {m.step: m.value for m in client.get_metric_history(run_id, key)}


def test_smoke_run_logs_every_diagnostic_and_the_heatmap(tmp_path):
    proc = run_cli(["debug=smoke"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = store_runs(tmp_path)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    rid = run.info.run_id
    # evaluated before training (step 0) and after each of the two epochs
    for key in ("grad_flow/decay_ratio", "grad_flow/horizon", "spectral_norm/rnn_0",
                "spectral_norm/rnn_0/forget", "gates/rnn_0/forget_mean",
                "gates/rnn_0/forget_saturated", "gates/rnn_0/input_mean",
                "gates/rnn_0/output_saturated", "gates/rnn_0/state_tanh_saturated"):
        assert sorted(metric_steps(client, rid, key)) == [0, 1, 2], key
    # per epoch, from the train steps
    for key in ("grad_norm/global_mean", "grad_norm/global_max", "grad_norm/rnn_0_mean",
                "grad_norm/rnn_0_max", "grad_norm/forecast_mean", "grad_norm/clipped_fraction"):
        assert sorted(metric_steps(client, rid, key)) == [1, 2], key
    m = run.data.metrics
    assert 0 < m["grad_flow/decay_ratio"] < 1
    assert 0 <= m["grad_flow/horizon"] <= 51  # lookback 52
    assert 0 < m["gates/rnn_0/forget_mean"] < 1
    assert m["grad_norm/global_max"] >= m["grad_norm/global_mean"] > 0
    assert m["grad_norm/global_mean"] >= m["grad_norm/rnn_0_mean"]
    assert 0 <= m["grad_norm/clipped_fraction"] <= 1
    assert m["spectral_norm/rnn_0"] >= m["spectral_norm/rnn_0/forget"] > 0
    assert not any(k.startswith("grad_norm/") and "nonfinite" in k for k in m)

    arts = {a.path for a in client.list_artifacts(rid, "diagnostics")}
    assert arts == {"diagnostics/grad_flow.json", "diagnostics/grad_flow.csv",
                    "diagnostics/grad_flow_heatmap.png"}
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    table = json.loads(mlflow.artifacts.load_text(f"runs:/{rid}/diagnostics/grad_flow.json"))
    assert [e["epoch"] for e in table["epochs"]] == [0, 1, 2]
    assert all(len(e["g"]) == 52 for e in table["epochs"])
    # the summaries describe the weights early stopping restored (best val_loss)
    val = metric_steps(client, rid, "val_loss")
    best = min(val, key=lambda step: (val[step], step))
    assert table["final"]["epoch"] == m["grad_flow/weights_epoch"] == best
    assert run.data.tags["diagnostics_weights_epoch"] == str(best)
    final = table["final"]
    assert final["g"][-1] / final["g"][0] == pytest.approx(m["grad_flow/decay_ratio"], rel=1e-6)
    png = Path(mlflow.artifacts.download_artifacts(
        run_id=rid, artifact_path="diagnostics/grad_flow_heatmap.png",
        dst_path=str(tmp_path / "dl")))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


class NanGradientAfter(keras.layers.Layer):
    """Identity whose gradient is NaN from training step ``steps`` on (0-based): its
    output is ``x + sqrt(|x·z| + c) - sqrt(c)`` with ``z`` a weight held at 0 and ``c``
    dropping from 1 to 0, so that the gradient becomes ∞·0. (A weight, not a literal
    zero, so that no compiler folds the term away.)"""

    def __init__(self, steps: int, **kwargs):
        super().__init__(**kwargs)
        self.steps = steps

    def build(self, input_shape):
        self.calls = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                     name="calls")
        self.zero = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                    name="zero")

    def call(self, x, training=False):
        if not training:
            return x
        self.calls.assign_add(1.0)
        c = 1.0 - ops.cast(self.calls > self.steps, x.dtype)
        return x + ops.sqrt(ops.abs(x * self.zero) + c) - ops.sqrt(c)


def test_nan_gradient_fails_the_run_with_tags_and_keeps_earlier_diagnostics(
        tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir

    from rnnbench import config, train
    from rnnbench.cli.schema import register_configs
    from rnnbench.errors import RunFailed
    from rnnbench.tasks.timeseries import Co2Task

    class ExplodingCo2(Co2Task):
        def build_head(self, h, data):
            return NanGradientAfter(7, name="nan_gradient")(super().build_head(h, data))

    monkeypatch.setattr("rnnbench.tasks.get_task", lambda cfg: ExplodingCo2(cfg))
    register_configs()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = config.to_object(compose("config", overrides=[
            "debug=smoke", "train.epochs=4", "train.patience=10", "train.verbose=0",
            f"tracking.uri={uri}"]))
    # the test's layer is not registered, so the model cannot be copied: the probe runs
    # on the training model itself, in the training thread
    with pytest.warns(UserWarning, match="probing the training model itself"), \
            pytest.raises(RunFailed, match="non-finite gradient at epoch 2 step 2"):
        train.run(cfg, train.RunContext())

    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    rid = run.info.run_id
    assert run.info.status == "FAILED"
    tags = run.data.tags
    assert (tags["failure_what"], tags["failure_epoch"], tags["failure_step"]) == \
        ("gradient", "2", "2")
    # 5 steps per epoch: iteration 7 is epoch 2, step 2. The probe evaluations before
    # it (step 0, after epoch 1) are kept; the failing epoch adds none.
    assert sorted(metric_steps(client, rid, "grad_flow/decay_ratio")) == [0, 1]
    assert sorted(metric_steps(client, rid, "gates/rnn_0/forget_mean")) == [0, 1]
    norms = metric_steps(client, rid, "grad_norm/global_mean")
    assert sorted(norms) == [1, 2] and all(np.isfinite(list(norms.values())))
    assert metric_steps(client, rid, "grad_norm/nonfinite_steps")[2] >= 1
    arts = {a.path for a in client.list_artifacts(rid, "diagnostics")}
    assert "diagnostics/grad_flow_heatmap.png" in arts


def test_every_cell_of_the_spec_gets_every_diagnostic_that_applies():
    from rnnbench.cells import CELLS, make_recurrent_layer
    from rnnbench.diagnostics import GradientFlow, RecurrentProbe, summarize

    steps = 8
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, steps, 3)).astype("float32")
    y = rng.normal(size=(4, 1)).astype("float32")
    # (cell, impl, bidirectional, layers): every cell once, stacks and a bidirectional
    cases = [(name, "custom", False, 1) for name in CELLS]
    cases += [(name, "builtin", False, 1) for name, spec in CELLS.items() if spec.has_builtin]
    cases += [("lstm", "builtin", False, 2), ("fgr", "custom", False, 2),
              ("peephole", "custom", True, 1), ("gru", "builtin", True, 2)]
    for name, impl, bidirectional, depth in cases:
        keras.utils.set_random_seed(0)
        inp = keras.Input((steps, 3), name="inputs")
        h = inp
        for i in range(depth):
            layer = make_recurrent_layer({"name": name, "impl": impl}, 4,
                                         return_sequences=i < depth - 1, name=f"rnn_{i}")
            if bidirectional:
                layer = keras.layers.Bidirectional(layer, name=f"bi_rnn_{i}")
            h = layer(h)
        model = keras.Model(inp, keras.layers.Dense(1, name="head")(h))
        probe = RecurrentProbe(model)
        flow = GradientFlow(model, "mse", seq2seq=False, extra=probe.trace_statistics)
        profile, gates = flow.compute(x, y)
        case = (name, impl, bidirectional, depth)
        assert profile.max_lag == steps - 1 and profile.g[0] > 0, case
        # indrnn's ReLU can leave every unit dead at some lag (g = 0 there exactly)
        assert np.all(profile.g >= 0 if name == "indrnn" else profile.g > 0), case
        assert set(summarize(profile, 0.01)) == {
            "grad_flow/decay_ratio", "grad_flow/horizon", "grad_flow/final_step_norm"}, case
        layers = ([f"{d}_rnn_{i}" for i in range(depth) for d in ("forward", "backward")]
                  if bidirectional else [f"rnn_{i}" for i in range(depth)])
        want = {f"gates/{layer}/{gate}_{stat}" for layer in layers
                for gate in CELLS[name].gates for stat in ("mean", "saturated")}
        want |= {f"gates/{layer}/state_tanh_saturated" for layer in layers}
        assert set(gates) == want, case
        assert all(0 <= float(v) <= 1 for v in gates.values()), case
        norms = probe.spectral_norms()
        if name in ("lru", "mingru", "minlstm", "mlstm"):  # no recurrent weight
            assert not norms, case
            continue
        assert {f"spectral_norm/{layer}" for layer in layers} <= set(norms), case
        if name == "fgr":
            assert "spectral_norm/rnn_0/gate_recurrence" in norms
        if name == "rnn":
            assert not [k for k in gates if not k.endswith("state_tanh_saturated")]


JAX_SCRIPT = r"""
import json, keras, numpy as np
from rnnbench.diagnostics import GradientFlow, RecurrentProbe, attach, summarize
assert keras.backend.backend() == "jax"
keras.utils.set_random_seed(0)
T, a = 12, 0.7
inp = keras.Input((T, 3), name="inputs")
h = keras.layers.SimpleRNN(4, activation=None, use_bias=False, name="rnn_0",
                           recurrent_initializer=keras.initializers.Identity(a))(inp)
linear = keras.Model(inp, keras.layers.Dense(1, name="head")(h))
x = np.random.default_rng(0).uniform(size=(5, T, 3)).astype("float32")
y = np.zeros((5, 1), "float32")
p, _ = GradientFlow(linear, "mse", seq2seq=False, jit_compile=True).compute(x, y)
out = {"power_law_error": float(np.max(np.abs(p.g / p.g[0] - a ** np.arange(T))))}
inp = keras.Input((T, 3), name="inputs")
h = keras.layers.LSTM(4, name="rnn_0")(inp)
model = keras.Model(inp, keras.layers.Dense(1, name="head")(h))
model.compile(optimizer=keras.optimizers.Adam(1e-3, global_clipnorm=1e-3), loss="mse",
              jit_compile=True)
recorder = attach(model)
model.fit(x, y + 3.0, batch_size=5, epochs=2, verbose=0)
out["grad_norm"] = recorder.gradient_stats()
probe = RecurrentProbe(model)
probe.sync()
_, gates = GradientFlow(model, "mse", seq2seq=False, extra=probe.trace_statistics).compute(x, y)
out["gates"] = {k: float(v) for k, v in gates.items()}
# the whole callback over several epochs: the JAX trainer donates its variables' buffers
# to each train step, which the probe's copy of the weights must survive
import mlflow
from rnnbench import tracking
from rnnbench.cells import make_recurrent_layer
from rnnbench.diagnostics import DiagnosticsCallback
inp = keras.Input((T, 3), name="inputs")
h = make_recurrent_layer({"name": "janet", "impl": "custom"}, 4, return_sequences=False,
                         name="rnn_0")(inp)
model = keras.Model(inp, keras.layers.Dense(1, name="head")(h))
model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse", jit_compile=True)
attach(model)
tracking.configure("sqlite:///mlflow.db")
with tracking.start_run("jax", "r", {}) as run:
    model.fit(x, y + 3.0, batch_size=5, epochs=3, verbose=0, callbacks=[
        DiagnosticsCallback(run, (x, y), loss="mse", seq2seq=False)])
history = mlflow.MlflowClient().get_metric_history(run.run_id, "grad_flow/decay_ratio")
out["evaluated"] = sorted(m.step for m in history)
print("RESULT" + json.dumps(out))
"""


def test_diagnostics_on_the_jax_backend(tmp_path):
    proc = subprocess.run([sys.executable, "-c", JAX_SCRIPT], capture_output=True, text=True,
                          env=cli_env(KERAS_BACKEND="jax"), timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(s for s in proc.stdout.splitlines() if s.startswith("RESULT"))
    out = json.loads(line[len("RESULT"):])
    assert out["power_law_error"] < 1e-5
    stats = out["grad_norm"]
    assert stats["grad_norm/clipped_fraction"] == 1.0  # clip at 1e-3: every step
    assert stats["grad_norm/global_max"] >= stats["grad_norm/global_mean"] > 1e-3
    assert 0 < out["gates"]["gates/rnn_0/forget_mean"] < 1
    assert out["evaluated"] == [0, 1, 2, 3]


MIRRORED_SCRIPT = r"""
import json
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras, numpy as np
from rnnbench.diagnostics import attach
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    inp = keras.Input((6, 2), name="inputs")
    h = keras.layers.LSTM(4, name="rnn_0")(inp)
    model = keras.Model(inp, keras.layers.Dense(1, name="head")(h))
    model.compile(optimizer=keras.optimizers.Adam(1e-3, global_clipnorm=1.0), loss="mse")
recorder = attach(model)
x = np.random.default_rng(0).normal(size=(16, 6, 2)).astype("float32")
model.fit(x, np.full((16, 1), 3.0, "float32"), batch_size=8, epochs=1, verbose=0)
print("RESULT" + json.dumps(recorder.gradient_stats()))
"""


def test_gradient_norms_under_a_mirrored_strategy(tmp_path):
    proc = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT], capture_output=True,
                          text=True, env=cli_env(), timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(s for s in proc.stdout.splitlines() if s.startswith("RESULT"))
    stats = json.loads(line[len("RESULT"):])
    assert stats["grad_norm/global_max"] >= stats["grad_norm/global_mean"] > 0
    assert {"grad_norm/rnn_0_mean", "grad_norm/head_mean",
            "grad_norm/clipped_fraction"} <= set(stats)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_gets_the_diagnostics(name, inputs, tmp_path):
    """Every task of the project, with its own inputs (tokens, masks, seq2seq heads,
    carried states), through the real training run with the diagnostics on."""
    db = tmp_path / "mlflow.db"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cfg, result = tiny_task_run(name, inputs, db, "train.epochs=2",
                                    "diagnostics.probe_batch_size=4")
    assert result.status == "FINISHED"
    # the probe runs on a detached copy, bidirectional models included
    assert not [w for w in caught if "diagnostics:" in str(w.message)]
    client = mlflow.MlflowClient(f"sqlite:///{db}")
    metrics = client.get_run(result.run_id).data.metrics
    first = "forward_rnn_0" if cfg.cell.bidirectional else "rnn_0"
    for key in ("grad_flow/decay_ratio", "grad_flow/horizon", f"gates/{first}/forget_mean",
                f"spectral_norm/{first}"):
        assert sorted(metric_steps(client, result.run_id, key)) == [0, 1, 2], key
    layer = "bi_rnn_0" if cfg.cell.bidirectional else "rnn_0"
    assert metrics[f"grad_norm/{layer}_max"] >= metrics[f"grad_norm/{layer}_mean"] > 0
    assert 0 < metrics["grad_flow/final_step_norm"]
    arts = {a.path for a in client.list_artifacts(result.run_id, "diagnostics")}
    assert "diagnostics/grad_flow_heatmap.png" in arts
