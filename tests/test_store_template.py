"""New SQLite stores are copies of an empty migrated one (rnnbench/tracking/template.py):
the copy must be the store MLflow itself makes, and a template that is missing, broken
or cannot be written must never stop a store from being made."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import mlflow
import mlflow.store.db.utils as db_utils
import pytest

from rnnbench.tracking.store import init_sqlite_store


def dump(db: Path) -> tuple[set[tuple], dict[str, list[tuple]]]:
    """The schema statements and every table's rows, the default experiment's times
    left out (they are the moment it was made)."""
    con = sqlite3.connect(db)
    try:
        # each statement as its sorted lines: MLflow's own migrations write a table's
        # constraints in an order that depends on the process's hash seed
        schema = {tuple(sorted(line.strip().rstrip(",").strip() for line in sql.splitlines()))
                  for (sql,) in con.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL")}
        rows = {}
        for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            cur = con.execute(f'SELECT * FROM "{table}" ORDER BY 1')
            names = [d[0] for d in cur.description]
            rows[table] = [tuple(v for n, v in zip(names, row)
                                 if n not in ("creation_time", "last_update_time"))
                           for row in cur]
        return schema, rows
    finally:
        con.close()


@pytest.fixture
def migrations(monkeypatch):
    """Counts MLflow's schema set-ups (all its migrations) in this process."""
    calls = []
    real = db_utils._initialize_tables
    monkeypatch.setattr(db_utils, "_initialize_tables",
                        lambda engine: (calls.append(engine.url), real(engine))[1])
    return calls


def make_in(folder: Path, monkeypatch) -> Path:
    folder.mkdir()
    monkeypatch.chdir(folder)  # the default experiment's artifact root is ./mlruns
    init_sqlite_store(f"sqlite:///{folder / 'mlflow.db'}")
    return folder / "mlflow.db"


def test_a_store_copied_from_the_template_is_the_store_mlflow_makes(tmp_path, monkeypatch,
                                                                    migrations):
    monkeypatch.setenv("RNNBENCH_CACHE", str(tmp_path / "cache"))
    first = make_in(tmp_path / "first", monkeypatch)
    assert len(migrations) == 1  # the template's
    template = tmp_path / "cache" / "mlflow-stores" / f"empty-mlflow-{mlflow.__version__}.db"
    assert template.is_file()
    assert dump(template)[1]["experiments"] == []

    copied = make_in(tmp_path / "copied", monkeypatch)
    assert len(migrations) == 1  # no migration ran for the second store

    (tmp_path / "mlflow_own").mkdir()
    monkeypatch.chdir(tmp_path / "mlflow_own")
    own = tmp_path / "mlflow_own" / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{own}").search_experiments(max_results=1)
    assert len(migrations) == 2

    schema, rows = dump(copied)
    own_schema, own_rows = dump(own)
    assert schema == own_schema and len(schema) > 50
    [experiment] = rows.pop("experiments")
    [own_experiment] = own_rows.pop("experiments")
    assert rows == own_rows  # alembic_version, the default workspace, empty tables
    moved = tuple(v.replace(str(tmp_path / "mlflow_own"), str(tmp_path / "copied"))
                  if isinstance(v, str) else v for v in own_experiment)
    assert experiment == moved
    assert experiment[1] == "Default" and experiment[2] == str(tmp_path / "copied" / "mlruns" / "0")
    assert dump(first)[1]["experiments"][0][2] == str(tmp_path / "first" / "mlruns" / "0")

    # and the copy is a working store
    client = mlflow.MlflowClient(f"sqlite:///{copied}")
    run = client.create_run(client.create_experiment("e"))
    client.log_metric(run.info.run_id, "m", 1.5)
    assert client.get_run(run.info.run_id).data.metrics == {"m": 1.5}


def test_a_broken_template_is_made_anew_and_the_store_still_made(tmp_path, monkeypatch,
                                                                  migrations):
    monkeypatch.setenv("RNNBENCH_CACHE", str(tmp_path / "cache"))
    template = tmp_path / "cache" / "mlflow-stores" / f"empty-mlflow-{mlflow.__version__}.db"
    template.parent.mkdir(parents=True)
    template.write_bytes(b"not a database, half a copy")
    db = make_in(tmp_path / "a", monkeypatch)
    assert mlflow.MlflowClient(f"sqlite:///{db}").get_experiment("0").name == "Default"
    assert not template.exists()  # the broken one is gone, and the next store makes one
    make_in(tmp_path / "b", monkeypatch)
    assert template.is_file() and dump(template)[1]["experiments"] == []
    make_in(tmp_path / "c", monkeypatch)
    assert len(migrations) == 2  # store a (no template to copy), the new template


def test_a_cache_that_cannot_be_written_still_gives_a_store(tmp_path, monkeypatch, migrations):
    blocker = tmp_path / "a-file"
    blocker.write_text("the cache folder cannot be made under a file")
    monkeypatch.setenv("RNNBENCH_CACHE", str(blocker / "cache"))
    db = make_in(tmp_path / "a", monkeypatch)
    assert mlflow.MlflowClient(f"sqlite:///{db}").get_experiment("0").name == "Default"
    assert len(migrations) == 1
    assert not list((tmp_path / "a").glob(".*creating"))
