"""MLflow's conventions, kept by every run and sweep (no MLflow import here).

- Where the record goes: the command line (``tracking.uri=``, ``tracking=``,
  ``tracking.experiment=``) comes first, then MLflow's environment variables
  ``MLFLOW_TRACKING_URI`` and ``MLFLOW_EXPERIMENT_NAME``, then the config's values
  (``conf/tracking/``, an ``experiment=`` overlay, else the task's name). A line says so
  when the command line overrides a variable that says otherwise.
- System tags MLflow's UI shows: ``mlflow.user`` ("Created by"), ``mlflow.source.name``
  and ``mlflow.source.type`` ("Source"), ``mlflow.source.git.commit``.
- Params under the names people filter by (``params.cell = 'lstm'``), besides the
  flattened config's dotted keys (``cell.name``).
"""

from __future__ import annotations

import getpass
import os
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ENV_URI = "MLFLOW_TRACKING_URI"
ENV_EXPERIMENT = "MLFLOW_EXPERIMENT_NAME"


def _keys(overrides: list[str]) -> set[str]:
    return {o.split("=", 1)[0].lstrip("+~") for o in overrides if "=" in o}


def shown(uri: str) -> str:
    """``uri`` with any password replaced by ``***``."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def apply_environment(cfg: Any, overrides: list[str], say: Any = print) -> None:
    """Set ``cfg.tracking.uri`` / ``cfg.tracking.experiment`` (a composed DictConfig) by
    the precedence command line > environment > config."""
    keys = _keys(overrides)
    env_uri = os.environ.get(ENV_URI, "").strip()
    if env_uri and env_uri != cfg.tracking.uri:
        if keys & {"tracking.uri", "tracking"}:
            say(f"rnnbench: tracking.uri={shown(cfg.tracking.uri)} from the command line "
                f"overrides {ENV_URI}={shown(env_uri)}")
        else:
            cfg.tracking.uri = env_uri
    env_exp = os.environ.get(ENV_EXPERIMENT, "").strip()
    if env_exp and env_exp != cfg.tracking.experiment:
        if "tracking.experiment" in keys:
            say(f"rnnbench: tracking.experiment={cfg.tracking.experiment} from the command "
                f"line overrides {ENV_EXPERIMENT}={env_exp}")
        else:
            cfg.tracking.experiment = env_exp


def system_tags(command: str, commit: str | None) -> dict[str, str]:
    """MLflow's system tags for a run started by ``command`` at git ``commit``."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name in this environment (some containers)
        user = None
    tags = {"mlflow.source.name": (command.split() or ["rnnbench"])[0],
            "mlflow.source.type": "LOCAL"}
    if user:
        tags["mlflow.user"] = user
    if commit:
        tags["mlflow.source.git.commit"] = commit.removesuffix("-dirty")
    return tags


# plain names that repeat a dotted key (reports compare runs by the dotted keys)
PLAIN_PARAMS = ("task", "cell", "units", "layers", "optimizer", "lr", "batch_size",
                "hardware", "backend")


def plain_params(cfg: Any, task_name: str) -> dict[str, Any]:
    """The choices people filter runs by, under plain names (``PLAIN_PARAMS``)."""
    return {"task": task_name, "cell": cfg.cell.name, "units": cfg.model.units, "layers": cfg.model.layers,
            "optimizer": cfg.optimizer.name, "lr": cfg.optimizer.lr,
            "batch_size": cfg.train.batch_size, "hardware": cfg.hardware.name,
            "backend": cfg.backend.name}
