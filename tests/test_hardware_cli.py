"""Hardware by config, end to end through the real ``rnnbench`` command: refusals with
clear messages, MirroredStrategy on two logical CPUs, determinism, the JAX backend,
and the MLflow tags that say what ran."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import cli_env

BIN = Path(sys.executable).parent
FAST = ["debug=smoke", "diagnostics.enabled=false", "tracking.log_model=false"]


def rnnbench(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = cli_env(PYTHONWARNINGS="default")  # no MLflow variables an earlier test left
    env.pop("KERAS_BACKEND", None)
    return subprocess.run([str(BIN / "rnnbench"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {k: v for k, v in cli_env().items() if k != "KERAS_BACKEND"}
    return subprocess.Popen([str(BIN / "rnnbench"), *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def runs_in(folder: Path, experiment: str = "co2") -> list:
    import mlflow

    db = folder / "mlflow.db"
    if not db.exists():
        return []
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id]) if exp else []


def history(folder: Path, run, key: str) -> list[float]:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    return [m.value for m in sorted(client.get_metric_history(run.info.run_id, key),
                                    key=lambda m: m.step)]


def assert_user_error(out: subprocess.CompletedProcess, *words: str) -> None:
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    assert "rnnbench: error:" in out.stderr
    for word in words:
        assert word in out.stderr, f"{word!r} not in:\n{out.stderr[-2000:]}"


def _gpu_present() -> bool:
    return shutil.which("nvidia-smi") is not None and Path("/dev/nvidia0").exists()


# ---- refusals ---------------------------------------------------------------------------

@pytest.mark.skipif(_gpu_present(), reason="this machine has a GPU: hardware=gpu would run")
@pytest.mark.slow
def test_gpu_asked_without_a_gpu_fails_and_records_nothing(tmp_path):
    out = rnnbench(["hardware=gpu", *FAST], tmp_path)
    assert_user_error(out, "hardware=gpu asks for a GPU", "sees none", "hardware=cpu",
                      "hardware.fallback=cpu")
    assert runs_in(tmp_path) == []  # never a silent CPU run


@pytest.mark.slow
def test_mirrored_with_one_device_is_refused(tmp_path):
    out = rnnbench(["hardware=multi_gpu", "hardware.device=cpu", *FAST], tmp_path)
    assert_user_error(out, "asks for 2 CPU devices with MirroredStrategy", "1 is visible",
                      "hardware.logical_cpus=2")
    out = rnnbench(["hardware=multi_gpu", "hardware.num_devices=1", *FAST], tmp_path)
    assert_user_error(out, "hardware.num_devices=1", "hardware.strategy=mirrored",
                      "at least 2 devices")
    assert runs_in(tmp_path) == []


def test_unknown_precision_is_refused(tmp_path):
    out = rnnbench(["hardware.precision=float8", *FAST], tmp_path)
    assert_user_error(out, "hardware.precision='float8'",
                      "float32, mixed_float16, mixed_bfloat16")


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None,
                    reason="torch is installed here, so backend=torch is not refused")
def test_backend_not_installed_is_refused(tmp_path):
    out = rnnbench(["backend=torch", *FAST], tmp_path)
    assert_user_error(out, "backend=torch", "'torch' is not installed", "backend=tensorflow")


@pytest.mark.slow
def test_op_without_deterministic_kernel_gets_a_clear_message(tmp_path):
    """tf.timestamp has no deterministic kernel: TensorFlow refuses it under op
    determinism, and the run's guard turns that into a HardwareError naming the op."""
    script = textwrap.dedent("""
        import os
        os.environ["KERAS_BACKEND"] = "tensorflow"
        from rnnbench import hardware
        from rnnbench.config import HardwareConfig
        from rnnbench.errors import HardwareError
        hw = hardware.setup(HardwareConfig(deterministic=True), "tensorflow", 0)
        import keras, numpy as np, tensorflow as tf

        class Stamp(keras.layers.Layer):
            def call(self, x):
                return x + 0.0 * tf.cast(tf.timestamp(), x.dtype)

        inputs = keras.Input((5, 2))
        model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.LSTM(3)(Stamp()(inputs))))
        model.compile("adam", "mse", jit_compile=hw.jit_compile)
        x, y = np.ones((8, 5, 2), "float32"), np.ones((8, 1), "float32")
        try:
            with hw.guard():
                model.fit(x, y, epochs=1, verbose=0)
        except HardwareError as exc:
            print("HARDWARE_ERROR:", exc)
        else:
            print("NO ERROR")
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(l for l in out.stdout.splitlines() if l.startswith(("HARDWARE_ERROR", "NO ")))
    assert line.startswith("HARDWARE_ERROR: hardware.deterministic=true, but Timestamp "
                           "(node functional"), line
    assert "stamp" in line and "in call()" in line  # the layer and the code that made it
    assert "has no deterministic implementation on tensorflow" in line
    assert "Timestamp cannot be called when determinism is enabled" in line
    assert "hardware.deterministic=false" in line


# ---- runs and what they record --------------------------------------------------------

@pytest.mark.slow
def test_multi_gpu_falls_back_to_mirrored_on_two_logical_cpus(tmp_path):
    """hardware=multi_gpu on a machine without a GPU, with fallback=cpu: MirroredStrategy
    over two logical CPUs, recorded as such; mixed_float16 on the CPU warns."""
    if _gpu_present():
        pytest.skip("this machine has a GPU: nothing to fall back from")
    out = rnnbench(["hardware=multi_gpu", "hardware.fallback=cpu", "hardware.logical_cpus=2",
                    "hardware.precision=mixed_float16", "optimizer.lr=0.001", *FAST], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "mixed_float16 on a CPU is usually slower" in out.stderr
    assert "use hardware.precision=mixed_bfloat16" in out.stderr
    (run,) = runs_in(tmp_path)
    tags = run.data.tags
    assert run.info.status == "FINISHED"
    assert tags["hardware"] == "multi_gpu" and tags["device_type"] == "cpu"
    assert "fell back to the CPU" in tags["hardware_notes"]
    assert "mixed_float16 on a CPU" in tags["hardware_notes"]
    assert tags["precision"] == "mixed_float16"
    assert tags["replicas"] == "2"
    assert tags["devices_used"] == "/device:CPU:0,/device:CPU:1"
    assert tags["device"] == tags["devices_used"]
    # train.batch_size is the global batch, split across replicas; the learning rate is
    # scaled linearly with the replicas (hardware.scale_lr=true)
    assert tags["global_batch_size"] == "32" and tags["replica_batch_size"] == "16"
    assert tags["lr_scale"] == "2" and tags["effective_lr"] == "0.002"
    assert tags["xla"] == "off"  # XLA auto is off under tf.distribute
    assert tags["cudnn"] == "false" and tags["cudnn.rnn_0"] == "false"
    assert run.data.metrics["test_mse"] > 0


@pytest.mark.slow
def test_deterministic_runs_repeat_exactly(tmp_path):
    """Two processes, same seed, hardware.deterministic=true: identical metrics."""
    folders = [tmp_path / "a", tmp_path / "b"]
    procs = []
    for folder in folders:
        folder.mkdir()
        procs.append(start(["hardware.deterministic=true", "seed=3", "cell=gru", *FAST],
                           folder))
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    (run_a,), (run_b,) = (runs_in(f) for f in folders)
    assert run_a.data.tags["deterministic"] == "true"
    assert run_a.data.tags["xla"] == "off"  # Keras turns XLA off under op determinism
    metrics_a, metrics_b = run_a.data.metrics, run_b.data.metrics
    keys = [k for k in metrics_a if k.startswith(("test_", "loss", "val_"))]
    assert "test_mse" in keys and "loss" in keys
    assert {k: metrics_a[k] for k in keys} == {k: metrics_b[k] for k in keys}
    for key in ("loss", "val_loss"):
        hist_a, hist_b = history(folders[0], run_a, key), history(folders[1], run_b, key)
        assert len(hist_a) == 2 and hist_a == hist_b


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                    reason="JAX is not installed (pip install 'jax[cpu]')")
def test_a_whole_run_on_jax_with_a_custom_cell(tmp_path):
    out = rnnbench(["backend=jax", "cell=janet", "debug=smoke"], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    (run,) = runs_in(tmp_path)
    tags = run.data.tags
    assert run.info.status == "FINISHED"
    assert tags["backend"] == "jax" and tags["jax_version"]
    assert tags["impl"] == "custom" and tags["cudnn.rnn_0"] == "false"
    assert tags["gradient"] == "bptt"  # jax.custom_vjp
    assert tags["xla"] == "on"  # jax.jit
    assert tags["device"].startswith("cpu") and tags["device_type"] == "cpu"
    assert run.data.metrics["test_mse"] > 0
    # the diagnostics ran too
    assert any(k.startswith("grad_norm/") for k in run.data.metrics)
    assert any(k.startswith("grad_flow/") for k in run.data.metrics)
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")  # for the logged model
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    names = [f.path for f in client.list_artifacts(run.info.run_id, "model")]
    assert "model/model.keras" in names
