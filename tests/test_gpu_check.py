"""`benchmarks/gpu_check.py` without a GPU: the clear refusal, and a CPU dry run of the
whole logic (cuDNN evidence from the compiled HLO and a profiler trace, timings, JSON)
on the JAX backend with TensorFlow made unimportable, as on a GPU machine that has
only keras, jax, numpy and rnnbench."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import ROOT, cli_env

SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
# `import tensorflow` fails in the child, as on a machine without it.
NO_TF = ("import runpy, sys; sys.modules['tensorflow'] = None; sys.argv = sys.argv[1:]; "
         "runpy.run_path(sys.argv[0], run_name='__main__')")


def run_check(tmp_path, *args, backend="jax"):
    return subprocess.run(
        [sys.executable, "-c", NO_TF, str(SCRIPT), *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env=cli_env(KERAS_BACKEND=backend, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT)),
    )


@pytest.mark.slow
def test_no_gpu_fails_clearly(tmp_path):
    proc = run_check(tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "no GPU found" in proc.stderr and "--allow-cpu" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "gpu_check.json").exists()
    proc = run_check(tmp_path, backend="tensorflow")
    assert proc.returncode == 2 and "KERAS_BACKEND=tensorflow" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_cpu_dry_run_writes_the_json_without_tensorflow(tmp_path):
    out = tmp_path / "check.json"
    proc = run_check(tmp_path, "--allow-cpu", "--out", str(out), "--batch", "4", "--time",
                     "6", "--d", "3", "--n", "8", "--steps", "1", "--rounds", "2",
                     "--cells", "lstm")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["platform"] == "cpu" and result["dry_run"] is True
    assert result["tensorflow_imported"] is False
    for cell in ("lstm", "gru"):
        ev = result["cudnn"][cell]
        # the CPU has no cuDNN: neither the compiled step nor the kernel trace shows it
        assert ev["cudnn"] is False and ev["hlo_cudnn_custom_calls"] == []
        assert ev["trace_problem"] is None and ev["trace_events"] > 0
        assert ev["trace_cudnn_events"] == []
    rows = {(r["cell"], r["impl"], r["gradient"]): r for r in result["timings"]}
    assert set(rows) == {("lstm", "keras", "autodiff"), ("gru", "keras", "autodiff"),
                         ("lstm", "rnnbench", "bptt"), ("lstm", "rnnbench", "autodiff")}
    assert all(r["steps_per_s"] > 0 for r in rows.values())
    assert rows[("lstm", "keras", "autodiff")]["x_keras_lstm"] == 1.0
