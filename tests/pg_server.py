"""A private PostgreSQL cluster on 127.0.0.1 and an ``mlflow server`` on it, started with
the flags of ``docker/compose.yaml``: module-scoped fixtures for the tests that log
through a tracking server on PostgreSQL (tests/test_postgres_server.py,
tests/test_slurm.py). Needs Debian's PostgreSQL server (``.ci/install-postgres.sh``)
and psycopg2; skipped with that hint where they are absent."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker" / "compose.yaml"


def _pg_bindir() -> Path | None:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    which = shutil.which("initdb")
    if which:
        candidates.insert(0, str(Path(os.path.realpath(which)).parent))
    for folder in candidates:
        if all(os.access(Path(folder) / tool, os.X_OK) for tool in ("initdb", "pg_ctl")):
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kwargs)
    assert out.returncode == 0, f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}"
    return out


@pytest.fixture(scope="module")
def postgres():
    """A throw-away PostgreSQL cluster on 127.0.0.1:<free port> with a database ``mlflow``.

    PostgreSQL refuses to run as root, so as root the cluster belongs to the
    ``postgres`` user that Debian's package creates.
    """
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed: "
                    "run .ci/install-postgres.sh (Debian's postgresql)")
    root = Path(tempfile.mkdtemp(prefix="rnnbench-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres", "postgres")
    data, log = root / "data", root / "server.log"
    port = _free_port()
    _run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "postgres",
          "--auth=trust", "--encoding=UTF8", "--no-locale"])
    options = (f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off "
               "-c full_page_writes=off -c synchronous_commit=off")
    _run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log),
          "-w", "-t", "60", "start"])
    try:
        _run([*as_user, str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port),
              "-U", "postgres", "mlflow"])
        yield {"port": port, "uri": f"postgresql+psycopg2://postgres@127.0.0.1:{port}/mlflow"}
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast",
                        "-w", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def _compose_server_command(backend_uri: str, artifacts: Path, port: int) -> list[str]:
    """The mlflow service's command in compose.yaml, pointed at this test's database,
    artifact folder and loopback port."""
    command = list(yaml.safe_load(COMPOSE.read_text())["services"]["mlflow"]["command"])
    values = {"--backend-store-uri": backend_uri, "--artifacts-destination": str(artifacts),
              "--host": "127.0.0.1", "--port": str(port),
              "--allowed-hosts": f"127.0.0.1:{port},localhost:{port}"}
    for flag, value in values.items():
        assert flag in command, f"compose.yaml's mlflow command lacks {flag}"
        command[command.index(flag) + 1] = value
    assert "--serve-artifacts" in command
    assert command[:2] == ["mlflow", "server"]
    return [str(Path(sys.executable).parent / "mlflow"), *command[1:]]


@pytest.fixture(scope="module")
def mlflow_server(postgres):
    work = Path(tempfile.mkdtemp(prefix="rnnbench-mlflow-"))
    artifacts = work / "artifacts"
    port = _free_port()
    cmd = _compose_server_command(postgres["uri"], artifacts, port)
    log = open(work / "server.log", "w")
    proc = subprocess.Popen(cmd, cwd=work, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail("mlflow server did not start:\n" + (work / "server.log").read_text())
            time.sleep(0.5)
        yield {"url": url, "artifacts": artifacts, "work": work, "postgres": postgres}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:  # the records are in PostgreSQL already: no need for a long goodbye
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
        shutil.rmtree(work, ignore_errors=True)
