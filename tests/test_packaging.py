"""A real ``pip install`` of the wheel (not editable): build it from the repository, install
it into a fresh virtual environment and run the commands from a folder outside the
repository, with nothing of the checkout importable.

The fresh environment gets the dependencies through a ``.pth`` line naming this
environment's site-packages (a path line only: that folder's own ``.pth`` files, such
as an editable install of rnnbench, are not run), so the test takes seconds and needs
no network; the wheel itself goes in with ``pip install --no-deps``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from helpers import ROOT, cli_env, store_runs

pytestmark = pytest.mark.slow

FAST = ["debug=smoke", "hardware.xla=off", "diagnostics.enabled=false",
        "tracking.log_model=false", "train.verbose=0"]


def build_wheel(tmp: Path) -> Path:
    """Build the wheel from a copy of the sources (the build leaves nothing in the repo)."""
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "rnnbench", src / "rnnbench", ignore=ignore)
    shutil.copytree(ROOT / "conf", src / "conf", ignore=ignore)
    dist = tmp / "dist"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "--no-build-isolation", "-q", "-w", str(dist), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    wheels = list(dist.glob("rnnbench-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    wheel = build_wheel(tmp)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; "
                                "print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # the wheel first: with the outer folder on its path pip would take the checkout's
    # editable install for rnnbench already there
    env = cli_env()
    env.pop("PYTHONPATH", None)  # nothing of the checkout is importable there
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                           "--no-deps", "-q", str(wheel)], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (site / "outer-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    work = tmp / "elsewhere"
    work.mkdir()
    return {"wheel": wheel, "venv": venv, "site": site, "work": work, "env": env}


def test_wheel_carries_every_module_and_every_config(installed):
    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "rnnbench").rglob("*.py")}
    configs = {"rnnbench/" + p.relative_to(ROOT).as_posix()
               for p in (ROOT / "conf").rglob("*.yaml")}
    assert not modules - names, f"modules left out of the wheel: {sorted(modules - names)}"
    assert not configs - names, f"configs left out of the wheel: {sorted(configs - names)}"


def test_installed_wheel_runs_a_smoke_job_outside_the_repo(installed):
    bindir, work, env = installed["venv"] / "bin", installed["work"], installed["env"]
    where = subprocess.run([str(bindir / "python"), "-c",
                            "import rnnbench, rnnbench.cli as c; print(rnnbench.__file__); "
                            "print(c.CONF_DIR)"],
                           cwd=work, capture_output=True, text=True, env=env, timeout=60)
    assert where.returncode == 0, where.stderr[-2000:]
    module, conf = where.stdout.split()
    assert module.startswith(str(installed["site"])), module  # the wheel, not the checkout
    assert conf == str(installed["site"] / "rnnbench" / "conf")

    run = subprocess.run([str(bindir / "rnnbench"), *FAST], cwd=work, capture_output=True,
                         text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert "MLflow run" in run.stdout
    runs = store_runs(work)
    assert [r.info.status for r in runs] == ["FINISHED"]
    assert runs[0].data.metrics["test_mse"] > 0

    report = subprocess.run([str(bindir / "rnnbench-report"), "--experiment", "co2",
                             "--out", "r"], cwd=work, capture_output=True, text=True, env=env,
                            timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    assert (work / "r" / "report.html").is_file()
    cells = subprocess.run([str(bindir / "rnnbench"), "cells"], cwd=work, capture_output=True,
                           text=True, env=env, timeout=120)
    assert cells.returncode == 0 and "janet" in cells.stdout, cells.stderr[-2000:]
