"""Edges users hit (issue 28, part A): the logged model as a forecaster in the data's
units, a custom search space's recorded name, a config refusal inside a multirun, and
the exit codes of user errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from helpers import cli_env, run_cli, tiny_task_run


@pytest.mark.slow
def test_logged_co2_model_forecasts_ppm_from_raw_windows_without_rnnbench(tmp_path):
    """A real co2 run; a fresh process that never imports rnnbench itself loads
    runs:/<id>/model with MLflow's loader and forecasts from raw test windows (ppm):
    its error is the run's test MAE, in ppm, far from normalised changes."""
    import mlflow

    from rnnbench.tasks import get_task

    db = tmp_path / "mlflow.db"
    cfg, result = tiny_task_run("co2", {"csv": "", "wavs": ""}, db)
    run = mlflow.MlflowClient(f"sqlite:///{db}").get_run(result.run_id)
    assert not [k for k in run.data.tags if k.startswith("not_logged")], run.data.tags
    data = get_task(cfg.task).prepare(8, 0)
    values, lb = data.meta["values"], cfg.task.lookback
    ends = data.meta["anchors"]["test"] + 1
    windows = np.stack([values[e - lb:e] for e in ends])[..., None]
    np.save(tmp_path / "windows.npy", windows)
    code = (
        "import json, sys, numpy as np, mlflow\n"
        f"mlflow.set_tracking_uri('sqlite:///{db}')\n"
        "before = 'rnnbench' in sys.modules\n"
        f"m = mlflow.pyfunc.load_model('runs:/{result.run_id}/model')\n"
        f"pred = m.predict(np.load({str(tmp_path / 'windows.npy')!r}))\n"
        "sig = m.metadata.signature\n"
        "print('OUT', json.dumps({'pred': np.asarray(pred).tolist(), 'before': before,\n"
        "  'code': sys.modules['rnnbench'].__file__, 'in': list(sig.inputs.inputs[0].shape),\n"
        "  'dtype': str(sig.inputs.inputs[0].type), 'example': m.input_example is not None}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=cli_env(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false"),
                         timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.split("OUT ", 1)[1])
    assert got["before"] is False
    assert f"{'/'}code{'/'}rnnbench{'/'}" in got["code"]  # the code shipped with the model
    assert got["in"] == [-1, lb, 1] and got["dtype"] == "float64" and got["example"]
    pred = np.asarray(got["pred"])
    truth = data.meta["targets"]["test"]
    assert pred.shape == truth.shape
    assert pred.min() > 300  # ppm, not normalised changes around 0
    mae = float(np.mean(np.abs(pred - truth)))
    assert mae == pytest.approx(run.data.metrics["test_mae"], rel=1e-3)
    assert mae < 5.0  # ppm

    reqs = (tmp_path / "reqs").mkdir() or mlflow.artifacts.download_artifacts(
        run_id=result.run_id, artifact_path="model/requirements.txt",
        tracking_uri=f"sqlite:///{db}", dst_path=str(tmp_path / "reqs"))
    text = open(reqs).read()
    assert "rnnbench" not in text and "keras==" in text and "tensorflow==" in text


@pytest.mark.parametrize("cell", ["lstm", "mlstm", "lru"])
def test_the_served_twin_of_a_stateful_model_is_the_model_from_a_zero_state(cell):
    """lm_char carries the state from window to window: its layers are stateful, built
    for the training batch size. The logged model is its stateless twin: the same
    weights, the same outputs from a zero state, any batch size."""
    import keras

    from helpers import compose_run
    from rnnbench.mlflow_model import stateless_copy
    from rnnbench.model import build_model
    from rnnbench.tasks import get_task

    cfg = compose_run(["task=lm_char", "task.corpus=lee", "task.limit=12", "task.bptt=20",
                       "debug=smoke", f"cell={cell}", "model.units=8"])
    task = get_task(cfg.task)
    data = task.prepare(4, 0)
    model = build_model(cfg, task, data)
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 0.3, w.shape) for w in model.get_weights()])
    assert model.inputs[0].shape[0] == 4 and model.get_layer("rnn_0").stateful
    twin = stateless_copy(model)
    assert twin.inputs[0].shape[0] is None
    assert not any(getattr(layer, "stateful", False) for layer in twin._flatten_layers())
    x = data.arrays["test"][0][:4]
    ours = np.asarray(model(x))  # from the zero state it starts with
    np.testing.assert_allclose(np.asarray(twin(x[:3])), ours[:3], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(twin(x[:1])), ours[:1], rtol=1e-5, atol=1e-6)
    keras.utils.set_random_seed(0)
    plain = build_model(compose_run(["task=co2", "debug=smoke", "model.units=8"]),
                        co2 := get_task(compose_run(["task=co2", "debug=smoke"]).task),
                        co2.prepare(8, 0))
    assert stateless_copy(plain) is plain  # nothing stateful: the model itself


@pytest.mark.slow
def test_logged_model_of_a_stateful_language_model_predicts_any_batch(tmp_path):
    """A real lm_char run (state carried across windows): MLflow's check of the input
    example passes, and runs:/<id>/model gives next-character probabilities for 3 rows,
    not only for the training batch size."""
    import mlflow

    db = tmp_path / "mlflow.db"
    cfg, result = tiny_task_run("lm_char", {"csv": "", "wavs": ""}, db)
    assert cfg.task.carry_state
    run = mlflow.MlflowClient(f"sqlite:///{db}").get_run(result.run_id)
    assert not [k for k in run.data.tags if k.startswith("not_logged")], run.data.tags
    model = mlflow.pyfunc.load_model(f"runs:/{result.run_id}/model")
    assert model.metadata.signature.inputs.inputs[0].shape == (-1, cfg.task.bptt)
    example = np.asarray(model.input_example)
    x = np.concatenate([example, example[:1]])  # 3 rows; the model trained on 8
    probs = np.asarray(model.predict(x))
    assert probs.shape[:2] == (3, cfg.task.bptt) and probs.shape[2] > 10
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=1e-4)
    np.testing.assert_allclose(probs[2], probs[0], rtol=1e-5)  # no state between rows


def test_a_custom_search_space_without_name_is_recorded_by_its_file_name(tmp_path):
    """search_space=mine from the user's own folder, its file without ``name:``: the
    sweep records ``mine`` (Hydra's choice), not the schema's ``default``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from helpers import ROOT
    from rnnbench.cli.schema import register_configs
    from rnnbench.config import to_object
    from rnnbench.tuning.space import Space

    (tmp_path / "search_space").mkdir()
    (tmp_path / "search_space" / "mine.yaml").write_text(
        "defaults: [/schema/search_space@_here_, _self_]\n"
        "params:\n  lr: {key: optimizer.lr, type: float, low: 1.0e-3, high: 1.0e-2}\n")
    register_configs()
    names = {}
    for choice in ("mine", "greff"):
        with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("tune", overrides=[f"hydra.searchpath=[file://{tmp_path}]",
                                             f"search_space={choice}"],
                          return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        try:
            with open_dict(cfg):
                del cfg["hydra"]
            names[choice] = Space.from_config(to_object(cfg)).name
        finally:
            HydraConfig.instance().cfg = None
    assert names == {"mine": "mine", "greff": "greff"}


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "submitit_local"])
def test_a_job_refused_by_a_check_is_summarised_with_its_message_and_exits_2(tmp_path,
                                                                              launcher):
    """cell=janet cell.impl=builtin in a multirun: the summary gives the refusal (not a
    dead process), and the command exits 2 whichever launcher ran the job."""
    proc = run_cli(["-m", "cell=janet", "cell.impl=builtin", "debug=smoke",
                    f"hydra/launcher={launcher}"], tmp_path, timeout=300)
    out, err = proc.stdout, proc.stderr
    assert proc.returncode == 2, out[-2000:] + err[-2000:]
    assert "1 job(s): 0 finished, 1 failed" in out, out[-2000:]
    assert "#0 failed   no run  cell=janet cell.impl=builtin" in out
    assert "cell 'janet' has no Keras built-in layer" in out.split("#0 failed", 1)[1]
    assert "process died" not in out and "Traceback" not in err


def test_an_unknown_key_gets_the_nearest_one_at_once_and_exits_2(tmp_path):
    """model.unit=32 (no +): rnnbench's suggestion at the first try, exit 2 like every
    user error; a choice Hydra cannot find exits 2 too, with Hydra's list of options."""
    proc = run_cli(["model.unit=32"], tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "rnnbench: error: model.unit is not a config key" in proc.stderr
    assert "Did you mean model.units?" in proc.stderr
    assert "+model.unit" not in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli(["cell=nosuch"], tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "rnnbench: error:" in proc.stderr and "cell/nosuch" in proc.stderr
    assert "janet" in proc.stderr and "Config search path" not in proc.stderr


@pytest.mark.parametrize("normalize", ["window", "global", "seasonal"])
def test_the_pyfunc_normalises_like_the_task_for_every_normalize(normalize):
    """The pyfunc's pre-processing of raw co2 windows gives exactly the task's model
    inputs, and its post-processing of the task's normalised targets gives the targets
    in ppm (a stand-in model returns the target of each input it is given)."""
    from helpers import compose_run
    from rnnbench import mlflow_model
    from rnnbench.tasks import get_task

    cfg = compose_run(["task=co2", "task.limit=16", f"task.normalize={normalize}"])
    task = get_task(cfg.task)
    data = task.prepare(8, 0)
    x, y = data.arrays["test"]

    class Targets:  # the Keras model's place: normalised input -> normalised target
        def predict(self, z):
            assert z.dtype == np.float32 and np.allclose(z, x, atol=1e-5)
            return y

    serving, example = mlflow_model.serving_of(task, data, model=None)
    window = serving["window"]
    assert window == cfg.task.lookback + (cfg.task.season if normalize == "seasonal" else 0)
    values = data.meta["values"]
    raw = np.stack([values[e - window:e] for e in data.meta["anchors"]["test"] + 1])[..., None]
    assert np.array_equal(example, raw[:len(example)])
    model = mlflow_model.ServingModel(Targets(), serving)
    pred = model.predict(raw)
    assert np.allclose(pred, data.meta["targets"]["test"], atol=1e-3)
    assert pred.min() > 300


def test_the_pyfunc_returns_probabilities_for_logits():
    from rnnbench import mlflow_model

    class Logits:
        def predict(self, z):
            return np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])

    probs = mlflow_model.ServingModel(Logits(), {"kind": "softmax"}).predict(None)
    assert np.allclose(probs.sum(axis=-1), 1.0) and probs[0].argmax() == 0
    keys = mlflow_model.ServingModel(Logits(), {"kind": "sigmoid"}).predict(None)
    assert keys[1] == pytest.approx([0.5, 0.5, 0.5])


def test_a_multirun_over_an_unknown_key_exits_2_without_an_empty_summary(tmp_path):
    proc = run_cli(["-m", "model.unit=1,2"], tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Did you mean model.units?" in proc.stderr
    assert "0 job(s)" not in proc.stdout and "Traceback" not in proc.stderr
