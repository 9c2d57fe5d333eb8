"""Safety of rnnbench-tune's search state: paths from config never leave their root,
overwrite deletes only the sweep's own folder, one process per sweep, a resume refuses
an edited search space, a damaged state file or a full or read-only disk gives a clear
message (and no empty state file), and the best trial's printed command reproduces it.

Sweeps run in this process through ``run_sweep`` where the point is the state on disk,
and as the real CLI where it is about a process or the console."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import FAST, cli_env, compose_tune, fill_disk, run_cli, store_runs
from rnnbench.errors import ConfigError, DataError

ONE = [*FAST, "tuner.max_trials=1", "tuner.max_epochs=1", "train.steps_per_epoch=2"]


def store(tmp_path: Path) -> list[str]:
    return [f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
            f"tuner.directory={tmp_path / 'tuning'}"]


def sweeps(tmp_path: Path) -> tuple[list, list]:
    runs = store_runs(tmp_path)
    return ([r for r in runs if r.data.tags.get("run_kind") == "sweep"],
            [r for r in runs if r.data.tags.get("run_kind") == "trial"])


def tune(overrides: list[str]):
    from rnnbench.tuning.app import run_sweep

    return run_sweep(compose_tune(overrides), overrides)


# ---- paths from config ----------------------------------------------------------------
@pytest.mark.parametrize("project", ["..", "."])
def test_dot_projects_with_overwrite_are_refused_and_delete_nothing(tmp_path, project):
    """Issue 29.1/29.2: tuner.project=.. made keras-tuner delete the working folder
    (mlflow.db, outputs/); tuner.project=. deleted every sweep under tuning/."""
    work = tmp_path / "work"  # the folder the command runs in
    (work / "outputs").mkdir(parents=True)
    (work / "outputs" / "keep.txt").write_text("x")
    (work / "notes.txt").write_text("not to be deleted")
    other = work / "tuning" / "another-sweep"
    other.mkdir(parents=True)
    (other / "oracle.json").write_text("{}")
    proc = run_cli([*ONE, f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
                    f"tuner.project={project}", "tuner.overwrite=true"], work,
                   module="tune_main", timeout=300)
    out = proc.stdout + proc.stderr
    assert (work / "notes.txt").read_text() == "not to be deleted"
    assert (work / "outputs" / "keep.txt").is_file()
    assert (other / "oracle.json").is_file()
    assert proc.returncode == 2, out
    assert "tuner.project" in out and "plain name" in out and "Traceback" not in out


def test_inside_refuses_escapes_and_symlinks(tmp_path):
    from rnnbench.paths import inside

    root = tmp_path / "root"
    root.mkdir()
    assert inside(root, "a.b-c", "k", "fix") == root.resolve() / "a.b-c"
    for bad in (".", "..", "", "/etc", "a/../..", "a/b"):
        with pytest.raises(ConfigError, match="k="):
            inside(root, bad, "k", "fix")
    (tmp_path / "elsewhere").mkdir()
    (root / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="outside"):
        inside(root, "link", "k", "fix")


@pytest.mark.slow
def test_symlinked_project_is_refused_before_anything_is_deleted(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "data.csv").write_text("1,2")
    (tmp_path / "tuning").mkdir()
    (tmp_path / "tuning" / "p").symlink_to(precious)
    with pytest.raises(ConfigError, match="tuner.project='p'.*outside"):
        tune([*ONE, *store(tmp_path), "tuner.project=p", "tuner.overwrite=true"])
    assert (precious / "data.csv").read_text() == "1,2"


@pytest.mark.slow
def test_overwrite_leaves_a_folder_rnnbench_did_not_make(tmp_path):
    mine = tmp_path / "tuning" / "p"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("my notes")
    with pytest.raises(ConfigError, match="not a folder rnnbench made"):
        tune([*ONE, *store(tmp_path), "tuner.project=p", "tuner.overwrite=true"])
    assert (mine / "notes.txt").read_text() == "my notes"


# ---- one process per sweep --------------------------------------------------------------
@pytest.mark.slow
def test_second_process_on_a_running_sweep_is_refused(tmp_path):
    """Issue 29.7: the same command started twice ran every trial twice. Here this
    (test) process holds the sweep; the real CLI started on it must refuse, naming the
    pid, and run no trial."""
    import fcntl

    (tmp_path / "tuning").mkdir()
    args = [*ONE, *store(tmp_path), "tuner.project=busy"]
    with open(tmp_path / "tuning" / "busy.lock", "w") as lock:  # as a running sweep holds it
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.write(f"{os.getpid()} this-host\n")
        lock.flush()
        proc = run_cli(args, tmp_path, module="tune_main", timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert f"pid {os.getpid()}" in out and "tuner.distributed.role=worker" in out
    assert "Traceback" not in out
    assert sweeps(tmp_path) == ([], [])
    # the holder is gone (its lock file stays, with its pid): the next process takes over
    result = tune(args)
    assert result.completed == 1


# ---- resuming ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def one_trial(tmp_path_factory):
    """A finished sweep of one trial (its state folder and store), copied by each test."""
    base = tmp_path_factory.mktemp("one_trial")
    result = tune([*ONE, *store(base), "tuner.project=p"])
    assert result.completed == 1
    return base


@pytest.fixture
def saved(one_trial, tmp_path):
    shutil.copytree(one_trial / "tuning", tmp_path / "tuning")
    shutil.copy(one_trial / "mlflow.db", tmp_path / "mlflow.db")
    if (one_trial / "mlruns").exists():
        shutil.copytree(one_trial / "mlruns", tmp_path / "mlruns")
    return tmp_path


@pytest.mark.slow
def test_resume_after_the_space_was_edited_is_refused_naming_the_change(saved):
    """Issue 29.8: keras-tuner reloads the old space from oracle.json and silently ignores
    the edited one. The resume is refused; the message names old → new."""
    with pytest.raises(ConfigError) as err:
        tune([*ONE, *store(saved), "tuner.project=p", "tuner.max_trials=2",
              "search_space.params.lr.high=0.02"])
    assert "lr.high: 0.03 → 0.02" in str(err.value)
    assert "tuner.overwrite=true" in str(err.value)
    assert len(sweeps(saved)[1]) == 1  # no trial ran


@pytest.mark.slow
def test_damaged_parent_file_reopens_the_same_parent_with_a_warning(saved, capsys):
    """Issue 29.10: a damaged mlflow_sweep.json opened a second parent run silently."""
    (parent_before,), _ = sweeps(saved)
    (saved / "tuning" / "p" / "mlflow_sweep.json").write_text('{"run_id": "ab')
    result = tune([*ONE, *store(saved), "tuner.project=p"])
    out = capsys.readouterr().out
    assert "mlflow_sweep.json is damaged" in out and "found by its tag" in out
    parents, trials = sweeps(saved)
    assert [p.info.run_id for p in parents] == [parent_before.info.run_id]
    assert result.parent_run_id == parent_before.info.run_id and len(trials) == 1
    saved_file = json.loads((saved / "tuning" / "p" / "mlflow_sweep.json").read_text())
    assert saved_file["run_id"] == parent_before.info.run_id  # written again, whole


@pytest.mark.slow
def test_empty_trial_json_is_named_without_traceback(saved):
    """An empty trial.json (left by keras-tuner on a full disk) made every resume fail with
    a JSONDecodeError traceback."""
    trial_file = saved / "tuning" / "p" / "trial_0" / "trial.json"
    trial_file.write_text("")
    proc = run_cli([*ONE, *store(saved), "tuner.project=p", "tuner.max_trials=2"], saved,
                   module="tune_main", timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert f"trial 0 (trial 1) {trial_file} is empty" in out and "tuner.overwrite=true" in out
    assert "Traceback" not in out and "JSONDecodeError" not in out


@pytest.mark.slow
def test_truncated_oracle_json_is_named(saved):
    oracle = saved / "tuning" / "p" / "oracle.json"
    text = oracle.read_text()
    oracle.write_text(text[: len(text) // 2])
    with pytest.raises(DataError, match=f"{oracle} is cut short.*tuner.overwrite=true"):
        tune([*ONE, *store(saved), "tuner.project=p", "tuner.max_trials=2"])
    assert len(sweeps(saved)[1]) == 1  # nothing ran


# ---- full and read-only disks -----------------------------------------------------------
@pytest.mark.slow
def test_full_disk_mid_trial_leaves_whole_state_and_the_sweep_resumes(tmp_path, small_disk,
                                                                    monkeypatch):
    """Issue 29.11: keras-tuner wrote trial.json in place, so a full disk left it empty and
    every later resume failed. The disk fills while the trial trains (its MLflow store is
    on another disk); the trial's end cannot be saved: a clear message, every state file
    still whole JSON, and after space is freed the same command finishes the sweep
    without training the trial again."""
    from rnnbench.tuning import tuner as tuner_module

    disk = small_disk(256)
    args = [*ONE, f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
            f"tuner.directory={disk}", "tuner.project=p"]
    real_run_trial = tuner_module.SweepTuner.run_trial

    def run_trial_then_fill(self, trial, *a, **k):
        out = real_run_trial(self, trial, *a, **k)
        fill_disk(disk)
        return out

    monkeypatch.setattr(tuner_module.SweepTuner, "run_trial", run_trial_then_fill)
    with pytest.raises(DataError) as err:
        tune(args)
    assert str(disk) in str(err.value) and "free space" in str(err.value)
    for path in (disk / "p").rglob("*.json"):
        json.loads(path.read_text())  # whole: the old version or the new one
    assert not list((disk / "p").rglob("*.tmp"))

    monkeypatch.undo()
    (disk / ".filler").unlink()
    result = tune(args)
    assert result.completed == 1
    _, trials = sweeps(tmp_path)
    assert [t.info.status for t in trials] == ["FINISHED"]  # not trained a second time


@pytest.mark.slow
def test_read_only_tuner_directory_is_named(tmp_path, small_disk):
    disk = small_disk(64)
    done = subprocess.run(["mount", "-o", "remount,ro", str(disk)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot remount read-only: {done.stderr.strip()}")
    with pytest.raises(DataError) as err:
        tune([*ONE, *store(tmp_path), f"tuner.directory={disk}", "tuner.project=p"])
    assert str(disk) in str(err.value) and "writable" in str(err.value)


# ---- the best trial as a single run -----------------------------------------------------
@pytest.mark.slow
def test_printed_command_of_the_best_trial_reproduces_its_config(tmp_path):
    """Issue 29.9: the "as a single run" command must give the trial's own config. Bayesian
    optimisation hands out NumPy floats (dropout here): the command is run again and the
    new run's params are compared with the trial run's."""
    args = [*FAST, *store(tmp_path), "tuner=bayesian", "tuner.max_trials=2",
            "tuner.num_initial_points=1", "tuner.max_epochs=1", "train.steps_per_epoch=2"]
    result = tune(args)
    command = result.best["command"]
    assert "model.dropout=" in command and "np." not in command
    for run in sweeps(tmp_path)[1]:  # every trial's own command, the Bayesian one included
        assert "model.dropout=" in run.data.tags["command"], run.data.tags["command"]
        assert "np." not in run.data.tags["command"], run.data.tags["command"]
    words = shlex.split(command)
    assert words[0] == "rnnbench"
    proc = run_cli(words[1:], tmp_path, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = {r.info.run_id: r for r in store_runs(tmp_path)}
    trial = runs[result.best["run_id"]]
    (single,) = [r for r in runs.values() if r.data.tags.get("run_kind") not in ("sweep", "trial")]
    skip = ("hp/", "tracking.skip_finished")
    a = {k: v for k, v in trial.data.params.items() if not k.startswith(skip)}
    b = {k: v for k, v in single.data.params.items() if not k.startswith(skip)}
    assert a == b
