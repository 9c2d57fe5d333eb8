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
