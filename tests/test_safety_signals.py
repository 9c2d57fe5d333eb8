"""Stop requests and where they land: a closed terminal (SIGHUP), a SIGTERM swallowed in
a garbage-collection callback after the last epoch, Ctrl-C while the MLflow run is being
created, a multirun stopped between its jobs, and Hydra output folders that cannot be
written. Each test runs the real CLI in a subprocess and sends it a real signal."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import cli_env, store_runs

QUICK = ["debug=smoke", "diagnostics.enabled=false", "tracking.log_model=false",
         "hardware.xla=off", "train.verbose=2"]
LONG = [*QUICK, "train.epochs=400", "train.patience=400"]

# Run the CLI after installing a test's own patch (a pause where a signal must land).
LAUNCH = "import sys\nsys.argv[0] = 'rnnbench'\n{patch}\nfrom rnnbench.cli import main\nmain()\n"


class Cli:
    """``rnnbench args`` in ``cwd``; its stdout and stderr read together, line by line."""

    def __init__(self, cwd: Path, args: list[str], patch: str | None = None) -> None:
        cmd = ([sys.executable, "-c", LAUNCH.format(patch=patch)] if patch
               else [sys.executable, "-m", "rnnbench"]) + args
        self.proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=cli_env())
        self.lines: list[str] = []

    def wait_for(self, text: str, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        for line in self.proc.stdout:
            self.lines.append(line)
            if text in line:
                return
            if time.monotonic() > deadline:
                break
        self.proc.kill()
        raise AssertionError(f"never printed {text!r}:\n" + "".join(self.lines)[-4000:])

    def stop(self, sig: int) -> tuple[int, str]:
        self.proc.send_signal(sig)
        try:
            rest, _ = self.proc.communicate(timeout=120)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        return self.proc.returncode, "".join(self.lines) + rest


@pytest.mark.slow
def test_sighup_mid_epoch_ends_the_run_killed_with_129(tmp_path):
    """A closed terminal sends SIGHUP: the run is closed KILLED with the reason, the
    command says so and exits 129 (128 + 1), as for SIGTERM (143) and Ctrl-C (130)."""
    cli = Cli(tmp_path, LONG)
    cli.wait_for("Epoch 3/400")
    code, out = cli.stop(signal.SIGHUP)
    assert code == 129, out[-3000:]
    assert "interrupted by SIGHUP" in out and "closed as KILLED" in out
    assert "Traceback" not in out
    runs = store_runs(tmp_path)
    assert [r.info.status for r in runs] == ["KILLED"]
    assert "SIGHUP" in runs[0].data.tags["failure_reason"]


# After fit() returns, a garbage-collection callback waits there for the signal: the
# KeyboardInterrupt the handler raises inside it is swallowed by Python ("Exception
# ignored"), as it was 3 times of 3 for a SIGTERM sent 2-3 s after the last epoch.
IN_GC_AFTER_FIT = """
import gc, time
import keras
_fit = keras.Model.fit
def _waiting(phase, info):
    gc.callbacks.remove(_waiting)
    print('test: in a gc callback after the last epoch', flush=True)
    end = time.monotonic() + 60
    while time.monotonic() < end:
        time.sleep(0.05)
def _fit_then_gc(self, *args, **kwargs):
    history = _fit(self, *args, **kwargs)
    gc.callbacks.append(_waiting)
    gc.collect()
    return history
keras.Model.fit = _fit_then_gc
"""


@pytest.mark.slow
def test_sigterm_swallowed_after_the_last_epoch_still_stops_the_run(tmp_path):
    cli = Cli(tmp_path, QUICK, patch=IN_GC_AFTER_FIT)
    cli.wait_for("test: in a gc callback after the last epoch")
    code, out = cli.stop(signal.SIGTERM)
    assert code == 143, out[-3000:]  # was 0: the run went on and FINISHED
    assert "interrupted by SIGTERM" in out and "closed as KILLED" in out
    assert "Exception ignored" not in out and "Traceback" not in out
    runs = store_runs(tmp_path)
    assert [r.info.status for r in runs] == ["KILLED"]
    assert "SIGTERM" in runs[0].data.tags["failure_reason"]
    assert "test_mse" not in runs[0].data.metrics  # stopped before the test split


# The MLflow run exists and the process pauses right there, before the code that closes
# it on a stop request: Ctrl-C then used to leave the run RUNNING and say that nothing
# was recorded.
PAUSE_AFTER_CREATE = """
import time
from rnnbench import interrupt
from rnnbench.tracking import store
_create = store._create_run
def _create_then_pause(*args, **kwargs):
    run_id = _create(*args, **kwargs)
    print('test: run created', flush=True)
    end = time.monotonic() + 60
    while time.monotonic() < end and interrupt.requested() is None:
        time.sleep(0.05)
    return run_id
store._create_run = _create_then_pause
"""


@pytest.mark.slow
def test_ctrl_c_while_the_run_is_created_leaves_it_killed(tmp_path):
    cli = Cli(tmp_path, QUICK, patch=PAUSE_AFTER_CREATE)
    cli.wait_for("test: run created")
    code, out = cli.stop(signal.SIGINT)
    assert code == 130, out[-3000:]
    runs = store_runs(tmp_path)
    assert [r.info.status for r in runs] == ["KILLED"], out[-3000:]
    assert f"MLflow run(s) {runs[0].info.run_id} closed as KILLED" in out
    assert "nothing was recorded" not in out and "Traceback" not in out


@pytest.mark.slow
def test_a_multirun_stopped_by_sigterm_says_which_job_and_what_never_started(tmp_path):
    """Job #1 of 3 is training when SIGTERM comes: #0 FINISHED, #1 KILLED, #2 never
    starts; the summary says so (not 'process died'), and the command exits 143."""
    cli = Cli(tmp_path, ["-m", "train.epochs=1,400,1", "train.patience=400", *QUICK])
    cli.wait_for("Epoch 3/400")
    code, out = cli.stop(signal.SIGTERM)
    assert code == 143, out[-3000:]
    summary = out[out.index("=" * 72):]
    assert "stopped by SIGTERM during job #1" in summary
    assert "1 of 3 job(s) done" in summary and "1 not started" in summary
    assert "#2 not started  train.epochs=1" in summary
    assert "process died" not in out and "Traceback" not in out
    runs = {r.info.status: r for r in store_runs(tmp_path)}
    assert sorted(runs) == ["FINISHED", "KILLED"]
    assert f"#1 stopped run {runs['KILLED'].info.run_id}" in " ".join(summary.split())


@pytest.fixture
def read_only(tmp_path):
    """A folder on a real read-only file system (as root, chmod stops no write)."""
    where = tmp_path / "ro"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        why = done.stderr.strip() or "mount failed"
        pytest.skip(f"cannot mount a read-only tmpfs here ({why}); run the tests as root "
                    "to check read-only folders")
    yield where
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _refused(proc: subprocess.CompletedProcess, folder: Path, key: str) -> None:
    err = proc.stderr
    assert proc.returncode == 2, err[-3000:]
    assert f"cannot write the output folder {folder}" in err and f"{key}=" in err
    assert "Read-only file system" in err and "Traceback" not in err


def test_a_read_only_hydra_run_dir_is_refused_clearly(tmp_path, read_only):
    for args, key in ((["hydra.run.dir=" + str(read_only / "out")], "hydra.run.dir"),
                      (["-m", "seed=0,1", "hydra.sweep.dir=" + str(read_only / "m")],
                       "hydra.sweep.dir")):
        proc = subprocess.run([sys.executable, "-m", "rnnbench", *args, *QUICK], cwd=tmp_path,
                              capture_output=True, text=True, env=cli_env(), timeout=120)
        _refused(proc, read_only / args[-1].rsplit("/", 1)[1], key)
    assert not (tmp_path / "mlflow.db").exists()


def test_a_read_only_working_folder_is_refused_clearly(read_only):
    """Hydra's default run folder is ``outputs/`` under the working folder."""
    proc = subprocess.run([sys.executable, "-m", "rnnbench", *QUICK], cwd=read_only,
                          capture_output=True, text=True, env=cli_env(), timeout=120)
    _refused(proc, read_only / "outputs", "hydra.run.dir")
    assert list(read_only.iterdir()) == []
