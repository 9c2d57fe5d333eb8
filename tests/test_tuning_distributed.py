"""Distributed tuning, really run: a real ``mlflow server`` on 127.0.0.1 (SQLite backend),
one chief serving keras-tuner's oracle over gRPC, and two workers, all separate
processes. Every trial runs once and is logged once, under the chief's sweep run."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from helpers import FAST, cli_env

pytestmark = [pytest.mark.server, pytest.mark.slow]

TINY = """\
name: tiny
params:
  units: {key: model.units,  type: int,   low: 4,      high: 12}
  lr:    {key: optimizer.lr, type: float, low: 1.0e-3, high: 1.0e-2, sampling: log}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    """A real ``mlflow server`` on 127.0.0.1:<free port>. It takes a while to come up:
    the test starts the tuner processes at once, and they wait for it
    (``tracking.timeout_s``), as users' processes would."""
    port = free_port()
    log = open(tmp_path / "mlflow-server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "artifacts")],
        cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, env=cli_env(),
        start_new_session=True)
    yield f"http://127.0.0.1:{port}"
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    log.close()


def test_chief_and_two_workers_run_and_log_every_trial_once(tmp_path, mlflow_server):
    conf = tmp_path / "extra_conf" / "search_space"
    conf.mkdir(parents=True)
    (conf / "tiny.yaml").write_text(TINY)
    oracle_port = free_port()
    common = [*FAST, f"hydra.searchpath=[file://{tmp_path / 'extra_conf'}]", "search_space=tiny",
              "tuner.max_trials=4", "tracking=server", f"tracking.uri={mlflow_server}",
              "tracking.timeout_s=180",
              "tuner.distributed.address=127.0.0.1", f"tuner.distributed.port={oracle_port}"]
    roles = {
        "chief": ["tuner.distributed.role=chief"],
        "w1": ["tuner.distributed.role=worker", "tuner.distributed.worker_id=w1"],
        "w2": ["tuner.distributed.role=worker", "tuner.distributed.worker_id=w2"],
    }
    procs = {}
    for name, extra in roles.items():
        folder = tmp_path / name  # each on its own "machine": own folder, own search state
        folder.mkdir()
        procs[name] = subprocess.Popen(
            [sys.executable, "-c", "from rnnbench.cli import tune_main; tune_main()",
             *common, *extra],
            cwd=folder, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, start_new_session=True)
    outputs = {}
    try:
        for name, proc in procs.items():
            outputs[name], _ = proc.communicate(timeout=420)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    for name, proc in procs.items():
        assert proc.returncode == 0, (name, outputs[name][-3000:])

    client = mlflow.MlflowClient(mlflow_server)
    exps = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(exps, max_results=1000)
    sweeps = [r for r in runs if r.data.tags.get("run_kind") == "sweep"]
    trials = [r for r in runs if r.data.tags.get("run_kind") == "trial"]
    logs = "\n".join(f"--- {k}\n{v[-4000:]}" for k, v in outputs.items())
    assert len(sweeps) == 1 and sweeps[0].info.status == "FINISHED", logs
    assert sweeps[0].data.tags["distributed"] == "chief"
    assert sweeps[0].data.tags["trials_completed"] == "4", logs
    assert sorted(r.data.tags["trial_id"] for r in trials) == ["0", "1", "2", "3"]  # once each
    assert {r.info.status for r in trials} == {"FINISHED"}
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {sweeps[0].info.run_id}
    by_worker = {w: sum(r.data.tags["tuner_id"] == w for r in trials) for w in ("w1", "w2")}
    assert sum(by_worker.values()) == 4
    assert all(n >= 1 for n in by_worker.values()), by_worker  # both workers took trials
    # artifacts went through the server too
    some = trials[0].info.run_id
    assert "history.csv" in [f.path for f in client.list_artifacts(some)]

    chief = outputs["chief"]
    assert "serving the oracle on 127.0.0.1" in chief
    assert chief.count("finished: val_loss=") == 4 and "4 trials: 4 finished" in chief
    for w in ("w1", "w2"):
        assert f"worker {w} joined the chief" in outputs[w]
        assert "worker done" in outputs[w]
    assert not any(Path(tmp_path / w / "mlflow.db").exists() for w in roles)  # server only
