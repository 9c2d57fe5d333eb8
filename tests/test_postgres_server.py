"""An MLflow tracking server on PostgreSQL, really run: a private PostgreSQL cluster on
127.0.0.1, ``mlflow server`` started with the flags of ``docker/compose.yaml``, and a
small ``rnnbench`` multirun logged through it.

Needs Debian's PostgreSQL server (``.ci/install-postgres.sh``) and psycopg2.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pg_server import mlflow_server, postgres  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.server, pytest.mark.slow]


def test_multirun_logs_through_mlflow_server_on_postgres(mlflow_server):
    import mlflow
    import psycopg2

    url = mlflow_server["url"]
    jobs = mlflow_server["work"] / "jobs"
    jobs.mkdir()
    cmd = [str(Path(sys.executable).parent / "rnnbench"), "-m", "cell=rnn,lstm", "debug=smoke",
           "hardware.xla=off", "diagnostics.enabled=false", "tracking=server",
           f"tracking.uri={url}", "tracking.experiment=pg-multirun"]
    out = subprocess.run(cmd, cwd=jobs, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    client = mlflow.MlflowClient(tracking_uri=url)
    exp = client.get_experiment_by_name("pg-multirun")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.data.tags["cell"] for r in runs) == ["lstm", "rnn"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert len({r.data.tags["sweep_id"] for r in runs}) == 1  # one multirun
    for run in runs:
        tags, metrics = run.data.tags, run.data.metrics
        assert tags["backend"] == "tensorflow" and tags["cudnn.rnn_0"] == "false"
        assert tags["device_type"] == "cpu" and tags["xla"] in ("on", "off")
        assert metrics["test_mse"] > 0 and "val_loss" in metrics
        # artifacts go through the server (--serve-artifacts) into --artifacts-destination
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")
        mlflow.set_tracking_uri(url)  # MLflow looks the logged model "model" up there
        names = [f.path for f in client.list_artifacts(run.info.run_id, "model")]
        assert "model/model.keras" in names and "model/MLmodel" in names
        stored = list(mlflow_server["artifacts"].rglob(f"{run.info.run_id}/artifacts/model/model.keras"))
        assert len(stored) == 1 and stored[0].stat().st_size > 1000

    # the records are in PostgreSQL, not in a local file
    conn = psycopg2.connect(host="127.0.0.1", port=mlflow_server["postgres"]["port"],
                            user="postgres", dbname="mlflow")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT r.status, t.value FROM runs r JOIN tags t "
                        "ON t.run_uuid = r.run_uuid AND t.key = 'cell' "
                        "JOIN experiments e ON e.experiment_id = r.experiment_id "
                        "WHERE e.name = 'pg-multirun' ORDER BY t.value")
            assert cur.fetchall() == [("FINISHED", "lstm"), ("FINISHED", "rnn")]
    finally:
        conn.close()
    assert not (jobs / "mlflow.db").exists()
