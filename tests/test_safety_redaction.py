"""No secret reaches a file or the console: passwords holding every URI-special
character are hidden by the one redaction function, taken off the command line whole, and
given back whole to the driver that connects."""

from __future__ import annotations

import os

import pytest

from helpers import cli_env, run_cli

# each holds characters that end a host, a path or a query in a URI, or that are encoded
PASSWORDS = ["s3cr/et", "s3c@ret", "a:b", "q?uery", "h#ash", "50%off", "p%40ss", "a+b",
             "pässwörd-🔑", "x/y@z:w?v#u%t+s"]
URIS = ["postgresql://alice:{pw}@db.example:5432/mlflow?sslmode=require",
        "mysql+pymysql://alice:{pw}@db/mlflow",
        "http://alice:{pw}@127.0.0.1:5000",
        "https://alice:{pw}@mlflow.example/path"]


@pytest.fixture
def clean_env(monkeypatch):
    from rnnbench import redaction

    for key in (redaction.DB_PASSWORD_ENV, redaction.HTTP_USER_ENV,
                redaction.HTTP_PASSWORD_ENV):
        monkeypatch.delenv(key, raising=False)


@pytest.mark.parametrize("pw", PASSWORDS)
def test_redact_hides_a_password_with_uri_special_characters(pw):
    from rnnbench.redaction import redact

    for template in URIS:
        uri = template.format(pw=pw)
        shown = template.format(pw="***")
        assert redact(uri) == shown
        # inside a command line, a YAML line and a message
        for text in (f"rnnbench tracking.uri={uri} seed=1", f"  uri: {uri}\n",
                     f"- tracking.uri={uri}", f"opening the MLflow store {uri} failed: x"):
            hidden = redact(text)
            assert pw not in hidden and shown in hidden, text


def test_redact_leaves_uris_without_a_password_alone():
    from rnnbench.redaction import redact

    from rnnbench.redaction import restore_password

    for text in ("sqlite:///mlflow.db", "http://127.0.0.1:5000", "postgresql://alice@db/m",
                 "file:///tmp/a@b", "sqlite:///C:/runs/a@b.db", "http://host/x:y@z",
                 "mail alice@example.org", "seed=1 cell=lstm"):
        assert redact(text) == text
        assert restore_password(text) == text


@pytest.mark.parametrize("pw", PASSWORDS)
def test_the_password_used_to_connect_is_whole(pw, clean_env):
    from sqlalchemy.engine import make_url

    from rnnbench.redaction import take_secrets
    from rnnbench.tracking.store import connect_uri

    (arg,) = take_secrets([f"tracking.uri=postgresql://alice:{pw}@db:5432/mlflow"])
    assert arg == "tracking.uri=postgresql://alice:***@db:5432/mlflow"
    url = make_url(connect_uri(arg.partition("=")[2]))  # what SQLAlchemy connects with
    expected = pw.replace("%40", "@")  # a %-escape in a URI is the character it encodes
    assert (url.username, url.password, url.host, url.port, url.database) == (
        "alice", expected, "db", 5432, "mlflow")

    # rnnbench-report --tracking-uri takes the URI as it is, password and all
    url = make_url(connect_uri(f"postgresql://alice:{pw}@db:5432/mlflow"))
    assert (url.username, url.password, url.host) == ("alice", expected, "db")

    (arg,) = take_secrets([f"tracking.uri=http://alice:{pw}@127.0.0.1:5000"])
    assert arg == "tracking.uri=http://127.0.0.1:5000"
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "alice"
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == expected


@pytest.mark.slow
def test_a_run_shows_and_writes_no_password(tmp_path):
    """A real run that fails fast at connecting (no PostgreSQL driver or server here):
    the console, rnnbench.log and Hydra's .hydra/*.yaml hold no password."""
    pw = "x/y@z:w?v#u%t+s-pässwörd"
    env = cli_env()
    for key in ("RNNBENCH_TRACKING_PASSWORD", "MLFLOW_TRACKING_USERNAME",
                "MLFLOW_TRACKING_PASSWORD"):
        env.pop(key, None)
    proc = run_cli(["debug=smoke", f"tracking.uri=postgresql://alice:{pw}@127.0.0.1:9/mlflow"],
                   tmp_path, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "postgresql://alice:***@127.0.0.1:9/mlflow" in proc.stderr
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    names = {p.name for p in written}
    assert {"rnnbench.log", "overrides.yaml", "config.yaml", "hydra.yaml"} <= names, names
    for secret in (pw, "x/y", "t+s-pässwörd"):
        assert secret not in proc.stdout + proc.stderr
        leaked = [str(p) for p in written if secret.encode() in p.read_bytes()]
        assert leaked == [], leaked
