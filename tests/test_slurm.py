"""rnnbench on a real one-node Slurm cluster (tests/slurm_cluster.py, one per session):
multiruns through Hydra's submitit_slurm launcher into one MLflow store, a failed and a
cancelled job in the multirun summary, and the launcher's checks. Skipped, with the
install command, where Slurm is not installed."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import cli_env, run_cli, store_runs
from pg_server import mlflow_server, postgres  # noqa: F401  (fixtures)

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


SMOKE = ["debug=smoke", "hardware.xla=off", "diagnostics.enabled=false",
         "tracking.log_model=false", "train.verbose=0"]


def slurm_multirun(cluster, cwd, *args: str, timeout: float = 600, smoke=SMOKE,
                   tracking: tuple[str, ...] | None = None, **popen: Any):
    """``rnnbench -m hydra/launcher=submitit_slurm ...`` in ``cwd``, its store
    ``cwd/store/mlflow.db`` unless ``tracking`` overrides say otherwise; a running
    process when ``popen`` is given."""
    tracking = tracking or (f"tracking.uri=sqlite:///{cwd}/store/mlflow.db",)
    cmd = [sys.executable, "-m", "rnnbench", "-m", "hydra/launcher=submitit_slurm",
           "hydra.launcher.partition=debug", *tracking, *args, *smoke]
    (cwd / "store").mkdir(exist_ok=True)
    env = cli_env(SLURM_CONF=str(cluster.conf))
    if popen:
        return subprocess.Popen(cmd, cwd=cwd, env=env, text=True, **popen)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_a_multirun_of_four_slurm_jobs_lands_in_one_store(slurm_cluster, tmp_path):
    proc = slurm_multirun(slurm_cluster, tmp_path, "cell=rnn,lstm", "seed=0,1")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    runs = store_runs(tmp_path, f"sqlite:///{tmp_path}/store/mlflow.db")
    print("\n".join(f"{r.info.run_id} {r.info.status} cell={r.data.params.get('cell')} "
                    f"seed={r.data.params.get('seed')}" for r in runs))
    assert sorted((r.data.params["cell"], r.data.params["seed"], r.info.status) for r in runs) \
        == [("lstm", "0", "FINISHED"), ("lstm", "1", "FINISHED"), ("rnn", "0", "FINISHED"),
            ("rnn", "1", "FINISHED")]
    assert len({r.data.tags["sweep_id"] for r in runs}) == 1
    assert "4 job(s): 4 finished, 0 failed, 0 skipped" in proc.stdout
    # every job ran under slurmd, as a Slurm job of its own
    logs = sorted(tmp_path.glob("multirun/*/*/.submitit/*/*_log.out"))
    assert len(logs) == 4, logs
    # the SQLite store on a local folder: a warning with the remedy, once
    assert proc.stderr.count("warning: the Slurm jobs log to the SQLite store") == 1
    assert "tracking=server" in proc.stderr and "Traceback" not in proc.stderr
    # no sacct warning per poll (with accounting, submitit reads sacct; without, squeue)
    assert "Bypassing sacct error" not in out
    print(slurm_cluster.run("squeue", "--states=all"))
    if slurm_cluster.accounting:  # Slurm's own record of the four jobs
        jobs = [line.split("|") for line in slurm_cluster.sacct(  # waits for the record
            "--name=rnnbench", "-o", "JobID,JobName,State,ExitCode,Elapsed").split()]
        print(slurm_cluster.run("sacct", "-X", "--name=rnnbench",
                                "-o", "JobID,JobName,State,ExitCode,Elapsed"))
        assert len(jobs) == 4 and {(j[2], j[3]) for j in jobs} == {("COMPLETED", "0:0")}, jobs


def test_a_slurm_multirun_logs_through_a_tracking_server_on_postgresql(
        slurm_cluster, mlflow_server, tmp_path):
    """The same four jobs, logging through ``mlflow server`` on PostgreSQL (the set-up of
    docker/compose.yaml, tests/pg_server.py): every run lands in the database, its model
    in the server's artifact store, and no SQLite warning is printed."""
    import mlflow
    import psycopg2

    url = mlflow_server["url"]
    proc = slurm_multirun(slurm_cluster, tmp_path, "cell=rnn,lstm", "seed=0,1",
                          tracking=("tracking=server", f"tracking.uri={url}",
                                    "tracking.experiment=slurm-pg"),
                          smoke=[s for s in SMOKE if s != "tracking.log_model=false"])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "4 job(s): 4 finished, 0 failed, 0 skipped" in proc.stdout
    assert "SQLite" not in proc.stderr and "Traceback" not in proc.stderr
    client = mlflow.MlflowClient(tracking_uri=url)
    runs = client.search_runs([client.get_experiment_by_name("slurm-pg").experiment_id])
    print("\n".join(f"{r.info.run_id} {r.info.status} cell={r.data.params.get('cell')} "
                    f"seed={r.data.params.get('seed')} artifacts={r.info.artifact_uri}"
                    for r in runs))
    assert sorted((r.data.params["cell"], r.data.params["seed"], r.info.status) for r in runs) \
        == [("lstm", "0", "FINISHED"), ("lstm", "1", "FINISHED"), ("rnn", "0", "FINISHED"),
            ("rnn", "1", "FINISHED")]
    assert len({r.data.tags["sweep_id"] for r in runs}) == 1
    for run in runs:
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")
        stored = list(mlflow_server["artifacts"].rglob(
            f"{run.info.run_id}/artifacts/model/model.keras"))
        assert len(stored) == 1, run.info.run_id
    conn = psycopg2.connect(host="127.0.0.1", port=mlflow_server["postgres"]["port"],
                            user="postgres", dbname="mlflow")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM runs r JOIN experiments e "
                        "ON e.experiment_id = r.experiment_id "
                        "WHERE e.name = 'slurm-pg' AND r.status = 'FINISHED'")
            assert cur.fetchone() == (4,)
    finally:
        conn.close()
    assert not list(tmp_path.rglob("mlflow.db"))
    mlflow.set_tracking_uri(None)


def test_a_failed_slurm_job_is_in_the_summary_with_exit_status_1(slurm_cluster, tmp_path):
    proc = slurm_multirun(slurm_cluster, tmp_path, "optimizer.lr=1e30", "optimizer.clipnorm=null")
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run,) = store_runs(tmp_path, f"sqlite:///{tmp_path}/store/mlflow.db")
    assert run.info.status == "FAILED"
    assert "1 job(s): 0 finished, 1 failed, 0 skipped" in proc.stdout
    line = next(x for x in proc.stdout.splitlines() if x.strip().startswith("#0"))
    print(line)
    assert f"failed   run {run.info.run_id}" in line and "non-finite loss" in line
    assert "1 job(s) of the multirun FAILED" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("slurmdbd", ["up", "down"])
def test_a_job_slurm_cancels_is_reported_cancelled(slurm_cluster, tmp_path, slurmdbd):
    """A job held back by Slurm (``--begin`` in an hour) is cancelled with scancel: the
    multirun ends, and its summary says cancelled, not that the process died. Its state
    comes from ``sacct``, or from ``squeue`` where there is no accounting or its daemon
    is down."""
    if slurmdbd == "down":
        if not slurm_cluster.accounting:
            pytest.skip("this cluster keeps no accounts: the other case covers it")
        slurm_cluster.stop_slurmdbd()
    try:
        _cancel_a_held_job(slurm_cluster, tmp_path,
                           with_sacct=slurm_cluster.accounting and slurmdbd == "up")
    finally:
        if slurmdbd == "down":
            slurm_cluster.start_slurmdbd()


def _cancel_a_held_job(slurm_cluster, tmp_path, with_sacct: bool) -> None:
    proc = slurm_multirun(slurm_cluster, tmp_path, "cell=rnn",
                          "+hydra.launcher.additional_parameters.begin=now+3600",
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        def pending():
            rows = [r.split("|") for r in slurm_cluster.run(
                "squeue", "--noheader", "-o", "%i|%T|%r").split()]
            return next((r[0] for r in rows if r[1:] == ["PENDING", "BeginTime"]), None)

        job = wait_for(pending, 180, "the held job in squeue")
        print(slurm_cluster.run("squeue"))
        slurm_cluster.run("scancel", job)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    print(slurm_cluster.run("scontrol", "show", "job", job.split("_")[0]))
    assert proc.returncode == 1, out[-3000:] + err[-3000:]
    assert "1 job(s): 0 finished, 1 failed, 0 skipped" in out
    line = next(x for x in out.splitlines() if x.strip().startswith("#0"))
    print(line)
    assert "cancelled by Slurm (scancel)" in line and f"Slurm job {job}, state CANCELLED" in line
    assert "process died" not in out and "Traceback" not in err
    if with_sacct:  # Slurm's accounting agrees
        assert slurm_cluster.sacct("-j", job, "-o", "State").startswith("CANCELLED")
        print(slurm_cluster.run("sacct", "-X", "-j", job, "-o", "JobID,State,ExitCode"))


def test_a_running_job_slurm_cancels_is_reported_cancelled_and_its_run_killed(
        slurm_cluster, tmp_path):
    """scancel while the job trains: rnnbench in the job stops on Slurm's SIGTERM and
    closes its run KILLED; the summary says cancelled by Slurm, with the run."""
    long = [*SMOKE[:-1], "train.verbose=2", "train.epochs=5000", "train.patience=10000"]
    proc = slurm_multirun(slurm_cluster, tmp_path, "cell=rnn", smoke=long,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        def training():
            logs = list(tmp_path.glob("multirun/*/*/0/rnnbench.log"))
            return logs and "Epoch 3/" in logs[0].read_text(errors="replace")

        wait_for(training, 300, "the job to train")
        (job,) = slurm_cluster.run("squeue", "--noheader", "-t", "RUNNING", "-o", "%i").split()
        slurm_cluster.run("scancel", job)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, out[-3000:] + err[-3000:]
    (run,) = store_runs(tmp_path, f"sqlite:///{tmp_path}/store/mlflow.db")
    assert run.info.status == "KILLED"
    line = next(x for x in out.splitlines() if x.strip().startswith("#0"))
    print(line)
    assert f"failed   run {run.info.run_id}" in line
    assert "cancelled by Slurm (scancel)" in line and f"Slurm job {job}, state CANCELLED" in line
    assert "process died" not in out and "Traceback" not in err


def test_the_slurm_launcher_without_sbatch_is_refused_with_the_install_hint(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    proc = run_cli(["-m", "hydra/launcher=submitit_slurm", "cell=rnn", *SMOKE], tmp_path,
                   timeout=300, env=cli_env(PATH=str(empty)))
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "sbatch, which is not on the PATH" in proc.stderr
    assert "bash .ci/install-slurm.sh" in proc.stderr and "apt-get install slurm-client" in proc.stderr
    assert "Traceback" not in proc.stderr and not list(tmp_path.glob("multirun/*/*/0"))


TINY_SPACE = """\
name: tiny
params:
  units: {key: model.units,  type: int,   low: 4,      high: 12}
  lr:    {key: optimizer.lr, type: float, low: 1.0e-3, high: 1.0e-2, sampling: log}
"""


def test_a_tuning_chief_and_two_workers_as_one_slurm_job_array(slurm_cluster, tmp_path):
    """docker/slurm-tune.sbatch: task 0 serves the oracle and writes its address to the
    shared tuner directory; tasks 1 and 2 find it there. 6 trials, each exactly once."""
    conf = tmp_path / "extra_conf" / "search_space"
    conf.mkdir(parents=True)
    (conf / "tiny.yaml").write_text(TINY_SPACE)
    store = f"sqlite:///{tmp_path}/mlflow.db"
    script = Path(__file__).resolve().parent.parent / "docker" / "slurm-tune.sbatch"
    env = cli_env(SLURM_CONF=str(slurm_cluster.conf),
                  RNNBENCH_TUNE=str(Path(sys.executable).parent / "rnnbench-tune"))
    done = subprocess.run(
        ["sbatch", "--parsable", "--array=0-2", str(script), *SMOKE, "tuner.max_epochs=2",
         f"hydra.searchpath=[file://{tmp_path / 'extra_conf'}]", "search_space=tiny",
         "tuner.max_trials=6", f"tracking.uri={store}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    array = done.stdout.strip()
    print(slurm_cluster.run("squeue"))

    def ended():
        rows = slurm_cluster.run("squeue", "--states=all", "--noheader", "-o", "%i|%T",
                                 "-j", array).split()
        states = dict(r.split("|") for r in rows)
        return states if len(states) == 3 and all(
            s not in ("PENDING", "RUNNING", "COMPLETING") for s in states.values()) else None

    states = wait_for(ended, 420, f"the array {array} to end")
    outputs = {p.name: p.read_text() for p in sorted(tmp_path.glob("slurm-tune-*.out"))}
    logs = "\n".join(f"--- {k}\n{v[-3000:]}" for k, v in outputs.items())
    print(states)
    assert set(states.values()) == {"COMPLETED"}, logs
    (address_file,) = (tmp_path / "tuning").glob(f"chief-{array}.address")
    host, port = address_file.read_text().split()
    assert f"serving the oracle on {host}" in outputs[f"slurm-tune-{array}_0.out"], logs
    runs = store_runs(tmp_path, store)
    sweeps = [r for r in runs if r.data.tags.get("run_kind") == "sweep"]
    trials = [r for r in runs if r.data.tags.get("run_kind") == "trial"]
    print("\n".join(f"{r.info.run_id} {r.data.tags['run_kind']} {r.info.status} "
                    f"trial={r.data.tags.get('trial_id')} tuner={r.data.tags.get('tuner_id')}"
                    for r in runs))
    assert len(sweeps) == 1 and sweeps[0].data.tags["trials_completed"] == "6", logs
    assert sorted(int(r.data.tags["trial_id"]) for r in trials) == list(range(6)), logs
    assert {r.info.status for r in trials} == {"FINISHED"}
    workers = {r.data.tags["tuner_id"] for r in trials}
    assert workers <= {f"slurm-{array}-1", f"slurm-{array}-2"} and len(workers) == 2, workers
    for task in (1, 2):
        assert f"joined the chief at {host}:{port}" in outputs[f"slurm-tune-{array}_{task}.out"]


def submit_tune(cluster, cwd: Path, workers: int, *overrides: str) -> str:
    """``sbatch --array=0-<workers> docker/slurm-tune.sbatch`` with the tiny space; the
    array's job id."""
    conf = cwd / "extra_conf" / "search_space"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "tiny.yaml").write_text(TINY_SPACE)
    script = Path(__file__).resolve().parent.parent / "docker" / "slurm-tune.sbatch"
    env = cli_env(SLURM_CONF=str(cluster.conf),
                  RNNBENCH_TUNE=str(Path(sys.executable).parent / "rnnbench-tune"))
    done = subprocess.run(
        ["sbatch", "--parsable", f"--array=0-{workers}", str(script),
         f"hydra.searchpath=[file://{cwd / 'extra_conf'}]", "search_space=tiny",
         f"tracking.uri=sqlite:///{cwd}/mlflow.db", *overrides],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def array_states(cluster, array: str) -> dict[str, str]:
    rows = cluster.run("squeue", "--states=all", "--noheader", "-o", "%i|%T", "-j",
                       array).split()
    return dict(r.split("|") for r in rows)


class Requeued:
    """A chief and one worker on 2 long trials (``tuner.max_epochs`` epochs, no early
    stopping), array task ``task`` requeued (``scontrol requeue``) once the worker trains
    trial 1, the array waited for to its end: what the tests below check."""

    def __init__(self, cluster, cwd: Path, task: int, epochs: int = 60) -> None:
        self.cluster, self.cwd = cluster, cwd
        long = [*SMOKE[:-1], "train.verbose=2", f"tuner.max_epochs={epochs}",
                "train.patience=1000", "tuner.max_trials=2"]
        self.array = array = submit_tune(cluster, cwd, 1, *long)
        self.chief_out = cwd / f"slurm-tune-{array}_0.out"
        self.worker_out = cwd / f"slurm-tune-{array}_1.out"
        self.address_file = cwd / "tuning" / f"chief-{array}.address"

        def training():
            out = self.worker_out
            text = out.read_text(errors="replace") if out.is_file() else ""
            return "trial 1 started" in text and f"Epoch 3/{epochs}" in text

        try:
            wait_for(training, 300, "the worker to train trial 1")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {self.logs()}") from None
        self.first_address = self.address_file.read_text().split()
        print(cluster.run("squeue", "-j", array))
        cluster.run("scontrol", "requeue", f"{array}_{task}")
        self.requeued = cluster.run("scontrol", "show", "job", f"{array}_{task}")
        print(self.requeued)

        def ended():
            states = array_states(cluster, array)
            return states if len(states) == 2 and all(
                s not in ("PENDING", "RUNNING", "COMPLETING", "REQUEUED")
                for s in states.values()) else None

        try:  # ~90 s on a quiet machine; minutes while other jobs load both cores
            self.states = wait_for(ended, 900, f"the array {array} to end")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: states {array_states(cluster, array)}\n"
                                 f"{self.logs()}") from None
        print(cluster.run("squeue", "--states=all", "-j", array))
        self.runs = store_runs(cwd, f"sqlite:///{cwd}/mlflow.db")
        print("\n".join(f"{r.info.run_id} {r.data.tags['run_kind']} {r.info.status} "
                        f"trial={r.data.tags.get('trial_id')} "
                        f"tuner={r.data.tags.get('tuner_id')} "
                        f"parent={r.data.tags.get('mlflow.parentRunId')}"
                        for r in sorted(self.runs, key=lambda r: r.info.start_time)))
        (self.sweep,) = [r for r in self.runs if r.data.tags.get("run_kind") == "sweep"]
        self.trials = [r for r in self.runs if r.data.tags.get("run_kind") == "trial"]
        self.task = task

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}"
                         for p in sorted(self.cwd.glob("slurm-tune-*.out")))

    def check_slurm_record(self) -> None:
        """Both tasks COMPLETED in the end; with accounting, ``sacct -D`` shows the
        requeued task's first life REQUEUED, then COMPLETED."""
        assert set(self.states.values()) == {"COMPLETED"}, (self.states, self.logs())
        assert "Restarts=1" in self.requeued
        if self.cluster.accounting:
            lives = [line.split("|") for line in self.cluster.sacct(
                "-D", "-j", f"{self.array}_{self.task}", "-o", "JobID,State").split()]
            print(self.cluster.run("sacct", "-D", "-X", "-j", self.array,
                                   "-o", "JobID,JobName,State,ExitCode,Start,End"))
            assert [state for _, state in lives] == ["REQUEUED", "COMPLETED"], lives


def test_a_requeued_worker_loses_and_repeats_no_trial(slurm_cluster, tmp_path):
    """``scontrol requeue`` of the only worker while it trains trial 1 (trial_id 0):
    Slurm's SIGTERM closes that trial's run KILLED; the requeued task joins the chief
    again under the same worker name, gets the same trial back and runs it again as a new
    run. The sweep ends FINISHED with every trial FINISHED exactly once and max_trials
    honoured."""
    r = Requeued(slurm_cluster, tmp_path, task=1, epochs=80)
    r.check_slurm_record()
    assert "Requeue=1" in r.requeued
    trials, logs = r.trials, r.logs()
    assert r.sweep.info.status == "FINISHED", logs
    assert r.sweep.data.tags["trials_completed"] == "2", logs
    finished = [int(t.data.tags["trial_id"]) for t in trials if t.info.status == "FINISHED"]
    assert sorted(finished) == [0, 1], logs
    killed = [t for t in trials if t.info.status == "KILLED"]
    assert [int(t.data.tags["trial_id"]) for t in killed] == [0], logs
    assert len(trials) == 3, logs  # tuner.max_trials=2, and the killed run
    again = next(t for t in trials if t.info.status == "FINISHED"
                 and t.data.tags["trial_id"] == killed[0].data.tags["trial_id"])
    assert again.info.run_id != killed[0].info.run_id
    assert again.info.start_time > killed[0].info.end_time
    # both lives of the worker wrote to one log (--open-mode=append), under one name
    assert r.worker_out.read_text().count("joined the chief at") == 2, logs
    assert {t.data.tags["tuner_id"] for t in trials} == {f"slurm-{r.array}-1"}


def test_a_requeued_chief_loses_and_repeats_no_trial(slurm_cluster, tmp_path):
    """``scontrol requeue`` of the chief (array task 0) while its worker trains trial 1:
    the chief's sweep run ends KILLED; the requeued chief resumes the sweep on a new port
    and rewrites the address file; the worker trains on, finds the old chief gone at the
    end of its trial, reads the file again and ends the trial on the new chief, which
    kept it as the worker's. Every trial runs exactly once, all in one sweep run."""
    r = Requeued(slurm_cluster, tmp_path, task=0, epochs=60)
    r.check_slurm_record()
    logs, first = r.logs(), r.first_address
    chief_log, worker_log = r.chief_out.read_text(), r.worker_out.read_text()
    assert chief_log.count("serving the oracle on") == 2, logs
    second = r.address_file.read_text().split()
    assert second != first and f"serving the oracle on {second[0]}:{second[1]}" in chief_log
    assert f"lost the chief at {first[0]}:{first[1]}" in worker_log, logs
    assert worker_log.count("joined the chief at") == 1  # one life: the worker never left
    assert r.sweep.info.status == "FINISHED", logs
    assert r.sweep.data.tags["trials_completed"] == "2", logs
    assert sorted(int(t.data.tags["trial_id"]) for t in r.trials) == [0, 1], logs
    assert {t.info.status for t in r.trials} == {"FINISHED"}, logs
    assert {t.data.tags["mlflow.parentRunId"] for t in r.trials} == {r.sweep.info.run_id}
