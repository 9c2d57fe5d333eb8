"""A sweep killed with SIGKILL in the middle of a trial, then resumed by running the same
command again: the finished trial is neither re-run nor logged twice, the interrupted
one runs again (same hyperparameters) and its orphaned MLflow run is closed as KILLED,
and the sweep ends with exactly max_trials trials."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import mlflow
import pytest

from helpers import FAST, cli_env, compose_tune, oracle_sequence, run_cli

pytestmark = pytest.mark.slow

TINY = """\
name: tiny
params:
  units: {key: model.units,  type: int,   low: 4,      high: 12}
  lr:    {key: optimizer.lr, type: float, low: 1.0e-3, high: 1.0e-2, sampling: log}
"""


def runs_of(client: mlflow.MlflowClient) -> list:
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps, max_results=1000) if exps else []


def wait_for_running_trial(proc: subprocess.Popen, client: mlflow.MlflowClient, trial_id: str,
                           timeout: float = 240.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the sweep ended before trial {trial_id} ran: "
                                 f"{proc.stdout.read()[-3000:]}")
        try:
            for run in runs_of(client):
                tags = run.data.tags
                # training, not just opened: its hyperparameters are logged (a kill in
                # between, under load, left a run without them to compare with)
                if (tags.get("trial_id") == trial_id and run.info.status == "RUNNING"
                        and any(k.startswith("hp/") for k in run.data.params)):
                    return run
        except Exception:  # the store is being created or written by the sweep
            pass
        time.sleep(0.2)
    raise AssertionError(f"trial {trial_id} never started")


def test_kill_mid_trial_then_resume_gives_exact_counts(tmp_path):
    conf = tmp_path / "extra_conf" / "search_space"
    conf.mkdir(parents=True)
    (conf / "tiny.yaml").write_text(TINY)
    args = [*FAST, f"hydra.searchpath=[file://{tmp_path / 'extra_conf'}]", "search_space=tiny",
            "tuner.max_trials=3", "train.steps_per_epoch=10", "seed=5"]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)

    cmd = [sys.executable, "-c", "from rnnbench.cli import tune_main; tune_main()", *args]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        victim = wait_for_running_trial(proc, client, "1")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    first_out = proc.stdout.read()
    assert proc.returncode == -signal.SIGKILL

    before = {r.info.run_id: r for r in runs_of(client)}
    assert before[victim.info.run_id].info.status == "RUNNING"  # left behind by the kill
    finished_before = [r for r in before.values() if r.data.tags.get("trial_id") == "0"]
    assert [r.info.status for r in finished_before] == ["FINISHED"]

    # resumed with a key that does not change the search: the same sweep, a new command
    resume = [*args, "tuner.max_consecutive_failed_trials=4"]
    proc2 = run_cli(resume, tmp_path, module="tune_main", timeout=400)
    assert proc2.returncode == 0, proc2.stdout[-3000:] + proc2.stderr[-3000:]
    assert "resuming sweep" in proc2.stdout and "1 trial(s) already done" in proc2.stdout
    assert "trial 1 of 3 started" not in proc2.stdout  # the finished trial did not run again
    assert "trial 2 of 3 started" in proc2.stdout and "trial 3 of 3 started" in proc2.stdout

    runs = runs_of(client)
    sweeps = [r for r in runs if r.data.tags.get("run_kind") == "sweep"]
    trials = [r for r in runs if r.data.tags.get("run_kind") == "trial"]
    assert len(sweeps) == 1 and sweeps[0].info.status == "FINISHED"
    # what reproduces the sweep now is the command that resumed it
    assert sweeps[0].data.tags["command"].endswith("tuner.max_consecutive_failed_trials=4")
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {sweeps[0].info.run_id}
    by_trial: dict[str, list] = {}
    for r in trials:
        by_trial.setdefault(r.data.tags["trial_id"], []).append(r)
    assert sorted(by_trial) == ["0", "1", "2"]  # exactly max_trials
    assert [r.info.run_id for r in by_trial["0"]] == [finished_before[0].info.run_id]
    assert sorted(r.info.status for r in by_trial["1"]) == ["FINISHED", "KILLED"]
    assert [r.info.status for r in by_trial["2"]] == ["FINISHED"]
    killed = next(r for r in by_trial["1"] if r.info.status == "KILLED")
    rerun = next(r for r in by_trial["1"] if r.info.status == "FINISHED")
    assert killed.info.run_id == victim.info.run_id
    assert killed.data.tags["failure_reason"].startswith("orphaned")
    assert ({k: v for k, v in rerun.data.params.items() if k.startswith("hp/")}
            == {k: v for k, v in killed.data.params.items() if k.startswith("hp/")})
    assert sum(r.info.status == "FINISHED" for r in trials) == 3

    # the oracle's own record agrees, and its trials are the seeded sequence
    project = tmp_path / "tuning" / sweeps[0].data.tags["sweep_id"]
    states = {p.parent.name: json.loads(p.read_text())
              for p in project.glob("trial_*/trial.json")}
    assert sorted(states) == ["trial_0", "trial_1", "trial_2"]
    assert all(s["status"] == "COMPLETED" for s in states.values())
    expected = oracle_sequence(compose_tune(args), tmp_path / "preview", 3)
    assert [states[f"trial_{i}"]["hyperparameters"]["values"] for i in range(3)] == expected
    assert "trial 2 of 3 started" in first_out

    # tuner.overwrite=true starts afresh, deliberately: a new search and a new sweep run
    proc3 = run_cli([*args, "tuner.overwrite=true", "tuner.max_trials=1"], tmp_path,
                    module="tune_main", timeout=300)
    assert proc3.returncode == 0, proc3.stdout[-3000:] + proc3.stderr[-3000:]
    assert "starting sweep" in proc3.stdout
    runs = runs_of(client)
    sweeps2 = [r for r in runs if r.data.tags.get("run_kind") == "sweep"]
    assert len(sweeps2) == 2 and {r.info.status for r in sweeps2} == {"FINISHED"}
    new = next(r for r in sweeps2 if r.info.run_id != sweeps[0].info.run_id)
    new_trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == new.info.run_id]
    assert [(r.data.tags["trial_id"], r.info.status) for r in new_trials] == [("0", "FINISHED")]
    assert sorted(p.parent.name for p in project.glob("trial_*/trial.json")) == ["trial_0"]


def test_a_sweep_near_the_kernels_map_limit_stops_cleanly_and_resumes(tmp_path, monkeypatch):
    """XLA's CPU code is never unmapped, so a long sweep process reaches vm.max_map_count
    and TensorFlow segfaults (seen after 50-80 Greff trials). Here the kernel's count and
    limit are the inputs that cannot be provoked in a test: each run "costs" 3,000 maps
    against a limit of 15,000, so the second trial is refused before it starts. The sweep
    stops with the remedy, its finished trial kept; the same sweep then resumes and ends
    with exactly max_trials trials."""
    from rnnbench.errors import HardwareError
    from rnnbench.hardware import maps
    from rnnbench.tuning.app import run_sweep

    conf = tmp_path / "extra_conf" / "search_space"
    conf.mkdir(parents=True)
    (conf / "tiny.yaml").write_text(TINY)
    args = [*FAST, f"hydra.searchpath=[file://{tmp_path / 'extra_conf'}]", "search_space=tiny",
            "tuner.max_trials=3", "train.steps_per_epoch=10", "seed=5",
            f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
            f"tuner.directory={tmp_path / 'tuning'}"]
    calls = iter(range(10_000, 100_000, 3_000))
    monkeypatch.setattr(maps, "map_count", lambda: next(calls))
    monkeypatch.setattr(maps, "map_limit", lambda: 15_000)
    maps.reset()
    with pytest.raises(HardwareError) as info:
        run_sweep(compose_tune(args), args)
    message = str(info.value)
    assert "13,000 memory mappings of the kernel's limit of 15,000" in message
    assert "up to 3,000" in message
    assert "Run the same command again" in message
    assert "sysctl -w vm.max_map_count=1048576" in message and "hardware.xla=off" in message

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = runs_of(client)
    (sweep,) = [r for r in runs if r.data.tags.get("run_kind") == "sweep"]
    trials = [r for r in runs if r.data.tags.get("run_kind") == "trial"]
    assert [(r.data.tags["trial_id"], r.info.status) for r in trials] == [("0", "FINISHED")]
    assert sweep.info.status == "FAILED"
    assert "vm.max_map_count" in sweep.data.tags["failure_reason"]

    monkeypatch.undo()
    maps.reset()
    result = run_sweep(compose_tune(args), args)
    assert [t["status"] for t in result.trials] == ["COMPLETED"] * 3
    runs = runs_of(client)
    sweeps = [r for r in runs if r.data.tags.get("run_kind") == "sweep"]
    trials = [r for r in runs if r.data.tags.get("run_kind") == "trial"]
    assert [r.info.run_id for r in sweeps] == [sweep.info.run_id]  # the same sweep, reopened
    assert sweeps[0].info.status == "FINISHED"
    assert sorted((r.data.tags["trial_id"], r.info.status) for r in trials) == [
        ("0", "FINISHED"), ("1", "FINISHED"), ("2", "FINISHED")]  # none run twice
