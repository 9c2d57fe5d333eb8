"""rnnbench among the tools its users already use: MLflow's conventions (environment
variables, experiment kind, system tags, plain-name params, MLflow models, system
metrics), Hydra's sweepers and launchers (one float objective, failed jobs reported),
job logs and TensorBoard.

One multirun of two real jobs (lstm and janet on co2, debug=smoke) serves most tests.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml

from helpers import ROOT, cli_env, run_cli, store_runs

pytestmark = pytest.mark.slow

FAST = ["debug=smoke", "hardware.xla=off", "train.verbose=2"]


@pytest.fixture(scope="module")
def multirun(tmp_path_factory):
    """``rnnbench -m cell=lstm,janet`` with MLflow's variables set: MLFLOW_TRACKING_URI
    names another store (the command line's tracking.uri must win), MLFLOW_EXPERIMENT_NAME
    an experiment (used: the command line does not name one), system metrics on."""
    cwd = tmp_path_factory.mktemp("ecosystem")
    env = cli_env(MLFLOW_TRACKING_URI=f"sqlite:///{cwd / 'env.db'}",
                  MLFLOW_EXPERIMENT_NAME="ecosystem",
                  MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING="true",
                  MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL="1")
    proc = run_cli(["-m", "cell=lstm,janet", *FAST, "tracking.uri=sqlite:///mlflow.db",
                    "tracking.tensorboard=true"], cwd, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = {r.data.tags["cell"]: r for r in store_runs(cwd)}
    assert sorted(runs) == ["janet", "lstm"]
    return cwd, proc, runs


def test_command_line_uri_wins_over_the_environment_and_says_so(multirun):
    cwd, proc, runs = multirun
    assert (f"tracking.uri=sqlite:///mlflow.db from the command line overrides "
            f"MLFLOW_TRACKING_URI=sqlite:///{cwd / 'env.db'}") in proc.stdout
    assert not (cwd / "env.db").exists()
    client = mlflow.MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ecosystem")  # the environment's experiment
    assert exp is not None and {r.info.experiment_id for r in runs.values()} == {
        exp.experiment_id}


def test_experiment_opens_on_the_runs_list_and_runs_carry_system_tags(multirun):
    cwd, _, runs = multirun
    client = mlflow.MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")
    assert client.get_experiment_by_name("ecosystem").tags["mlflow.experimentKind"] == (
        "custom_model_development")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True).stdout.strip()
    for run in runs.values():
        tags = run.data.tags
        assert tags["mlflow.source.name"] == "rnnbench"
        assert tags["mlflow.source.type"] == "LOCAL"
        assert tags["mlflow.user"]
        assert tags["mlflow.source.git.commit"] == head


def test_params_are_filtered_by_plain_names(multirun):
    cwd, _, runs = multirun
    mlflow.set_tracking_uri(f"sqlite:///{cwd / 'mlflow.db'}")
    lstm = mlflow.search_runs(experiment_names=["ecosystem"],
                              filter_string="params.cell = 'lstm'")
    assert list(lstm["run_id"]) == [runs["lstm"].info.run_id]
    both = mlflow.search_runs(experiment_names=["ecosystem"],
                              filter_string="params.task = 'co2' and params.units = '16'")
    assert len(both) == 2
    assert runs["janet"].data.params["cell.name"] == "janet"  # the dotted keys stay


def test_job_returns_the_validation_objective(multirun):
    cwd, _, runs = multirun
    client = mlflow.MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")
    for run in runs.values():
        m, tags = run.data.metrics, run.data.tags
        assert tags["objective"] == "final_val_mse"
        assert tags["objective_direction"] == "minimize"
        assert math.isfinite(m["objective"]) and m["objective"] == m["final_val_mse"]
        assert m["final_val_mse"] != m["test_mse"]
        # the per-epoch loss is on normalised values; its factor puts it in ppm²: the
        # epoch whose weights the run kept has val_loss x factor = the exact val MSE
        factor, unit = json.loads(tags["metric_units"])["loss"]
        assert unit == "ppm²" and factor > 1
        val = [h.value for h in client.get_metric_history(run.info.run_id, "val_loss")]
        assert any(v * factor == pytest.approx(m["final_val_mse"], rel=1e-4) for v in val), (
            [v * factor for v in val], m["final_val_mse"])


def test_custom_cell_model_loads_with_pyfunc_in_a_fresh_process(multirun):
    """The janet model through MLflow's own loader, in a process that never imports
    rnnbench itself (the model's loader does)."""
    cwd, _, runs = multirun
    run_id = runs["janet"].info.run_id
    code = (
        "import sys, numpy as np, mlflow\n"
        f"mlflow.set_tracking_uri('sqlite:///{cwd / 'mlflow.db'}')\n"
        f"m = mlflow.pyfunc.load_model('runs:/{run_id}/model')\n"
        "sig = m.metadata.signature\n"
        "print('IN', sig.inputs.inputs[0].shape, 'OUT', sig.outputs.inputs[0].shape)\n"
        "print('PRED', m.predict(np.full((3, 52, 1), 350.0)).shape)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=cli_env(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false"),
                         timeout=300, cwd=cwd)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "IN (-1, 52, 1) OUT (-1, 8)" in out.stdout and "PRED (3, 8)" in out.stdout


def test_import_rnnbench_registers_the_cells_without_importing_keras(multirun, tmp_path):
    cwd, _, runs = multirun
    path = mlflow.artifacts.download_artifacts(
        run_id=runs["janet"].info.run_id, artifact_path="model/model.keras",
        tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}", dst_path=str(tmp_path))
    code = (
        "import sys\n"
        "import rnnbench\n"
        "heavy = [m for m in ('keras', 'tensorflow', 'jax', 'torch') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
        "import keras, numpy as np\n"
        f"m = keras.saving.load_model({path!r})\n"
        "print('LAYER', type(m.get_layer('rnn_0').cell).__name__ if any("
        "l.name == 'rnn_0' for l in m.layers) else [type(l).__name__ for l in m.layers])\n"
        "print('PRED', m.predict(np.zeros((2, 52, 1), 'float32'), verbose=0).shape)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=cli_env(), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "HEAVY []" in out.stdout and "PRED (2, 8)" in out.stdout
    assert "JANET" in out.stdout


def test_system_metrics_are_logged_when_mlflow_asks(multirun):
    _, _, runs = multirun
    for run in runs.values():
        assert any(k.startswith("system/cpu_utilization") for k in run.data.metrics), sorted(
            run.data.metrics)


def test_tensorboard_logs_hold_the_record_and_the_diagnostics(multirun):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cwd, _, runs = multirun
    run = runs["lstm"]
    folder = Path(run.data.tags["tensorboard_logdir"])
    assert folder == cwd / "tensorboard" / "ecosystem" / f"co2-lstm-s0-{run.info.run_id}"
    acc = EventAccumulator(str(folder), size_guidance={"tensors": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()["tensors"]
    for key in ("loss", "val_loss", "test_mse", "objective"):
        assert key in tags, (key, tags)
    assert any(t.startswith("grad_flow/") for t in tags), tags
    assert "diagnostics/grad_flow_heatmap" in tags and "plots/learning_curves" in tags
    steps = [e.step for e in acc.Tensors("val_loss")]
    assert steps == [1, 2]
    client = mlflow.MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")
    assert [a.path for a in client.list_artifacts(run.info.run_id, "tensorboard")]


def test_each_job_console_goes_to_its_log_file_and_the_multirun_ends_with_a_summary(multirun):
    cwd, proc, runs = multirun
    logs = sorted(cwd.glob("multirun/*/*/*/rnnbench.log"))
    assert len(logs) == 2
    for log in logs:
        text = log.read_text()
        assert "Epoch 1/2" in text and "Epoch 2/2" in text, text[-2000:]
        assert any(f"MLflow run {r.info.run_id}" in text for r in runs.values())
    assert "2 job(s): 2 finished, 0 failed, 0 skipped" in proc.stdout
    for run in runs.values():
        assert f"finished run {run.info.run_id}" in proc.stdout


def test_optuna_sweeper_over_submitit_jobs_with_one_failing(tmp_path):
    """Hydra's Optuna sweeper (grid over two learning rates) launching its trials in their
    own processes (submitit's local launcher); one trial diverges. The store comes from
    MLFLOW_TRACKING_URI (the command line does not name one)."""
    store = tmp_path / "env.db"
    proc = run_cli(["-m", "hydra/sweeper=optuna", "hydra/sweeper/sampler=grid",
                    "hydra.sweeper.n_trials=2", "hydra/launcher=submitit_local",
                    "optimizer.lr=choice(0.001,1e30)", "optimizer.clipnorm=null",
                    "debug=smoke", "hardware.xla=off", "diagnostics.enabled=false",
                    "tracking.log_model=false", "train.verbose=0"], tmp_path, timeout=600,
                   env=cli_env(MLFLOW_TRACKING_URI=f"sqlite:///{store}"))
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not (tmp_path / "mlflow.db").exists()
    runs = {r.data.params["lr"]: r for r in store_runs(tmp_path, f"sqlite:///{store}")}
    assert {k: r.info.status for k, r in runs.items()} == {"0.001": "FINISHED",
                                                           "1e+30": "FAILED"}
    # every job returned one float: the sweep ran to its end and chose the finished trial
    result = yaml.safe_load(next(tmp_path.glob("multirun/*/*/optimization_results.yaml"))
                            .read_text())
    good = runs["0.001"].data.metrics
    assert result["best_value"] == pytest.approx(good["objective"])
    assert good["objective"] == good["final_val_mse"]
    assert result["best_params"] == {"optimizer.lr": 0.001}
    # the summary: finished and failed, with run ids; exit 1, no traceback
    out = proc.stdout
    assert "2 job(s): 1 finished, 1 failed, 0 skipped" in out
    assert f"finished run {runs['0.001'].info.run_id}" in out
    assert f"failed   run {runs['1e+30'].info.run_id}" in out
    assert "1 job(s) of the multirun FAILED" in proc.stderr
    assert "Traceback" not in proc.stderr
    # the report tells the trials apart by the config's keys, once (not by their aliases)
    from rnnbench.report.cli import main as report_main

    assert report_main(["--tracking-uri", f"sqlite:///{store}", "--out",
                        str(tmp_path / "report")]) == 0
    listed = (tmp_path / "report" / "tables" / "runs.csv").read_text()
    assert all(r.info.run_id in listed for r in runs.values())
    assert not re.search(r"[ ,·]lr=", (tmp_path / "report" / "report.md").read_text())


def test_unknown_objective_metric_is_refused_before_training(tmp_path):
    proc = run_cli(["objective.metric=nosuchmetric", "debug=smoke", "hardware.xla=off",
                    "diagnostics.enabled=false"], tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    err = proc.stderr
    assert "objective.metric='nosuchmetric'" in err and "mse, mae, smape, mase" not in err
    assert all(m in err for m in ("mae", "mase", "mse", "smape")), err
    assert "Traceback" not in err and "Epoch 1/" not in proc.stdout
    assert store_runs(tmp_path) == []


def test_slurm_launcher_and_the_optuna_experiment_compose(tmp_path):
    proc = run_cli(["hydra/launcher=submitit_slurm", "--cfg", "hydra"], tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    launcher = yaml.safe_load(proc.stdout)["hydra"]["launcher"]
    assert launcher["_target_"].endswith("SlurmLauncher") and "partition" in launcher
    proc = run_cli(["experiment=optuna", "cell=gru", "--cfg", "hydra"], tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    sweeper = yaml.safe_load(proc.stdout)["hydra"]["sweeper"]
    assert sweeper["_target_"].endswith("OptunaSweeper") and sweeper["direction"] == "minimize"
    assert set(sweeper["params"]) == {"optimizer.lr", "model.units"}
    assert sweeper["study_name"] == "rnnbench-${task.name}-${cell.name}"


def test_a_missing_hydra_plugin_names_its_install_command(tmp_path):
    code = ("import sys; sys.modules['hydra_plugins.hydra_optuna_sweeper'] = None; "
            "sys.argv = ['rnnbench', '-m', 'experiment=optuna']; "
            "from rnnbench.cli import main; main()")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, env=cli_env(), timeout=120)
    assert proc.returncode == 2
    assert "pip install --no-deps 'hydra-optuna-sweeper==1.3.0'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert os.listdir(tmp_path) == []
