"""Shared helpers: run the real CLI in a temporary directory and read its MLflow store."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent

# One data cache for the whole test session, outside the user's own cache.
os.environ.setdefault("RNNBENCH_CACHE", tempfile.mkdtemp(prefix="rnnbench-cache-"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("HYDRA_FULL_ERROR", None)  # the user's view: no stack traces
    # rnnbench honours MLflow's variables, and mlflow.set_tracking_uri() in this process
    # (an earlier test) sets MLFLOW_TRACKING_URI: a test that wants one passes it in extra
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLFLOW_EXPERIMENT_NAME", None)
    env.update({"PYTHONUNBUFFERED": "1", **extra})
    return env


def run_cli(args: list[str], cwd: Path, *, module: str = "rnnbench", timeout: float = 300,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m <module> args`` (the real CLI) in ``cwd``."""
    if module == "rnnbench":
        cmd = [sys.executable, "-m", "rnnbench", *args]
    else:
        cmd = [sys.executable, "-c", f"from rnnbench.cli import {module}; {module}()", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env or cli_env())


def store_runs(cwd: Path, uri: str | None = None) -> list:
    """Every run in the store of ``cwd`` (default: its ./mlflow.db), all experiments."""
    import mlflow

    uri = uri or f"sqlite:///{cwd / 'mlflow.db'}"
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        return []
    client = mlflow.MlflowClient(tracking_uri=uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps, max_results=10000) if exps else []


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A CSV series and a Free-Spoken-Digits-like WAV folder, written here."""
    from scipy.io import wavfile

    root = tmp_path_factory.mktemp("inputs")
    t = np.arange(160)
    csv = root / "series.csv"
    csv.write_text("t,value\n" + "\n".join(f"{i},{10 + np.sin(i / 4):.5f}" for i in t) + "\n")
    wavs = root / "digits"
    wavs.mkdir()
    rng = np.random.default_rng(0)
    for label, freq in enumerate((300, 1100, 2300)):
        for i in range(6):
            n = int(8000 * (0.25 + 0.03 * i))
            x = 0.5 * np.sin(2 * np.pi * freq * np.arange(n) / 8000) + rng.normal(0, 0.02, n)
            wavfile.write(wavs / f"{label}_synth_{i}.wav", 8000, (x * 32767).astype(np.int16))
    return {"csv": csv, "wavs": wavs}
