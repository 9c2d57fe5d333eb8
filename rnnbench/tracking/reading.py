"""Reading the record: runs by experiment, filter and status, a run's metric history and
artifacts, and the small writes that sweeps make on runs they did not open (closing an
orphan, counting a reused run in a later sweep).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import mlflow
from mlflow.exceptions import MlflowException

from rnnbench.errors import TrackingError
from rnnbench.redaction import redact as redact_uri
from rnnbench.tracking.schema import Tags
from rnnbench.tracking.store import retry_locked


@retry_locked
def run_status(run_id: str) -> str:
    return mlflow.MlflowClient().get_run(run_id).info.status


@retry_locked
def search_runs(experiments: Iterable[str] | None = None, filter_string: str = "",
                statuses: Iterable[str] | None = None, max_results: int = 50000) -> list:
    """Runs of the named experiments (all experiments when None), oldest first, as
    MLflow ``Run`` entities. ``statuses`` keeps only those statuses."""
    client = mlflow.MlflowClient()
    if experiments is None:
        exp_ids = [e.experiment_id for e in client.search_experiments()]
    else:
        exp_ids = []
        for name in experiments:
            exp = client.get_experiment_by_name(name)
            if exp is not None:
                exp_ids.append(exp.experiment_id)
    if not exp_ids:
        return []
    runs, token = [], None
    while True:
        page = client.search_runs(exp_ids, filter_string=filter_string,
                                  max_results=min(max_results, 5000), page_token=token,
                                  order_by=["attributes.start_time ASC"])
        runs.extend(page)
        token = page.token
        if not token or len(runs) >= max_results:
            break
    if statuses is not None:
        keep = set(statuses)
        runs = [r for r in runs if r.info.status in keep]
    return runs


@retry_locked
def metric_history(run_id: str, key: str) -> list[tuple[int, float]]:
    """``(step, value)`` pairs of one metric, by step."""
    hist = mlflow.MlflowClient().get_metric_history(run_id, key)
    return sorted((m.step, m.value) for m in hist)


@retry_locked
def download_artifacts(run_id: str, path: str, dst: str | Path) -> Path:
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path,
                                                    dst_path=str(dst)))


@retry_locked
def list_artifacts(run_id: str, path: str | None = None) -> list[str]:
    return [f.path for f in mlflow.MlflowClient().list_artifacts(run_id, path)]


@retry_locked
def close_run(run_id: str, status: str, tags: dict[str, str] | None = None) -> None:
    """End a run left open by a dead process (used when a sweep resumes)."""
    client = mlflow.MlflowClient()
    for k, v in (tags or {}).items():
        client.set_tag(run_id, k, redact_uri(str(v)))
    client.set_terminated(run_id, status)


def find_by_config(experiment: str, config_hash: str, status: str = "FINISHED") -> list:
    """Runs of ``experiment`` whose config hash tag is ``config_hash``, ended ``status``."""
    return search_runs([experiment], f"tags.{Tags.CONFIG_HASH} = '{config_hash}'",
                       statuses=[status])


@retry_locked
def experiment_names() -> dict[str, str]:
    """``{name: experiment_id}`` of the store's active experiments."""
    return {e.name: e.experiment_id for e in mlflow.MlflowClient().search_experiments()}


@retry_locked
def get_run(run_id: str) -> Any | None:
    """The MLflow ``Run`` with this id, or None when the store has no such run."""
    try:
        return mlflow.MlflowClient().get_run(run_id)
    except MlflowException:
        return None


def find_runs(experiments: Iterable[str] | None, filter_string: str = "") -> list:
    """Like :func:`search_runs`, but a filter MLflow cannot parse is a ``ConfigError``
    quoting MLflow's reason."""
    from rnnbench.errors import ConfigError

    try:
        return search_runs(experiments, filter_string)
    except MlflowException as exc:
        reason = exc.message.strip().rstrip(".") + "."
        if exc.error_code in ("INVALID_PARAMETER_VALUE", "BAD_REQUEST"):
            raise ConfigError(
                f"--filter {filter_string!r} is not a valid MLflow filter: {reason} "
                f"Write it like tags.cell = 'lstm' and params.model.units = '64' and "
                f"metrics.test_mse < 1.") from None
        raise TrackingError(f"reading runs failed: {exc.message}") from None


@retry_locked
def child_runs(parent_run_id: str, filter_string: str = "") -> list:
    """Runs nested under ``parent_run_id`` (oldest first), optionally filtered further."""
    parent = get_run(parent_run_id)
    if parent is None:
        return []
    name = mlflow.MlflowClient().get_experiment(parent.info.experiment_id).name
    query = f"tags.`{Tags.PARENT_RUN_ID}` = '{parent_run_id}'"
    if filter_string:
        query += f" and {filter_string}"
    return search_runs([name], query)


def sweeps_tag(sweep_id: str, existing: str | None = None) -> str:
    """The ``sweep_ids`` tag value with ``sweep_id`` added."""
    ids = [s for s in (existing or "").split(";") if s]
    if sweep_id not in ids:
        ids.append(sweep_id)
    return ";" + ";".join(ids) + ";"


@retry_locked
def link_to_sweep(run_id: str, sweep_id: str) -> None:
    """Count a FINISHED run that a later sweep reused (``skip_finished``) in that sweep too:
    its ``sweep_ids`` tag gets the new sweep's id (``sweep_id`` keeps the first)."""
    client = mlflow.MlflowClient()
    tags = client.get_run(run_id).data.tags
    value = sweeps_tag(sweep_id, tags.get(Tags.SWEEP_IDS) or tags.get(Tags.SWEEP_ID))
    if value != tags.get(Tags.SWEEP_IDS):
        client.set_tag(run_id, Tags.SWEEP_IDS, value)
