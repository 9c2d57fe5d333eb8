"""The foundation end to end: the real CLI, the MLflow record, bad input, Ctrl-C and NaN."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from helpers import cli_env, run_cli, store_runs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("smoke")
    proc = run_cli(["debug=smoke", "seed=3"], cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd, proc


def test_smoke_run_leaves_a_complete_finished_record(smoke_run):
    cwd, proc = smoke_run
    runs = store_runs(cwd)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    client = mlflow.MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")
    assert client.get_experiment(run.info.experiment_id).name == "co2"

    tags = run.data.tags
    for key in ("task", "cell", "hardware", "impl", "seed", "python_version",
                "tensorflow_version", "keras_version", "rnnbench_version", "config_hash",
                "command"):
        assert tags.get(key), key
    assert (tags["task"], tags["cell"], tags["hardware"], tags["seed"]) == ("co2", "lstm", "cpu", "3")
    assert tags["impl"] == "builtin"
    assert tags["command"] == "rnnbench debug=smoke seed=3"

    params = run.data.params
    assert params["model.units"] == "16" and params["train.epochs"] == "2"
    assert params["cell.name"] == "lstm" and params["optimizer.name"] == "adam"

    for key in ("loss", "val_loss", "mae", "val_mae"):
        hist = client.get_metric_history(run.info.run_id, key)
        assert [m.step for m in sorted(hist, key=lambda m: m.step)] == [1, 2], key
    metrics = run.data.metrics
    for key in ("test_mse", "test_mae", "test_smape", "test_mase", "baseline_mase",
                "params_count"):
        assert key in metrics, key
    assert metrics["test_mse"] > 0 and metrics["params_count"] > 0

    # MLflow looks the run's logged model ("model", an MLflow model) up in the process's
    # tracking URI when it lists "model/": point it at this store first
    mlflow.set_tracking_uri(f"sqlite:///{cwd / 'mlflow.db'}")
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    arts |= {a.path for d in ("config", "model", "plots")
             for a in client.list_artifacts(run.info.run_id, d)}
    for path in ("config/config.yaml", "config/overrides.yaml", "model/model.keras",
                 "model/MLmodel", "plots/learning_curves.png", "history.csv"):
        assert path in arts, (path, arts)
    overrides = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/config/overrides.yaml")
    assert "debug=smoke" in overrides and "seed=3" in overrides
    config_yaml = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/config/config.yaml")
    assert "units: 16" in config_yaml
    assert run.inputs.dataset_inputs and run.inputs.dataset_inputs[0].dataset.name == "co2"


def test_console_summary_names_metrics_run_and_ui_command(smoke_run):
    _, proc = smoke_run
    out = proc.stdout
    assert "Epoch 1/2" in out and "Epoch 2/2" in out
    assert "test mse" in out and "test mase" in out
    run_line = [line for line in out.splitlines() if "MLflow run" in line]
    assert run_line and len(run_line[0].split()[2]) == 32
    assert "mlflow ui --backend-store-uri sqlite:///mlflow.db" in out


def test_saved_model_reloads_and_predicts(smoke_run):
    cwd, _ = smoke_run
    run = store_runs(cwd)[0]
    path = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="model/model.keras",
        tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}", dst_path=str(cwd / "dl"))
    code = (
        "import sys, numpy as np, keras; m = keras.saving.load_model(sys.argv[1]);"
        "print(m.predict(np.zeros((2, 52, 1), 'float32'), verbose=0).shape)"
    )
    out = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True,
                         env=cli_env(), timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "(2, 8)" in out.stdout


def test_multirun_leaves_one_run_per_job(tmp_path):
    # the multirun is under test, not the run (test_smoke_run_leaves_a_complete_finished_record)
    proc = run_cli(["-m", "cell=rnn,lstm,gru", "debug=smoke", "hardware.xla=off",
                    "diagnostics.enabled=false", "tracking.log_model=false"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = store_runs(tmp_path)
    assert sorted(r.data.tags["cell"] for r in runs) == ["gru", "lstm", "rnn"]
    assert all(r.info.status == "FINISHED" for r in runs)
    sweep_ids = {r.data.tags.get("sweep_id") for r in runs}
    assert len(sweep_ids) == 1 and None not in sweep_ids


@pytest.mark.parametrize(
    "args, expect",
    [
        (["cell=lstn"], ["cell/lstn", "Available options", "lstm", "peephole"]),
        (["task=nope"], ["task/nope", "Available options", "co2"]),
        (["model.units=0"], ["model.units=0", ">= 1"]),
        (["train.epochs=0"], ["train.epochs=0", ">= 1"]),
        (["optimizer.lr=-1"], ["optimizer.lr=-1", "> 0"]),
        (["optimizer.name=adamx"], ["optimizer.name='adamx'", "adam", "sgd"]),
        (["model.unitz=3"], ["unitz", "is not a config key", "Did you mean model.units?"]),
        (["model.units=abc"], ["model.units", "abc"]),
        (["-m", "cell=rnn,lstm", "--cfg", "job"],
         ["Only one of --run, --multirun", "leave out -m", "--cfg job"]),
    ],
)
def test_bad_input_is_refused_clearly_and_records_nothing(tmp_path, args, expect):
    proc = run_cli(args, tmp_path, timeout=120)
    assert proc.returncode != 0
    err = proc.stderr + proc.stdout
    for text in expect:
        assert text in err, (text, err[-2000:])
    assert "Traceback" not in err
    assert store_runs(tmp_path) == []


@pytest.mark.parametrize("value, says", [
    ("train.epochs=0", "train.epochs=0 is not allowed"),
    ("optimizer.name=adamx", "optimizer.name='adamx' is not allowed"),
])
def test_a_refused_value_is_refused_before_tensorflow_loads(tmp_path, value, says):
    """The value checks take milliseconds; importing TensorFlow takes seconds (over a
    minute on a loaded machine). A refused value must not wait for it: here TensorFlow
    cannot be imported at all, and the message still comes, alone."""
    import os

    fake = tmp_path / "fake"
    (fake / "tensorflow").mkdir(parents=True)
    (fake / "tensorflow" / "__init__.py").write_text("raise ImportError('tensorflow imported')\n")
    path = os.pathsep.join(p for p in (str(fake), os.environ.get("PYTHONPATH", "")) if p)
    proc = run_cli([value], tmp_path, env=cli_env(PYTHONPATH=path), timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert says in proc.stderr, proc.stderr[-2000:]
    assert "tensorflow imported" not in proc.stderr and "Traceback" not in proc.stderr


def _wait_for_running(cwd: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        try:
            runs = store_runs(cwd)
        except Exception:  # the store is being created
            runs = []
        if runs and runs[0].info.status == "RUNNING":
            return
        time.sleep(0.5)
    raise AssertionError("the run never started")


def _interrupt_a_long_run(cwd: Path, delay_s: float = 0.0, preexec_fn=None):
    """Start a long ``rnnbench`` run in ``cwd``, send SIGINT ``delay_s`` after its MLflow
    run is RUNNING, and return (the process, its stderr)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "rnnbench", "train.epochs=500", "train.patience=500",
         "diagnostics.enabled=false"],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(),
        preexec_fn=preexec_fn)
    try:
        _wait_for_running(cwd, proc)
        time.sleep(delay_s)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc, err


def test_ctrl_c_ends_the_run_killed(tmp_path):
    proc, err = _interrupt_a_long_run(tmp_path, delay_s=2)
    assert proc.returncode != 0
    assert "KILLED" in err and "Traceback" not in err
    runs = store_runs(tmp_path)
    assert [r.info.status for r in runs] == ["KILLED"]


def test_ctrl_c_stops_a_run_that_inherited_sigint_ignored(tmp_path):
    """A command started with ``&`` from a script inherits SIGINT ignored; rnnbench
    installs its handler anyway, so ``kill -INT`` still ends the run KILLED."""
    proc, err = _interrupt_a_long_run(
        tmp_path, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert proc.returncode == 130 and "KILLED" in err, err[-5000:]
    assert [r.info.status for r in store_runs(tmp_path)] == ["KILLED"]


def test_an_interrupt_swallowed_by_library_code_still_stops_training():
    """Keras tries things under a bare ``except:`` while it builds a model; a Ctrl-C that
    lands there is swallowed. rnnbench's handler remembers it and InterruptCheck raises
    it again before the next batch, so the run still ends KILLED."""
    import keras
    import numpy as np

    from rnnbench import interrupt
    from rnnbench.callbacks import InterruptCheck

    x = np.random.default_rng(0).normal(size=(16, 3)).astype("float32")
    y = x.sum(axis=1, keepdims=True)

    def fit(*extra):
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
        steps: list[int] = []
        counter = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: steps.append(b))
        try:
            model.fit(x, y, batch_size=4, epochs=2, callbacks=[*extra, counter], verbose=0)
        finally:
            fit.steps = steps

    saved = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        interrupt.install()
        try:
            signal.raise_signal(signal.SIGINT)
        except:  # noqa: E722 - what the library code does
            pass
        assert interrupt.requested() == "SIGINT"
        fit()  # without the check, training goes on as if nothing had happened
        assert len(fit.steps) == 8
        with pytest.raises(KeyboardInterrupt, match="SIGINT"):
            fit(InterruptCheck())
        assert fit.steps == []  # stopped before its first step
    finally:
        interrupt.reset()
        signal.signal(signal.SIGINT, saved[0])
        signal.signal(signal.SIGTERM, saved[1])


def test_nan_loss_ends_the_run_failed_with_reason(tmp_path):
    proc = run_cli(["debug=smoke", "cell=rnn", "optimizer.name=sgd", "optimizer.lr=1e30",
                    "optimizer.clipnorm=null", "train.steps_per_epoch=20"], tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "FAILED" in proc.stderr and "non-finite" in proc.stderr
    assert "Traceback" not in proc.stderr
    runs = store_runs(tmp_path)
    assert [r.info.status for r in runs] == ["FAILED"]
    tags = runs[0].data.tags
    assert tags["failure_what"] in ("loss", "gradient")
    assert int(tags["failure_epoch"]) >= 1 and int(tags["failure_step"]) >= 0
    assert "non-finite" in tags["failure_reason"]


@pytest.mark.slow
def test_a_diverged_job_is_not_run_again_by_the_same_multirun_unless_asked(tmp_path):
    """Run a multirun again (a resume, more seeds): a job that FINISHED is reused, and a
    job that FAILED on a non-finite loss fails again at once, naming its run, instead of
    training to the same NaN (and adding a second FAILED record of the same seed);
    tracking.retry_failed=true runs it again."""
    fixed = ["debug=smoke", "cell=rnn", "optimizer.name=sgd", "optimizer.clipnorm=null",
             "hardware.xla=off", "diagnostics.enabled=false", "tracking.log_model=false",
             "train.verbose=0"]
    args = ["-m", "optimizer.lr=1e30,0.001", *fixed]
    first = run_cli(args, tmp_path)
    assert first.returncode == 1, first.stderr[-3000:]
    runs = store_runs(tmp_path)
    assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED"]
    [diverged] = [r for r in runs if r.info.status == "FAILED"]

    again = run_cli(args, tmp_path)
    assert again.returncode == 1, again.stderr[-3000:]
    out = again.stdout + again.stderr
    assert f"run {diverged.info.run_id} FAILED with this exact config before" in out
    assert "tracking.retry_failed=true" in out and "Traceback" not in out
    assert "skipped: this exact config already FINISHED" in out
    assert len(store_runs(tmp_path)) == 2  # nothing trained, nothing recorded twice

    retried = run_cli(["-m", "optimizer.lr=1e30", *fixed, "tracking.retry_failed=true"],
                      tmp_path)
    assert retried.returncode == 1, retried.stderr[-3000:]
    assert sorted(r.info.status for r in store_runs(tmp_path)) == ["FAILED", "FAILED",
                                                                  "FINISHED"]


def test_a_native_crash_prints_where_python_was(tmp_path):
    # what rnnbench and rnnbench-tune turn on first: a segfault in native code (as
    # TensorFlow's can) dumps the Python stack of every thread instead of dying silently
    code = ("import faulthandler, sys\n"
            "from rnnbench.cli import _enable_crash_traceback\n"
            "_enable_crash_traceback()\n"
            "def inside_a_training_step():\n"
            "    faulthandler._sigsegv()\n"
            "inside_a_training_step()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert proc.returncode == -signal.SIGSEGV
    assert "Segmentation fault" in proc.stderr
    assert "inside_a_training_step" in proc.stderr


def test_a_stop_request_that_surfaces_as_another_error_ends_the_run_killed(tmp_path, monkeypatch):
    """TensorFlow turns a KeyboardInterrupt raised in Python code it called into an error
    of its own. After a stop request, whatever error ends the run means the run was
    stopped: KILLED with the interrupt's reason, and a KeyboardInterrupt (exit 130 from
    the CLI), not FAILED with exit 1. Without a stop request the error stays a failure."""
    import mlflow

    from rnnbench import interrupt, tracking

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'a.db'}"
    tracking.configure(uri)
    try:
        interrupt._handler(signal.SIGINT, None)
    except KeyboardInterrupt:
        pass  # swallowed by library code
    try:
        with pytest.raises(KeyboardInterrupt, match="SIGINT"):
            with tracking.start_run("exp", "stopped", {}) as stopped:
                raise RuntimeError("UnknownError: KeyboardInterrupt: SIGINT received")
    finally:
        interrupt.reset()
    with pytest.raises(RuntimeError):
        with tracking.start_run("exp", "broken", {}) as broken:
            raise RuntimeError("a real failure")
    client = mlflow.MlflowClient(uri)
    run = client.get_run(stopped.run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["failure_reason"].startswith("interrupted")
    assert client.get_run(broken.run_id).info.status == "FAILED"
