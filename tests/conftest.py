"""Fixtures and the test session's environment; the helpers test modules import are in
helpers.py."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

# One data cache for the whole test session, outside the user's own cache.
os.environ.setdefault("RNNBENCH_CACHE", tempfile.mkdtemp(prefix="rnnbench-cache-"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The servers the tests start serve tracking only: without this, each `mlflow server` also
# starts MLflow's job runner and six huey consumer processes (each importing mlflow),
# which the tests never use and which slowed each start by about 10 s on 2 cores.
os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")


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


@pytest.fixture
def small_disk(tmp_path: Path):
    """`small_disk(kib) -> Path`: a real, nearly full filesystem (a tmpfs of `kib` KiB
    mounted on a fresh folder), for the faults of a full disk. Skipped, with the reason,
    where this process may not mount (not root, or a container without the capability)."""
    import subprocess

    mounted: list[Path] = []

    def make(kib: int = 64) -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(where)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip() or 'mount failed'}); "
                        "run the tests as root to check full-disk behaviour")
        mounted.append(where)
        return where

    yield make
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], capture_output=True)



@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """One private one-node Slurm cluster (munged, slurmctld, slurmd) for the whole session
    (tests/slurm_cluster.py), stopped by its pid files at the end. Skipped, with the
    install command, where Slurm is not installed or this is not root."""
    import slurm_cluster as sc

    why = sc.missing()
    if why:
        pytest.skip(why)
    # a short folder outside pytest's private (0700) one: munged's socket and the jobs'
    # files must be reachable by other users (munge) and by the jobs
    root = Path(tempfile.mkdtemp(prefix="rnnbench-slurm-"))
    cluster = sc.Cluster(root)
    try:
        cluster.start(timeout=180)
        yield cluster
    finally:
        cluster.stop()
        import shutil

        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(autouse=True)
def _fresh_map_budget():
    """Each test measures its own runs' memory-map cost (rnnbench.hardware.maps keeps the
    costliest run of the process, and the test session is one long process)."""
    from rnnbench.hardware import maps

    maps.reset()
    yield
