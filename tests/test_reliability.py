"""Faults and misuse (issue 14): secrets never leak, the report deletes only its own files,
no success without a record, store faults are clear errors and lose nothing, data and
environment faults, names, honest messages. The table in docs/reliability.md names
these tests."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest

from helpers import ROOT, cli_env, run_cli, store_runs

PASSWORD = "Sup3r-Secret-pw"


# ---- helpers ----------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def py(code: str, *args: str, cwd: Path | None = None, env: dict | None = None,
       timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (rnnbench importable), as the CLI would."""
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          cwd=cwd, env=env or cli_env(), timeout=timeout)


def configure_error(uri: str) -> str | None:
    """The message of the RnnbenchError that ``tracking.configure(uri)`` raises (the CLI
    prints it as is, without a traceback), or None when it accepts the store. Anything
    else (a SQLAlchemy or MLflow exception) fails the test."""
    from rnnbench import tracking
    from rnnbench.errors import RnnbenchError

    try:
        tracking.configure(uri, 5)
    except RnnbenchError as exc:
        return str(exc)
    return None


def read_only(path: Path):
    """Make ``path`` unwritable even for root (chmod, then chattr +i when root ignores
    modes). Returns the undo function."""
    mode = path.stat().st_mode
    path.chmod(0o555 if path.is_dir() else 0o444)
    undo = [lambda: path.chmod(mode)]
    probe = path / ".probe" if path.is_dir() else path
    try:
        with open(probe, "a"):
            pass
        writable = True
        if path.is_dir():
            probe.unlink()
    except OSError:
        writable = False
    if writable:  # root: the mode bits do not stop it
        out = subprocess.run(["chattr", "+i", str(path)], capture_output=True)
        if out.returncode != 0:
            undo[0]()
            pytest.skip(f"cannot make {path} read-only here (root without chattr)")
        undo.insert(0, lambda: subprocess.run(["chattr", "-i", str(path)]))
    return lambda: [u() for u in undo]


class MlflowServer:
    """A real ``mlflow server`` on 127.0.0.1 with basic-auth (admin / PASSWORD), its
    records in a SQLite file; it can be killed and started again on the same store."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (root / "auth.ini").write_text(
            "[mlflow]\ndefault_permission = READ\n"
            f"database_uri = sqlite:///{root / 'auth.db'}\n"
            f"admin_username = admin\nadmin_password = {PASSWORD}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = cli_env(MLFLOW_AUTH_CONFIG_PATH=str(self.root / "auth.ini"),
                      MLFLOW_FLASK_SERVER_SECRET_KEY="test-only-key")
        cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--app-name",
               "basic-auth", "--host", "127.0.0.1", "--port", str(self.port), "--workers",
               "1", "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
               "--artifacts-destination", str(self.root / "artifacts")]
        self.log = open(self.root / "server.log", "a")
        self.proc = subprocess.Popen(cmd, cwd=self.root, stdout=self.log,
                                     stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2):
                    return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail("mlflow server did not start:\n"
                            + (self.root / "server.log").read_text()[-3000:])
            time.sleep(0.3)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)
        self.proc = None
        self.log.close()

    def client(self) -> mlflow.MlflowClient:
        os.environ["MLFLOW_TRACKING_USERNAME"] = "admin"
        os.environ["MLFLOW_TRACKING_PASSWORD"] = PASSWORD
        return mlflow.MlflowClient(self.url)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
        for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            os.environ.pop(key, None)


def no_secret_in_tree(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file()
            and PASSWORD.encode() in p.read_bytes()]


# ---- 1. secrets -------------------------------------------------------------------------

def test_redact_hides_every_password_and_keeps_the_store():
    from rnnbench.tracking import redact_uri

    cases = {
        f"postgresql://mlflow:{PASSWORD}@db:5432/mlflow": "postgresql://mlflow:***@db:5432/mlflow",
        f"postgresql+psycopg2://u:{PASSWORD}@db/m?sslmode=require":
            "postgresql+psycopg2://u:***@db/m?sslmode=require",
        f"http://admin:{PASSWORD}@127.0.0.1:5000": "http://admin:***@127.0.0.1:5000",
        f"mysql://u@db/m?password={PASSWORD}&x=1": "mysql://u@db/m?password=***&x=1",
        f"rnnbench tracking.uri=https://a:{PASSWORD}@h/x seed=1":
            "rnnbench tracking.uri=https://a:***@h/x seed=1",
        "http://127.0.0.1:5000": "http://127.0.0.1:5000",
        "sqlite:///mlflow.db": "sqlite:///mlflow.db",
    }
    for raw, shown in cases.items():
        assert redact_uri(raw) == shown


def test_credentials_are_taken_off_the_command_line(monkeypatch):
    from rnnbench.redaction import restore_password, take_secrets

    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                "RNNBENCH_TRACKING_PASSWORD"):
        monkeypatch.delenv(key, raising=False)
    args = take_secrets([f"tracking.uri=http://admin:{PASSWORD}@127.0.0.1:5000", "seed=1"])
    assert args == ["tracking.uri=http://127.0.0.1:5000", "seed=1"]
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "admin"
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == PASSWORD
    args = take_secrets([f"tracking.uri=postgresql://u:{PASSWORD}@db/m"])
    assert args == ["tracking.uri=postgresql://u:***@db/m"]
    assert restore_password("postgresql://u:***@db/m") == f"postgresql://u:{PASSWORD}@db/m"


@pytest.mark.slow
def test_sweep_state_file_holds_no_password(tmp_path, monkeypatch):
    from rnnbench import tracking
    from rnnbench.tuning.record import PARENT_FILE, SweepRecord

    monkeypatch.chdir(tmp_path)
    tracking.configure(f"sqlite:///{tmp_path / 'mlflow.db'}")
    record = SweepRecord("exp", "sweep-1", f"postgresql://u:{PASSWORD}@db/m", "val_loss")
    record.open_parent(tmp_path / "tuner", None, resume=False, run_name="sweep",
                       tags={"command": f"rnnbench-tune tracking.uri=http://a:{PASSWORD}@h"},
                       params={"tracking.uri": f"postgresql://u:{PASSWORD}@db/m"},
                       space_json="{}")
    saved = json.loads((tmp_path / "tuner" / PARENT_FILE).read_text())
    assert saved["tracking_uri"] == "postgresql://u:***@db/m"
    run = mlflow.MlflowClient().get_run(record.parent_run_id)
    assert PASSWORD not in json.dumps([run.data.params, run.data.tags])
    assert run.data.params["tracking.uri"] == "postgresql://u:***@db/m"


@pytest.mark.slow
@pytest.mark.server
def test_http_credentials_work_and_the_password_appears_nowhere(server, tmp_path, capsys):
    uri = f"http://admin:{PASSWORD}@127.0.0.1:{server.port}"
    env = cli_env()
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.pop(key, None)
    # a multirun of one job: Hydra also logs the job's overrides and writes multirun.yaml
    proc = run_cli(["-m", "debug=smoke", "diagnostics.enabled=false", "hardware.xla=off",
                    "seed=5", f"tracking.uri={uri}"], tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    launched = [line for line in proc.stdout.splitlines() if "#0 : " in line]
    assert launched and f"\\:{server.port}" in launched[0]  # Hydra's "#0 : …" line
    assert PASSWORD not in proc.stdout + proc.stderr
    assert no_secret_in_tree(tmp_path) == []  # .hydra/*.yaml, multirun.yaml, logs
    assert list(tmp_path.glob("multirun/*/*/multirun.yaml"))
    assert list(tmp_path.glob("multirun/*/*/0/.hydra/overrides.yaml"))

    client = server.client()
    exp = client.get_experiment_by_name("co2")
    (run,) = client.search_runs([exp.experiment_id], "tags.seed = '5'")
    assert run.info.status == "FINISHED"
    command = run.data.tags["command"]  # as Hydra wrote the overrides (":" escaped)
    assert command.startswith("rnnbench debug=smoke") and f"\\:{server.port}" in command
    assert PASSWORD not in json.dumps([run.data.params, run.data.tags])
    arts = client.download_artifacts(run.info.run_id, "config", str(tmp_path / "dl"))
    assert no_secret_in_tree(Path(arts)) == [] and (Path(arts) / "config.yaml").is_file()

    from rnnbench.report.cli import main as report_main

    out = tmp_path / "report"
    assert report_main(["--tracking-uri", uri, "--experiment", "co2", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert PASSWORD not in printed.out + printed.err
    assert (out / "report.html").is_file() and no_secret_in_tree(out) == []

    # a wrong password: the server's refusal, in one paragraph, and still no password
    message = configure_error(f"http://admin:wrong-{PASSWORD}@127.0.0.1:{server.port}")
    assert message is not None and "refused the credentials" in message
    assert PASSWORD not in message


# ---- 2. the report deletes only its own files ----------------------------------------------

@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    """A store of rnnbench-shaped runs written through rnnbench.tracking (no training:
    the report only reads the store)."""
    root = tmp_path_factory.mktemp("small-store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    from rnnbench import tracking

    tracking.configure(uri)
    for cell in ("lstm", "gru", "<i>evil</i>"):
        for seed in (0, 1):
            tags = {"task": "co2", "cell": cell, "seed": seed, "run_kind": "run",
                    "primary_metric": "mse", "primary_mode": "min"}
            with tracking.start_run("co2", f"co2-{cell}-s{seed}", tags) as run:
                run.log_params({"cell.name": cell, "seed": seed})
                run.log_metrics({"test_mse": 1.0 + seed / 10 + (cell == "gru") / 5})
    return root, uri


@pytest.mark.slow
def test_report_never_deletes_outside_its_folder(small_store, tmp_path, capsys):
    from rnnbench.report.cli import main as report_main

    _, uri = small_store
    out = tmp_path / "out"
    assert report_main(["--tracking-uri", uri, "--out", str(out)]) == 0
    outside = tmp_path / "precious.csv"
    outside.write_text("keep me")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "old.csv").write_text("keep me too")
    (out / "tables" / "linked").symlink_to(elsewhere)
    (out / "notes.txt").write_text("the user's own file")
    (out / "tables" / "stale.csv").write_text("written by an earlier report")
    manifest = out / ".rnnbench-report"
    manifest.write_text(manifest.read_text() + "\n".join([
        str(outside), "../precious.csv", "tables/../../precious.csv",
        "tables/linked/old.csv", "notes.txt", "tables/stale.csv"]) + "\n")
    capsys.readouterr()
    assert report_main(["--tracking-uri", uri, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert outside.read_text() == "keep me"
    assert (elsewhere / "old.csv").read_text() == "keep me too"
    assert (out / "notes.txt").is_file()  # not a file a report writes
    assert not (out / "tables" / "stale.csv").exists()  # one it wrote: removed
    for entry in (str(outside), "../precious.csv", "tables/linked/old.csv", "notes.txt"):
        assert f"lists '{entry}'" in err and "left alone" in err


@pytest.mark.slow
def test_report_escapes_html_in_run_values(small_store, tmp_path):
    from rnnbench.report.cli import main as report_main

    _, uri = small_store
    assert report_main(["--tracking-uri", uri, "--out", str(tmp_path / "r")]) == 0
    page = (tmp_path / "r" / "report.html").read_text()
    assert "&lt;i&gt;evil&lt;/i&gt;" in page and "<i>evil</i>" not in page


@pytest.mark.slow
def test_report_on_a_symlinked_out_folder_works_inside_the_real_folder(small_store, tmp_path):
    from rnnbench.report.cli import main as report_main

    _, uri = small_store
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    assert report_main(["--tracking-uri", uri, "--out", str(tmp_path / "link")]) == 0
    assert (real / "report.md").is_file()
    (real / "figures").mkdir(exist_ok=True)
    (real / ".rnnbench-report").write_text("figures/gone.png\n")
    (real / "figures" / "gone.png").write_bytes(b"x")
    assert report_main(["--tracking-uri", uri, "--out", str(tmp_path / "link")]) == 0
    assert not (real / "figures" / "gone.png").exists()


# ---- 3. no success without a record --------------------------------------------------------

def test_stores_that_keep_nothing_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cases = {"sqlite:///": "in-memory", "sqlite://": "in-memory",
             "sqlite:///:memory:": "in-memory", "sqlite:///file:x?mode=memory": "in-memory",
             "notaurl": "not a tracking URI", "file:///tmp/mlruns": "not a tracking URI",
             "ftp://h/x": "not a tracking URI"}
    for uri, expect in cases.items():
        message = configure_error(uri)
        assert message is not None and expect in message, (uri, message)
    assert list(tmp_path.iterdir()) == []  # no store, no mlruns folder


def test_unknown_plus_key_is_refused_by_the_cli(tmp_path):
    proc = run_cli(["+model.unit=128", "debug=smoke"], tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "model.unit is not a config key" in proc.stderr and "model.units" in proc.stderr
    assert "Traceback" not in proc.stderr and store_runs(tmp_path) == []


def _compose(*overrides: str, name: str = "config"):
    from hydra import compose, initialize_config_dir

    from rnnbench.cli import CONF_DIR
    from rnnbench.cli.schema import register_configs

    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(name, overrides=list(overrides))


@pytest.mark.parametrize("overrides, name, expect", [
    (["+train.epoch=3"], "config", "train.epoch is not a config key"),
    (["+task.lookbak=3"], "config", "task.lookbak is not a config key"),
    (["+cell.foo=1"], "config", "cell.foo is not a config key"),
    (["+tuner.max_trial=3"], "tune", "tuner.max_trial is not a config key"),
    (["model.units=100000"], "config", "model.units=100000"),
    (["tracking.experiment=../../x"], "config", "tracking.experiment='../../x'"),
    (["tracking.experiment=\"it's\""], "config", "tracking.experiment=\"it's\""),
    (["tracking.experiment=a/b"], "config", "tracking.experiment='a/b'"),
])
def test_schema_refuses_what_it_does_not_know(overrides, name, expect):
    from rnnbench.config import to_object
    from rnnbench.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        to_object(_compose(*overrides, name=name))
    assert expect in str(info.value)


def test_known_configs_still_pass_the_unknown_key_check():
    from rnnbench.config import to_object, unknown_keys

    for overrides, name in [((), "config"), (("task=speech_audio",), "config"),
                            (("task=lm_word", "cell=peephole"), "config"), ((), "tune"),
                            (("search_space=greff",), "tune"),
                            (("tracking.experiment='my study (v2)'",), "config")]:
        cfg = _compose(*overrides, name=name)
        assert unknown_keys(cfg) == [], overrides
        to_object(cfg)  # and every value check passes


# ---- 4. tracking-store faults ----------------------------------------------------------------

@pytest.mark.slow
def test_damaged_sqlite_stores_are_clear_errors(tmp_path):
    assert configure_error(f"sqlite:///{tmp_path / 'good.db'}") is None
    data = (tmp_path / "good.db").read_bytes()
    cases = {"random.db": os.urandom(50_000), "truncated.db": data[:len(data) // 3],
             "text.db": b"not a database\n" * 100}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        start = time.monotonic()
        message = configure_error(f"sqlite:///{tmp_path / name}")
        assert message is not None and name in message, (name, message)
        assert time.monotonic() - start < 60
    (tmp_path / "folder.db").mkdir()
    assert "is a folder" in configure_error(f"sqlite:///{tmp_path / 'folder.db'}")


@pytest.mark.slow
def test_read_only_store_folder_and_file_fail_fast_and_clearly(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    assert configure_error(f"sqlite:///{tmp_path / 'mlflow.db'}") is None
    undo = [read_only(folder), read_only(tmp_path / "mlflow.db")]
    try:
        start = time.monotonic()
        in_folder = configure_error(f"sqlite:///{folder / 'mlflow.db'}")
        elapsed = time.monotonic() - start
        the_file = configure_error(f"sqlite:///{tmp_path / 'mlflow.db'}")
    finally:
        for u in undo:
            u()
    assert in_folder is not None and "folder" in in_folder and "read-only" in in_folder
    assert elapsed < 30  # no minutes of retries first
    assert the_file is not None and "is read-only" in the_file


@pytest.mark.slow
def test_report_on_a_corrupt_store_is_a_clear_error(tmp_path, small_store):
    root, _ = small_store
    data = (root / "mlflow.db").read_bytes()
    for name, content in {"truncated.db": data[: len(data) // 4],
                          "random.db": os.urandom(20_000)}.items():
        (tmp_path / name).write_bytes(content)
        proc = run_cli(["--tracking-uri", f"sqlite:///{tmp_path / name}", "--out",
                        str(tmp_path / "r")], tmp_path, module="report_main")
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert proc.stderr.startswith("rnnbench-report: error: ") and name in proc.stderr
        assert "Traceback" not in proc.stderr
        assert not (tmp_path / "r").exists()


def _open_at_once(kind: str, uri: str, barrier, results) -> None:
    """One process of the store-creation race: rnnbench opening the store, or a program
    that takes no lock (mlflow ui, a script) opening it as soon as the file appears."""
    try:
        barrier.wait(timeout=120)
        if kind == "rnnbench":
            from rnnbench import tracking

            tracking.configure(uri)
        else:
            db = Path(uri[len("sqlite:///"):])
            deadline = time.monotonic() + 120
            while not db.exists():
                if time.monotonic() > deadline:
                    raise TimeoutError("the store never appeared")
            mlflow.MlflowClient(uri).search_experiments()
        results.put((kind, "ok"))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        results.put((kind, f"{type(exc).__name__}: {exc}"))


def test_a_sqlite_stores_artifacts_sit_beside_it_not_in_the_working_folder(tmp_path,
                                                                           monkeypatch):
    """MLflow's default puts a SQLite store's artifacts in ./mlruns of whatever folder the
    process runs in: a store given by an absolute path would be parted from them."""
    from rnnbench.tracking import configure, ensure_experiment

    elsewhere, store = tmp_path / "elsewhere", tmp_path / "store"
    elsewhere.mkdir(), store.mkdir()
    monkeypatch.chdir(elsewhere)
    uri = f"sqlite:///{store / 'mlflow.db'}"
    before = mlflow.get_tracking_uri()
    try:
        configure(uri)
        experiment_id = ensure_experiment("beside")
        assert ensure_experiment("beside") == experiment_id  # found again, not re-made
        with mlflow.start_run(experiment_id=experiment_id) as run:
            mlflow.log_text("kept", "notes/a.txt")
    finally:
        mlflow.set_tracking_uri(before)
    kept = store / "mlruns" / experiment_id / run.info.run_id / "artifacts" / "notes" / "a.txt"
    assert kept.read_text() == "kept"
    assert list(elsewhere.iterdir()) == []
    client = mlflow.MlflowClient(uri)  # and MLflow reads them back from the record
    assert [a.path for a in client.list_artifacts(run.info.run_id, "notes")] == ["notes/a.txt"]


@pytest.mark.slow
def test_a_new_store_opened_by_several_processes_at_once(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    kinds = ["rnnbench"] * 2 + ["reader"] * 2
    barrier, results = ctx.Barrier(len(kinds)), ctx.Queue()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    procs = [ctx.Process(target=_open_at_once, args=(k, uri, barrier, results))
             for k in kinds]
    for p in procs:
        p.start()
    outcome = [results.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert all(status == "ok" for _, status in outcome), outcome
    assert not list(tmp_path.glob(".mlflow.db.*"))  # no temporary store left behind
    client = mlflow.MlflowClient(uri)
    assert [e.name for e in client.search_experiments()] == ["Default"]


@pytest.mark.slow
@pytest.mark.server
def test_server_killed_mid_run_loses_nothing_and_replay_logs_it(server, tmp_path, capsys):
    env = cli_env(MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD=PASSWORD,
                  MLFLOW_HTTP_REQUEST_MAX_RETRIES="1", MLFLOW_HTTP_REQUEST_TIMEOUT="10")
    epochs = 12
    proc = subprocess.Popen(
        [sys.executable, "-m", "rnnbench", "debug=smoke", "seed=11",
         f"train.epochs={epochs}", f"train.patience={epochs}", "train.steps_per_epoch=10",
         "diagnostics.enabled=false", "hardware.xla=off", f"tracking.uri={server.url}"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        client = server.client()
        deadline = time.monotonic() + 240
        while True:  # wait until the server holds two epochs of the run
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            exp = client.get_experiment_by_name("co2")
            runs = client.search_runs([exp.experiment_id], "tags.seed = '11'") if exp else []
            if runs and len(client.get_metric_history(runs[0].info.run_id, "loss")) >= 2:
                break
            assert time.monotonic() < deadline, "the run never logged two epochs"
            time.sleep(0.2)
        run_id = runs[0].info.run_id
        server.stop(signal.SIGKILL)  # the server dies mid-training
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, err[-3000:]
    assert "Traceback" not in err and "Nothing is lost" in err
    assert f"rnnbench replay {tmp_path / 'rnnbench-spool' / run_id}" in err
    spool = tmp_path / "rnnbench-spool" / run_id
    writes = [json.loads(line) for line in (spool / "writes.jsonl").read_text().splitlines()]
    assert writes[-1] == {"op": "end", "status": "FINISHED"}
    assert list(spool.glob("artifacts/*/model.keras"))

    server.start()  # back, on the same store
    from rnnbench.cli import replay_main

    for key in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        os.environ.pop(key, None)
    assert replay_main([str(spool)]) == 0  # `rnnbench replay <folder>`, in this process
    assert run_id in capsys.readouterr().out and not spool.exists()
    client = server.client()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert "test_mse" in run.data.metrics and "fit_time_s" in run.data.metrics
    steps = sorted(m.step for m in client.get_metric_history(run_id, "loss"))
    assert steps == list(range(1, epochs + 1))  # every epoch, none twice
    assert "model.keras" in {a.path.split("/")[-1] for a in client.list_artifacts(run_id, "model")}


@pytest.mark.slow
def test_replay_into_a_store_without_the_run_makes_a_whole_new_run(tmp_path, monkeypatch):
    """A spool replayed into another store: the whole record, as a new run."""
    from rnnbench import tracking

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RNNBENCH_SPOOL", str(tmp_path / "spool"))
    tracking.configure(f"sqlite:///{tmp_path / 'a.db'}")
    with pytest.raises(tracking.TrackingError, match="Nothing is lost"):
        with tracking.start_run("exp", "r", {"cell": "lstm"}) as run:
            run.log_params({"model.units": 8})
            run.log_metrics({"loss": 1.0}, step=1)
            run.log_text("units: 8\n", "config/config.yaml")
            run.offline = "the store went away"  # what a write that failed sets
            run.spool.went_offline(run.offline)
            run.log_metrics({"loss": 0.5}, step=2)
    spool = tmp_path / "spool" / run.run_id
    other = f"sqlite:///{tmp_path / 'b.db'}"
    new_id = tracking.replay(spool, other)
    client = mlflow.MlflowClient(other)
    new = client.get_run(new_id)
    assert new.info.status == "FINISHED" and new_id != run.run_id
    assert new.data.tags["replayed_from"] == run.run_id and new.data.tags["cell"] == "lstm"
    assert new.data.params["model.units"] == "8"
    assert sorted((m.step, m.value) for m in client.get_metric_history(new_id, "loss")) == [
        (1, 1.0), (2, 0.5)]
    assert [a.path for a in client.list_artifacts(new_id, "config")] == ["config/config.yaml"]
    assert not spool.exists()


def test_mlflow_error_records_of_retried_locks_stay_off_the_console(tmp_path, capfd):
    """MLflow logs every "database is locked" at ERROR with a SQLAlchemy traceback before
    raising it; :func:`retry_locked` retries those, so once a store is opened that record
    is dropped. Any other database error still shows."""
    import sqlite3

    import sqlalchemy.exc

    from rnnbench import tracking

    tracking.configure(f"sqlite:///{tmp_path / 'a.db'}")
    logger = logging.getLogger("mlflow.store.db.utils")

    def emit(message: str) -> str:
        err = sqlalchemy.exc.OperationalError("COMMIT", {}, sqlite3.OperationalError(message))
        try:
            raise err
        except sqlalchemy.exc.OperationalError as exc:
            # what mlflow.store.db.utils does before re-raising
            logger.exception("SQLAlchemy database error. The following exception is caught.\n%s",
                             exc)
        return capfd.readouterr().err

    capfd.readouterr()
    assert emit("database is locked") == ""
    shown = emit("disk I/O error")
    assert "disk I/O error" in shown and "Traceback" in shown


def _run_killed_mid_run(tmp_path, db, more: str = "") -> str:
    """A run in a child process on the SQLite store `db` that logs `loss` 1.0 at step 1,
    runs the lines `more` inside the run, then SIGKILLs itself. Returns the run id."""
    script = (
        "import os, signal\n"
        "from rnnbench import tracking\n"
        f"tracking.configure('sqlite:///{db}')\n"
        "with tracking.start_run('exp', 'r', {'cell': 'gru'}) as run:\n"
        "    run.log_metrics({'loss': 1.0}, step=1)\n"
        f"{more}"
        "    print(run.run_id, flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=cli_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    return proc.stdout.split()[-1]


@pytest.mark.slow
def test_replay_closes_a_run_whose_process_was_killed(tmp_path):
    """SIGKILL mid-run with the store fine: the store shows the run RUNNING. Replaying
    its spool closes it as KILLED with the reason, keeping every write; a second replay
    says there is nothing left to do."""
    db = tmp_path / "a.db"
    run_id = _run_killed_mid_run(tmp_path, db)
    client = mlflow.MlflowClient(f"sqlite:///{db}")
    assert client.get_run(run_id).info.status == "RUNNING"
    spool = tmp_path / "rnnbench-spool" / run_id
    assert spool.is_dir()

    out = subprocess.run([sys.executable, "-m", "rnnbench", "replay", str(spool)], cwd=tmp_path,
                         env=cli_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "closed as KILLED" in out.stderr and "Traceback" not in out.stderr
    run = client.get_run(run_id)
    assert run.info.status == "KILLED"
    assert "killed before the run ended" in run.data.tags["failure_reason"]
    assert [m.value for m in client.get_metric_history(run_id, "loss")] == [1.0]
    assert not spool.exists()


@pytest.mark.slow
def test_replay_of_an_offline_run_whose_process_was_killed_closes_it_killed(tmp_path):
    """The store went away, then the process was SIGKILLed: the spool holds writes the
    store never took and no end. Replay logs them and closes the run KILLED with the
    same reason as a killed run whose store took everything (not FAILED)."""
    db = tmp_path / "a.db"
    run_id = _run_killed_mid_run(tmp_path, db, (
        "    run.offline = 'the store went away'  # what a write that failed sets\n"
        "    run.spool.went_offline(run.offline)\n"
        "    run.log_metrics({'loss': 0.5}, step=2)\n"))
    client = mlflow.MlflowClient(f"sqlite:///{db}")
    assert [m.value for m in client.get_metric_history(run_id, "loss")] == [1.0]
    spool = tmp_path / "rnnbench-spool" / run_id

    out = subprocess.run([sys.executable, "-m", "rnnbench", "replay", str(spool)], cwd=tmp_path,
                         env=cli_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    run = client.get_run(run_id)
    assert run.info.status == "KILLED"
    assert "killed before the run ended" in run.data.tags["failure_reason"]
    assert sorted((m.step, m.value) for m in client.get_metric_history(run_id, "loss")) == [
        (1, 1.0), (2, 0.5)]
    assert not spool.exists()


@pytest.mark.slow
def test_a_run_that_ends_normally_leaves_no_spool(tmp_path, monkeypatch):
    from rnnbench import tracking

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RNNBENCH_SPOOL", raising=False)
    tracking.configure(f"sqlite:///{tmp_path / 'a.db'}")
    with tracking.start_run("exp", "r", {}) as run:
        run.log_metrics({"loss": 1.0}, step=1)
        assert (tmp_path / "rnnbench-spool" / run.run_id / "writes.jsonl").is_file()
    assert not (tmp_path / "rnnbench-spool").exists()


# ---- 5. data and environment faults -----------------------------------------------------------

def _wav_bytes(n: int = 4000) -> bytes:
    import io

    from scipy.io import wavfile

    buf = io.BytesIO()
    x = (np.sin(np.arange(n) / 3) * 8000).astype(np.int16)
    wavfile.write(buf, 8000, x)
    return buf.getvalue()


@pytest.mark.parametrize("name, content, expect", [
    ("nofmt.wav", b"RIFF" + struct.pack("<I", 4) + b"WAVE", "not a valid WAV file"),
    ("junk.wav", b"RIFF" + struct.pack("<I", 100) + b"WAVE" + b"junk" + struct.pack("<I", 9**6),
     "not a valid WAV file"),
    ("zero_channels.wav", b"RIFF" + struct.pack("<I", 100) + b"WAVE" + b"fmt "
     + struct.pack("<IHHIIHH", 16, 1, 0, 8000, 16000, 2, 16) + b"data" + struct.pack("<I", 4)
     + b"\0" * 4, "not a valid WAV file"),
    ("truncated.wav", _wav_bytes()[:3000], "is truncated"),
])
def test_damaged_wav_files_are_refused_by_name(tmp_path, name, content, expect):
    from rnnbench.errors import DataError
    from rnnbench.tasks.speech import read_wav

    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as info:
        read_wav(path)
    assert str(path) in str(info.value) and expect in str(info.value)
    (tmp_path / "ok.wav").write_bytes(_wav_bytes())
    rate, samples = read_wav(tmp_path / "ok.wav")
    assert rate == 8000 and samples.shape == (4000,)


def test_read_only_cache_is_a_clean_error(tmp_path, monkeypatch):
    from rnnbench.errors import DataError
    from rnnbench.tasks import cache

    root = tmp_path / "cache"
    root.mkdir()
    monkeypatch.setenv("RNNBENCH_CACHE", str(root))
    undo = read_only(root)
    try:
        with pytest.raises(DataError) as info:
            cache.cached_arrays("ns", "key", lambda: {"x": np.arange(3)})
    finally:
        undo()
    assert "cannot be written" in str(info.value) and "RNNBENCH_CACHE" in str(info.value)


def test_folder_for_file_and_file_for_folder_say_so(tmp_path, inputs):
    from rnnbench.errors import DataError
    from rnnbench.tasks.speech import find_wavs, read_wav

    with pytest.raises(DataError, match="is a file; task=speech_audio needs a folder"):
        find_wavs(inputs["csv"], "auto")
    with pytest.raises(DataError, match="is a folder where a .wav file was expected"):
        read_wav(inputs["wavs"])
    from rnnbench.config import to_object
    from rnnbench.tasks import get_task

    cfg = to_object(_compose("task=timeseries_csv", f"task.path={inputs['wavs']}",
                             "task.column=value"))
    with pytest.raises(DataError, match="is a folder; task=timeseries_csv needs a CSV file"):
        get_task(cfg.task).prepare(8, 0)


def test_out_of_memory_is_a_clean_hardware_error():
    from types import SimpleNamespace

    from rnnbench.errors import HardwareError
    from rnnbench.train import out_of_memory

    cfg = SimpleNamespace(model=SimpleNamespace(units=16384, layers=4),
                          train=SimpleNamespace(batch_size=512),
                          hardware=SimpleNamespace(name="cpu"))
    with pytest.raises(HardwareError, match="out of memory while building.*model.units=16384"):
        with out_of_memory(cfg, "building"):
            np.empty((1 << 40,), dtype=np.float64)  # 8 TiB: NumPy raises MemoryError
    with pytest.raises(ValueError):  # other errors pass through unchanged
        with out_of_memory(cfg, "building"):
            raise ValueError("not memory")


@pytest.mark.slow
def test_worker_without_a_chief_gives_up_with_a_message(tmp_path):
    start = time.monotonic()
    proc = run_cli(["debug=smoke", "tuner=random", "tuner.max_trials=1",
                    "tuner.distributed.role=worker", "tuner.distributed.address=127.0.0.1",
                    f"tuner.distributed.port={free_port()}", "tuner.distributed.wait_s=3",
                    f"tuner.directory={tmp_path / 'tuner'}"], tmp_path, module="tune_main",
                   timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "no sweep chief answered" in proc.stderr and "Traceback" not in proc.stderr
    assert time.monotonic() - start < 200


# ---- 7. honest messages -----------------------------------------------------------------------

def test_nan_from_extreme_data_blames_the_data_not_only_the_learning_rate():
    import tensorflow as tf

    from rnnbench.train import nonfinite_advice

    class Data:
        def __init__(self, scale):
            x = np.random.default_rng(0).normal(size=(64, 10, 1)).astype("float32") * scale
            self.train = tf.data.Dataset.from_tensor_slices((x, x[:, -1])).batch(16)

    from types import SimpleNamespace

    cfg = SimpleNamespace(optimizer=SimpleNamespace(lr=1e-3, clipnorm=1.0))
    extreme = nonfinite_advice(cfg, Data(1e30))
    assert "training data holds values as large as" in extreme and "fix or scale" in extreme
    sane = nonfinite_advice(cfg, Data(1.0))
    assert "data looks sane" in sane and "optimizer.lr" in sane


def test_nan_advice_reads_the_weighted_batches_of_chorales_and_lm_char(tmp_path):
    """chorales and lm_char hand Keras ``(x, y, sample_weight)``: the advice after a NaN
    loss read them as pairs and ended the run in a bare ValueError instead of the message
    (seen on lm_char with IndRNN at a large learning rate)."""
    from types import SimpleNamespace

    from rnnbench.tasks import get_task
    from rnnbench.tasks.configs import ChoralesConfig, LanguageConfig
    from rnnbench.train import data_extremes, nonfinite_advice

    text = tmp_path / "corpus.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    cfg = SimpleNamespace(optimizer=SimpleNamespace(lr=0.5, clipnorm=None))
    for task_cfg in (ChoralesConfig(name="chorales", limit=3),
                     LanguageConfig(name="lm_char", corpus="path", path=str(text), bptt=7)):
        data = get_task(task_cfg).prepare(batch_size=2, seed=0)
        assert len(next(iter(data.train))) == 3  # the weighted form this test is about
        bad, top = data_extremes(data)
        assert bad == 0 and 0 < top < 1e4
        advice = nonfinite_advice(cfg, data)
        assert "data looks sane" in advice and "optimizer.lr (now 0.5)" in advice


@pytest.mark.slow
def test_ctrl_c_before_the_run_exists_claims_nothing(tmp_path):
    """A tracking server that accepts the connection but never answers holds the run in
    its start-up check; Ctrl-C there must not claim that a run was closed."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        proc = subprocess.Popen(
            [sys.executable, "-m", "rnnbench", "debug=smoke", "tracking.timeout_s=120",
             f"tracking.uri=http://127.0.0.1:{port}"],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=cli_env())
        try:
            listener.settimeout(240)
            conn, _ = listener.accept()  # the run is in its start-up check now
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
            conn.close()
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "before any MLflow run was opened: nothing was recorded" in err
    assert "KILLED" not in err and "Traceback" not in err


# ---- the table of docs/reliability.md ----------------------------------------------------------

def test_every_test_the_reliability_table_names_exists():
    import re

    table = (ROOT / "docs" / "reliability.md").read_text()
    rows = [line for line in table.splitlines() if re.match(r"^\| *\d+ *\|", line)]
    assert len(rows) >= 60
    named = re.findall(r"`(tests/test_\w+\.py)::(\w+)", table)
    assert named
    for path, name in named:
        text = (ROOT / path).read_text()
        assert re.search(rf"^(async )?def {name}\(", text, re.M), f"{path}::{name} is missing"


def test_retry_locked_retries_only_a_lock_and_gives_up_with_the_last_error(monkeypatch):
    import sqlite3

    import sqlalchemy.exc
    import tenacity

    from rnnbench.tracking import store

    monkeypatch.setattr(tenacity.nap, "sleep", lambda s: None)  # no waiting in the test
    locked = sqlalchemy.exc.OperationalError("COMMIT", {}, sqlite3.OperationalError(
        "database is locked"))
    calls = []

    def flaky(n_locks):
        def write():
            calls.append(1)
            if len(calls) <= n_locks:
                raise locked
            return "written"
        return store.retry_locked(write)

    assert flaky(3)() == "written" and len(calls) == 4
    calls.clear()
    with pytest.raises(sqlalchemy.exc.OperationalError, match="locked"):
        flaky(10 ** 6)()
    assert len(calls) == store.LOCK_RETRIES
    calls.clear()

    @store.retry_locked
    def broken():
        calls.append(1)
        raise ValueError("not a lock")

    with pytest.raises(ValueError):
        broken()
    assert len(calls) == 1
