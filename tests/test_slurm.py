"""rnnbench on a real one-node Slurm cluster (tests/slurm_cluster.py, one per session):
multiruns through Hydra's submitit_slurm launcher into one MLflow store, a failed and a
cancelled job in the multirun summary, and the launcher's checks. Skipped, with the
install command, where Slurm is not installed."""

from __future__ import annotations

import time

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def wait_for(check, timeout: float, what: str):
    """Poll ``check()`` until it returns something true (generous deadline, no fixed sleep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def test_the_cluster_runs_a_batch_job(slurm_cluster, tmp_path):
    print(slurm_cluster.run("sinfo"))
    assert slurm_cluster.node_state() == "idle"
    out = tmp_path / "out.txt"
    job = slurm_cluster.run("sbatch", "--parsable", f"--output={out}", "--wrap",
                            "echo ran-on-$SLURMD_NODENAME").strip()
    wait_for(lambda: out.is_file() and "ran-on-" in out.read_text(), 120, f"job {job}")
    assert out.read_text().strip() == f"ran-on-{slurm_cluster.host}"
