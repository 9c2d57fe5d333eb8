"""The spool and the store (issue 29): a spool remembers its store and replay goes there
(from any folder), a full disk under the spool or under the store, a cut last line, a
moved spool, a frozen tracking server, an out-of-range seed, RNNBENCH_SPOOL on a file."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest

from helpers import cli_env, compose_run, fill_disk


# ---- helpers ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def blank_store(tmp_path_factory):
    """``blank_store(path) -> uri``: a new, empty MLflow SQLite store at ``path``, copied
    from one made once (making one runs MLflow's migrations: seconds)."""
    template = tmp_path_factory.mktemp("template") / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{template}").search_experiments()

    def make(path: Path) -> str:
        shutil.copy(template, path)
        return f"sqlite:///{path}"

    return make


def open_run(uri: str, monkeypatch, spool_dir: Path):
    """A run as ``start_run`` opens it (store, spool, Run), left open: what a process
    killed mid-run leaves behind."""
    from rnnbench import tracking
    from rnnbench.tracking import store
    from rnnbench.tracking.spool import Spool

    monkeypatch.setenv("RNNBENCH_SPOOL", str(spool_dir))
    tracking.configure(uri)
    exp = store.ensure_experiment("exp")
    run_id = store._create_run(exp, "r", {"cell": "gru"})
    spool = Spool(run_id, {"uri": tracking.redact_uri(mlflow.get_tracking_uri()),
                           "experiment": "exp", "run_name": "r", "tags": {"cell": "gru"}})
    return tracking.Run(run_id, exp, spool)


def go_offline(run) -> None:
    run.offline = "the store went away"  # what a write that failed sets
    run.spool.went_offline(run.offline)


def replay_cli(spool: Path, cwd: Path, monkeypatch, capsys, *extra: str) -> tuple[int, str]:
    """``rnnbench replay <spool> ...`` run in ``cwd``, in this process."""
    from rnnbench.cli import replay_main

    monkeypatch.chdir(cwd)
    capsys.readouterr()
    code = replay_main([str(spool), *extra])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


# ---- 5. a spool remembers its store --------------------------------------------------------

def test_replay_from_another_folder_closes_the_run_in_its_own_store(tmp_path, blank_store,
                                                                    monkeypatch, capsys):
    """A run on the default relative store (sqlite:///mlflow.db) is killed; its spool,
    replayed from another folder, closes the run in the store it was written to, and
    makes no store in the folder replay runs in."""
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir(), elsewhere.mkdir()
    monkeypatch.chdir(home)
    blank_store(home / "mlflow.db")
    run = open_run("sqlite:///mlflow.db", monkeypatch, home / "rnnbench-spool")
    run.log_metrics({"loss": 1.0}, step=1)
    header = json.loads((run.spool.folder / "spool.json").read_text())
    assert header["uri"] == f"sqlite:///{home / 'mlflow.db'}"

    code, said = replay_cli(run.spool.folder, elsewhere, monkeypatch, capsys)
    assert code == 0, said
    assert "closed as KILLED" in said
    assert not (elsewhere / "mlflow.db").exists()
    client = mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    assert client.get_run(run.run_id).info.status == "KILLED"
    assert not run.spool.folder.exists()


def test_replay_keeps_a_spool_whose_store_lacks_its_run(tmp_path, blank_store, monkeypatch,
                                                        capsys):
    """The spool's store is gone, or another (empty) store now has its name: replay
    writes nothing, keeps the folder and says how to log the record as a new run."""
    run = open_run(blank_store(tmp_path / "a.db"), monkeypatch, tmp_path / "spool")
    run.log_metrics({"loss": 1.0}, step=1)
    go_offline(run)
    run.log_metrics({"loss": 0.5}, step=2)
    spool = run.spool.folder
    (tmp_path / "a.db").rename(tmp_path / "a-old.db")

    code, said = replay_cli(spool, tmp_path, monkeypatch, capsys)
    assert code == 2 and "Traceback" not in said
    assert "there is no MLflow store at" in said and "--tracking-uri" in said
    assert spool.is_dir() and not (tmp_path / "a.db").exists()

    from rnnbench import tracking

    # a spool written before spools kept absolute paths names sqlite:///mlflow.db: from
    # a folder with another store of that name, the run is not found there
    header = json.loads((spool / "spool.json").read_text())
    (spool / "spool.json").write_text(json.dumps({**header, "uri": "sqlite:///mlflow.db"}))
    other = tmp_path / "other"
    other.mkdir()
    blank_store(other / "mlflow.db")
    code, said = replay_cli(spool, other, monkeypatch, capsys)
    assert code == 2 and f"run {run.run_id}" in said and "the folder is kept" in said
    assert spool.is_dir()
    assert mlflow.MlflowClient(f"sqlite:///{other / 'mlflow.db'}").search_runs(["0"]) == []

    # the real store, given by another spelling of its path: the run is completed there
    (tmp_path / "a-old.db").rename(tmp_path / "a.db")
    code, said = replay_cli(spool, tmp_path / "spool", monkeypatch, capsys,
                            "--tracking-uri", "sqlite:///../a.db")
    assert code == 0, said
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'a.db'}")
    assert [m.value for m in client.get_metric_history(run.run_id, "loss")] == [1.0, 0.5]
    assert not spool.exists()


def test_a_spool_keeps_no_password_and_asks_for_it(tmp_path, monkeypatch, capsys):
    from rnnbench.tracking.spool import store_header

    header = store_header("postgresql://bob:pw-1234@127.0.0.1:1/db")
    assert "pw-1234" not in json.dumps(header)
    assert header["uri"] == "postgresql://bob:***@127.0.0.1:1/db"
    assert "RNNBENCH_TRACKING_PASSWORD" in header["credentials"]

    spool = tmp_path / "spool" / "abc"
    spool.mkdir(parents=True)
    (spool / "spool.json").write_text(json.dumps({**header, "run_id": "abc",
                                                  "experiment": "e"}))
    (spool / "writes.jsonl").write_text("")
    monkeypatch.delenv("RNNBENCH_TRACKING_PASSWORD", raising=False)
    code, said = replay_cli(spool, tmp_path, monkeypatch, capsys)
    assert code == 2 and "Set RNNBENCH_TRACKING_PASSWORD" in said and spool.is_dir()


# ---- 6. a full disk under the spool; a cut last line ----------------------------------------

def test_a_full_spool_disk_lets_the_run_finish_in_the_store(tmp_path, blank_store, small_disk,
                                                            monkeypatch, capfd):
    """The spool's filesystem fills mid-run (the store is elsewhere): no line is cut, the
    run goes on with the store alone, and ends FINISHED with every write."""
    from rnnbench import tracking

    disk = small_disk(64)
    monkeypatch.setenv("RNNBENCH_SPOOL", str(disk / "spool"))
    tracking.configure(blank_store(tmp_path / "a.db"))
    with tracking.start_run("exp", "r", {"cell": "gru"}) as run:
        run.log_params({"model.units": 8})
        run.log_metrics({"loss": 1.0}, step=1)
        fill_disk(disk, leave=20)
        run.log_metrics({f"m{i}": float(i) for i in range(40)}, step=2)  # a long line
        run.log_text("units: 8\n" * 2000, "config/config.yaml")
        run.log_metrics({"loss": 0.5}, step=3)
        text = (run.spool.folder / "writes.jsonl").read_text()
        assert text.endswith("\n")
        kept = [json.loads(line)["op"] for line in text.splitlines()]
        assert kept == ["params", "metrics", "metrics", "artifact", "metrics"][:len(kept)]
        assert len(kept) < 5
    err = capfd.readouterr().err
    assert "cannot be written" in err and "RNNBENCH_SPOOL" in err and "Traceback" not in err
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'a.db'}")
    done = client.get_run(run.run_id)
    assert done.info.status == "FINISHED" and done.data.metrics["m39"] == 39.0
    assert [m.value for m in client.get_metric_history(run.run_id, "loss")] == [1.0, 0.5]
    assert [a.path for a in client.list_artifacts(run.run_id, "config")] == [
        "config/config.yaml"]


def test_replay_takes_every_complete_line_of_a_cut_spool(tmp_path, blank_store, monkeypatch,
                                                         capsys):
    run = open_run(blank_store(tmp_path / "a.db"), monkeypatch, tmp_path / "spool")
    run.log_metrics({"loss": 1.0}, step=1)
    go_offline(run)
    run.log_metrics({"loss": 0.5}, step=2)
    writes = run.spool.folder / "writes.jsonl"
    with open(writes, "a") as f:  # what a process that died mid-write leaves
        f.write('{"op": "metrics", "rows": [["loss", 0.')

    damaged = tmp_path / "damaged"
    shutil.copytree(run.spool.folder, damaged)
    lines = (damaged / "writes.jsonl").read_text().split("\n")
    (damaged / "writes.jsonl").write_text("\n".join([lines[0], "{oops", *lines[1:]]))
    code, said = replay_cli(damaged, tmp_path, monkeypatch, capsys)
    assert code == 2 and "line 2, is damaged" in said and damaged.is_dir()

    code, said = replay_cli(run.spool.folder, tmp_path, monkeypatch, capsys)
    assert code == 0, said
    assert "last line (line 3) was cut short" in said and "Traceback" not in said
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'a.db'}")
    assert client.get_run(run.run_id).info.status == "KILLED"
    assert sorted((m.step, m.value) for m in client.get_metric_history(run.run_id, "loss")) == [
        (1, 1.0), (2, 0.5)]


# ---- a full store disk ---------------------------------------------------------------------

def test_a_full_store_disk_spools_with_one_message_and_replays_whole(tmp_path, blank_store,
                                                                     small_disk, monkeypatch,
                                                                     capfd):
    from rnnbench import tracking

    disk = small_disk(2048)
    uri = blank_store(disk / "mlflow.db")
    monkeypatch.setenv("RNNBENCH_SPOOL", str(tmp_path / "spool"))
    tracking.configure(uri)
    with pytest.raises(tracking.TrackingError, match="database or disk is full.*Nothing is "
                                                     "lost"):
        with tracking.start_run("exp", "r", {"cell": "gru"}) as run:
            run.log_metrics({"loss": 1.0}, step=1)
            fill_disk(disk)
            for step in range(2, 6):
                run.log_metrics({"loss": 1.0 / step}, step=step)
            run.log_text("units: 8\n", "config/config.yaml")
            with pytest.raises(tracking.TrackingError, match="stopped taking writes"):
                tracking.log_model(run, None)  # the MLflow model waits for no store
    err = capfd.readouterr().err
    assert "Traceback" not in err and "SQLAlchemy" not in err, err[-3000:]
    assert err.count("stopped taking writes") == 1 and "database or disk is full" in err

    (disk / ".filler").unlink()
    new_id = tracking.replay(tmp_path / "spool" / run.run_id)
    assert new_id == run.run_id
    client = mlflow.MlflowClient(uri)
    assert client.get_run(run.run_id).info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.run_id, "loss")] == [1, 2, 3, 4, 5]
    assert [a.path for a in client.list_artifacts(run.run_id, "config")] == [
        "config/config.yaml"]


def test_a_store_disk_full_before_the_run_is_one_clear_error(tmp_path, blank_store,
                                                             small_disk, monkeypatch, capfd):
    from rnnbench import tracking

    disk = small_disk(2048)
    uri = blank_store(disk / "mlflow.db")
    monkeypatch.setenv("RNNBENCH_SPOOL", str(tmp_path / "spool"))
    tracking.configure(uri)
    fill_disk(disk)
    capfd.readouterr()
    with pytest.raises(tracking.TrackingError, match="the disk that holds it is full.*Free "
                                                     "space there"):
        with tracking.start_run("exp", "r", {"cell": "gru"}):
            pass
    err = capfd.readouterr().err
    assert "Traceback" not in err and "SQLAlchemy" not in err, err[-3000:]
    (disk / ".filler").unlink()
    client = mlflow.MlflowClient(uri)
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


# ---- a moved spool; RNNBENCH_SPOOL on a file; the seed ---------------------------------------

def test_a_moved_spool_finds_its_artifacts_or_names_the_missing_one(tmp_path, blank_store,
                                                                    monkeypatch, capsys):
    run = open_run(blank_store(tmp_path / "a.db"), monkeypatch, tmp_path / "spool")
    go_offline(run)
    run.log_text("units: 8\n", "config/config.yaml")
    run.log_text("a: 1\n", "config/overrides.yaml")
    run.end("FINISHED")
    moved = tmp_path / "moved"
    shutil.copytree(run.spool.folder, tmp_path / "copy")
    shutil.move(run.spool.folder, moved)

    broken = tmp_path / "copy"  # a copy without one artifact
    shutil.rmtree(broken / "artifacts" / "1")
    code, said = replay_cli(broken, tmp_path, monkeypatch, capsys)
    assert code == 2 and "artifact config/overrides.yaml of this run is missing" in said
    assert broken.is_dir()

    # an older spool names its artifacts by absolute path, in the folder it was written in
    writes = moved / "writes.jsonl"
    ops = [json.loads(line) for line in writes.read_text().splitlines()]
    ops[0]["path"] = str(run.spool.folder / ops[0]["path"])
    writes.write_text("".join(json.dumps(op) + "\n" for op in ops))
    code, said = replay_cli(moved, tmp_path, monkeypatch, capsys)
    assert code == 0, said
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'a.db'}")
    assert client.get_run(run.run_id).info.status == "FINISHED"
    assert sorted(a.path for a in client.list_artifacts(run.run_id, "config")) == [
        "config/config.yaml", "config/overrides.yaml"]


@pytest.mark.parametrize("under", [False, True])
def test_rnnbench_spool_on_a_file_is_refused_before_the_run_exists(tmp_path, blank_store,
                                                                   monkeypatch, under):
    from rnnbench import tracking

    (tmp_path / "afile").write_text("x")
    target = tmp_path / "afile" / "sub" if under else tmp_path / "afile"
    monkeypatch.setenv("RNNBENCH_SPOOL", str(target))
    uri = blank_store(tmp_path / "a.db")
    tracking.configure(uri)
    with pytest.raises(tracking.TrackingError) as caught:
        with tracking.start_run("exp", "r", {}):
            pass
    message = str(caught.value)
    assert f"RNNBENCH_SPOOL={target}" in message and "not a folder" in message
    assert "Set RNNBENCH_SPOOL to a folder" in message
    client = mlflow.MlflowClient(uri)
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


def test_a_seed_out_of_the_seeders_range_is_refused():
    from rnnbench.errors import ConfigError

    with pytest.raises(ConfigError, match=r"seed=4294967296 .* from 0 to 4294967295"):
        compose_run(["task=co2", "seed=4294967296"])
    assert compose_run(["task=co2", "seed=4294967295"]).seed == 4294967295


# ---- 14. a frozen tracking server ------------------------------------------------------------

@pytest.fixture
def plain_server(tmp_path):
    """A real ``mlflow server`` on 127.0.0.1 (SQLite store), in its own process group."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1", "--backend-store-uri",
         f"sqlite:///{tmp_path / 'server.db'}", "--artifacts-destination",
         str(tmp_path / "artifacts")], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
        env=cli_env(), start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, \
                    (tmp_path / "server.log").read_text()[-3000:]
                time.sleep(0.3)
        yield url, proc
    finally:
        os.killpg(proc.pid, signal.SIGCONT)
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()


@pytest.mark.slow
@pytest.mark.server
def test_a_frozen_server_holds_a_write_no_longer_than_the_timeout(tmp_path, plain_server,
                                                                  monkeypatch):
    from rnnbench import tracking

    url, proc = plain_server
    for key in ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES"):
        monkeypatch.delenv(key, raising=False)  # restored after the test
    monkeypatch.setenv("RNNBENCH_SPOOL", str(tmp_path / "spool"))
    timeout_s = 4
    tracking.configure(url, timeout_s)
    with pytest.raises(tracking.TrackingError, match="Nothing is lost"):
        with tracking.start_run("exp", "r", {"cell": "gru"}) as run:
            run.log_metrics({"loss": 1.0}, step=1)
            os.killpg(proc.pid, signal.SIGSTOP)  # frozen: connections wait, nothing answers
            t0 = time.monotonic()
            run.log_metrics({"loss": 0.5}, step=2)
            held = time.monotonic() - t0
            run.log_metrics({"loss": 0.25}, step=3)
            assert run.offline
    assert held < timeout_s + 3, f"a write waited {held:.1f} s for a frozen server"
    assert "MLFLOW_HTTP_REQUEST_TIMEOUT" not in os.environ  # the run's writes only
    os.killpg(proc.pid, signal.SIGCONT)
    tracking.replay(tmp_path / "spool" / run.run_id)
    client = mlflow.MlflowClient(url)
    assert client.get_run(run.run_id).info.status == "FINISHED"
    assert sorted({m.step for m in client.get_metric_history(run.run_id, "loss")}) == [1, 2, 3]
