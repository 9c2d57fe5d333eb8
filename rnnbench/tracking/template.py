"""The empty SQLite store that new stores are copied from.

MLflow's migrations take some seconds of CPU on every new SQLite store (the first run in
a folder, each test's own store); a copy of a migrated file takes milliseconds. The
template is made once per MLflow version in the cache folder (``RNNBENCH_CACHE``, see
:mod:`rnnbench.tasks.cache`). :func:`rnnbench.tracking.store.init_sqlite_store` uses it
and falls back to MLflow's own set-up where there is none or it does not open.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

import mlflow

from rnnbench.errors import RnnbenchError


def open_once(uri: str) -> None:
    """Open ``uri`` once with MLflow (which creates the schema of an empty file, and the
    default experiment of a store without one), then let go of the file."""
    try:
        mlflow.MlflowClient(uri).search_experiments(max_results=1)
    finally:
        _forget_engine(uri)


def _forget_engine(uri: str) -> None:
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    engine = SqlAlchemyStore._engine_map.pop(uri, None)
    if engine is not None:
        engine.dispose()


def empty_store_template() -> Path | None:
    """An empty SQLite store with this MLflow's whole schema, made once per MLflow version
    in the cache (``RNNBENCH_CACHE``), or None where the cache cannot hold one.

    MLflow's migrations take some seconds of CPU on every new store; a copy of a migrated
    file takes milliseconds. The template holds what the migrations write (the schema,
    ``alembic_version``, the default workspace) but not the default experiment, whose
    artifact root MLflow sets from where the store is made: it adds it when the copy is
    first opened, as it does on a new file. Made under a temporary name and renamed into place,
    so that no process ever copies half a template."""
    from rnnbench.tasks.cache import cache_root

    try:
        folder = cache_root() / "mlflow-stores"
        folder.mkdir(exist_ok=True)
    except (RnnbenchError, OSError):
        return None
    path = folder / f"empty-mlflow-{mlflow.__version__}.db"
    if path.exists():
        return path
    tmp = folder / f".{path.name}.{os.getpid()}.creating"
    uri = f"sqlite:///{tmp}"
    try:
        open_once(uri)
        with contextlib.closing(sqlite3.connect(tmp)) as con:
            with con:
                con.execute("DELETE FROM experiments")
            con.execute("VACUUM")
        os.replace(tmp, path)
        return path
    except Exception:  # a full or read-only cache: the store is made without a template
        return None
    finally:
        tmp.unlink(missing_ok=True)
