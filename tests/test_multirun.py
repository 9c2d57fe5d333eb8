"""Hydra multirun ablations: parallel jobs (joblib launcher) writing to one SQLite store
lose nothing, every job carries the multirun's sweep tags, and re-running the multirun
(which Hydra gives a new sweep folder) skips the jobs that already FINISHED."""

from __future__ import annotations

import csv
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow
import pytest

from helpers import cli_env, run_cli, store_runs
from rnnbench.report.cli import main as report_main

pytestmark = pytest.mark.slow

FAST = ["debug=smoke", "hardware.xla=off", "diagnostics.enabled=false",
        "tracking.log_model=false", "train.verbose=0"]


def test_parallel_multirun_on_sqlite_then_rerun_skips_finished_jobs(tmp_path):
    joblib = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    first = run_cli([*joblib, "cell=rnn,gru", "seed=0", *FAST], tmp_path, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    runs = store_runs(tmp_path)
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    assert sorted(r.data.tags["cell"] for r in runs) == ["gru", "rnn"]
    for key in ("loss", "val_loss", "test_mse"):  # nothing lost by the parallel writers
        assert all(key in r.data.metrics for r in runs), key
    sweep_ids = {r.data.tags["sweep_id"] for r in runs}
    assert len(sweep_ids) == 1 and Path(sweep_ids.pop()).is_absolute()
    names = {r.data.tags["sweep_name"] for r in runs}
    assert len(names) == 1 and "(cell, debug, diagnostics.enabled" in names.pop()
    assert sorted(r.data.tags["sweep_job"] for r in runs) == ["0", "1"]

    # the same multirun plus a new seed (Hydra gives it a new sweep folder; the default
    # launcher this time, one process): the two FINISHED jobs are skipped, the new ones run
    again = run_cli(["-m", "cell=rnn,gru", "seed=0,1", *FAST], tmp_path, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("skipped: this exact config already FINISHED") == 2
    runs2 = store_runs(tmp_path)
    assert len(runs2) == 4 and {r.info.status for r in runs2} == {"FINISHED"}
    new = [r for r in runs2 if r.info.run_id not in {x.info.run_id for x in runs}]
    assert sorted((r.data.tags["cell"], r.data.tags["seed"]) for r in new) == [
        ("gru", "1"), ("rnn", "1")]
    assert len({r.data.tags["sweep_id"] for r in runs2}) == 2
    assert "2 job(s): 2 finished, 0 failed, 0 skipped" in first.stdout
    assert "4 job(s): 2 finished, 0 failed, 2 skipped" in again.stdout

    # the second multirun's report, asked for as Hydra prints the folder: the two runs it
    # reused count in it (n=2 per cell), and the first multirun's report keeps its own two
    second = Path(new[0].data.tags["sweep_id"])
    for sweep, expect in ((second, runs2), (Path(runs[0].data.tags["sweep_id"]), runs)):
        out = tmp_path / "report" / sweep.name
        rel = str(sweep.relative_to(tmp_path))  # multirun/<date>/<time>
        assert report_main(["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                            "--sweep", rel, "--out", str(out)]) == 0
        with (out / "tables" / "runs.csv").open() as fh:
            listed = {row["run_id"] for row in csv.DictReader(fh)}
        assert listed == {r.info.run_id for r in expect}, rel
        with (out / "tables" / "co2-results.csv").open() as fh:
            n = {row["cell"]: row["n"] for row in csv.DictReader(fh)}
        assert n == ({"gru": "2", "rnn": "2"} if sweep == second else {"gru": "1", "rnn": "1"})
    reused = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(
        runs[0].info.run_id).data.tags["sweep_ids"]
    assert reused == f";{runs[0].data.tags['sweep_id']};{second};"


WRITER = textwrap.dedent("""
    import sys
    from rnnbench import tracking
    uri, worker, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    tracking.configure(uri)
    for i in range(n):
        with tracking.start_run("stress", f"w{worker}-{i}", {"worker": worker, "i": i}) as run:
            run.log_params({f"p{k}": k for k in range(30)})
            run.log_dataset("co2", "statsmodels.datasets.co2", "0123456789abcdef", "train",
                            {"license": "public domain"})
            for step in range(5):
                run.log_metrics({"loss": 1.0 / (step + 1), "val_loss": 2.0 / (step + 1)},
                                step=step)
            run.set_tags({"done": "yes"})
""")


def test_many_processes_on_one_fresh_sqlite_store_lose_nothing(tmp_path):
    """Three processes create runs at once on a store that does not exist yet (its tables
    are created by whichever comes first) and log params, the same dataset (MLflow adds
    it to the experiment once: the first writers race), metrics and tags."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, uri, str(w), "6"], cwd=tmp_path,
                              env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for w in range(3)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("stress")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    assert len(runs) == 18
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert len({(r.data.tags["worker"], r.data.tags["i"]) for r in runs}) == 18
    for r in runs:
        assert len(r.data.params) == 30 and r.data.tags["done"] == "yes"
        assert [d.dataset.name for d in r.inputs.dataset_inputs] == ["co2"]
        assert len(client.get_metric_history(r.info.run_id, "loss")) == 5


RACE = textwrap.dedent("""
    import sys
    import sqlalchemy.orm
    from rnnbench import tracking
    uri = sys.argv[1]
    tracking.configure(uri)
    with tracking.start_run("race", "first", {}) as run:
        run.log_dataset("co2", "statsmodels.datasets.co2", "0123456789abcdef", "train", {})
    # A second process that looked the dataset up just before the first one inserted it:
    # its lookup (MLflow's own query) comes back empty once, so MLflow inserts the dataset
    # again and the store refuses the duplicate.
    real_all, stale = sqlalchemy.orm.Query.all, {"left": 0}
    def all_(self):
        if stale["left"] and any(getattr(d.get("entity"), "__name__", "") == "SqlDataset"
                                 for d in self.column_descriptions):
            stale["left"] -= 1
            return []
        return real_all(self)
    sqlalchemy.orm.Query.all = all_
    with tracking.start_run("race", "second", {}) as run:
        stale["left"] = 1  # armed for log_dataset's lookup only
        run.log_dataset("co2", "statsmodels.datasets.co2", "0123456789abcdef", "train", {})
    print("stale lookups left:", stale["left"])
""")


def test_two_processes_adding_the_same_dataset_at_once_do_not_fail(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = subprocess.run([sys.executable, "-c", RACE, uri], cwd=tmp_path, env=cli_env(),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "stale lookups left: 0" in out.stdout  # the race really happened
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("race").experiment_id])
    assert {r.info.status for r in runs} == {"FINISHED"} and len(runs) == 2
    assert all([d.dataset.name for d in r.inputs.dataset_inputs] == ["co2"] for r in runs)


def test_a_multirun_folder_held_by_a_live_multirun_is_refused_then_taken_over(tmp_path):
    """Two multiruns started in the same second from one folder get the same default
    multirun/<date>/<time> (seen: two study lanes mixed their job folders and summaries).
    The folder's claim names its process: while that process lives, a second multirun
    into the folder is refused before any job; once it is gone, the folder is taken over,
    and the claim is released when the multirun ends."""
    import socket

    folder = tmp_path / "multirun" / "same-second"
    folder.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (folder / ".rnnbench-multirun").write_text(f"{holder.pid} {socket.gethostname()}\n")
        args = ["-m", "cell=rnn", "seed=0,1", *FAST, f"hydra.sweep.dir={folder}"]
        refused = run_cli(args, tmp_path, timeout=300)
        assert refused.returncode == 2, refused.stderr[-3000:]
        err = refused.stderr + refused.stdout
        assert f"{folder} is the folder of another multirun, still running (process {holder.pid})" in err
        assert "hydra.sweep.dir=multirun/<name>" in err and "Traceback" not in err
        assert store_runs(tmp_path) == []
        assert not list(folder.glob("*/.hydra"))  # no job started
    finally:
        holder.kill()
        holder.wait()
    ran = run_cli(args, tmp_path, timeout=600)
    assert ran.returncode == 0, ran.stderr[-3000:]
    runs = store_runs(tmp_path)
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    assert not (folder / ".rnnbench-multirun").exists()  # released at the end


# the kernel's map count and limit, the inputs a test cannot provoke: each run "costs"
# 3,000 mappings against a limit of 15,000, so the second job is refused before it starts
NEAR_MAP_LIMIT = """
import sys
sys.argv[0] = 'rnnbench'
from rnnbench.hardware import maps
counts = iter(range(10_000, 10_000_000, 3_000))
maps.map_count = lambda: next(counts)
maps.map_limit = lambda: 15_000
from rnnbench.cli import main
main()
"""


def test_a_multirun_near_the_map_limit_stops_there_and_the_same_command_goes_on(tmp_path):
    """Once this process is too near vm.max_map_count for another run, no later job of
    its multirun could start either: the multirun stops at the refused job (exit 2, the
    remedy printed once, the jobs not started listed) instead of refusing every job in
    turn, and the same command then runs the rest in a fresh process."""
    args = ["-m", "cell=rnn", "seed=0,1,2", *FAST]
    first = subprocess.run([sys.executable, "-c", NEAR_MAP_LIMIT, *args], cwd=tmp_path,
                           capture_output=True, text=True, timeout=600, env=cli_env())
    out = first.stdout + first.stderr
    assert first.returncode == 2, out[-3000:]
    assert out.count("Run the same command again") == 2, out[-3000:]  # error + summary
    assert "stopped by the kernel's memory-map limit (vm.max_map_count) between jobs" in out
    assert "1 of 3 job(s) done (1 finished, 0 skipped), 0 stopped, 1 failed, 1 not started" \
        in out, out[-3000:]
    assert "#2 not started  cell=rnn seed=2" in out, out[-3000:]
    assert "Traceback" not in out
    runs = store_runs(tmp_path)
    assert [(r.data.tags["seed"], r.info.status) for r in runs] == [("0", "FINISHED")]

    again = run_cli(args, tmp_path, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "3 job(s): 2 finished, 0 failed, 1 skipped" in again.stdout, again.stdout[-3000:]
    runs = store_runs(tmp_path)
    assert sorted((r.data.tags["seed"], r.info.status) for r in runs) == [
        ("0", "FINISHED"), ("1", "FINISHED"), ("2", "FINISHED")]
