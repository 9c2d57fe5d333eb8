"""Passwords never leave the process: the one function that hides them, and the step that
takes them off the command line before Hydra records it.

A password may come in a tracking URI (``postgresql://user:pw@host/db``,
``http://user:pw@host``) or in its query (``?password=pw``). :func:`redact` replaces it
with ``***`` and keeps the user, host and path, so the store can still be recognised.
Every writer (MLflow params, tags and artifacts, Hydra's ``.hydra/*.yaml``, the sweep's
``mlflow_sweep.json``, reports, the console, error messages) passes its text through it.

Light on purpose: the CLI calls it before the config is composed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

MASK = "***"
# scheme://user:password@ (the password ends at the first @ or white space)
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s'\"]*):(?P<pw>[^@\s'\"/]*)@")
_QUERY = re.compile(r"(?P<head>[?&;](?:password|passwd|pwd|token|secret)=)(?P<pw>[^&\s'\"]*)",
                    re.IGNORECASE)
# where :func:`take_secrets` keeps a database password taken off the command line
DB_PASSWORD_ENV = "RNNBENCH_TRACKING_PASSWORD"
HTTP_USER_ENV, HTTP_PASSWORD_ENV = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"


def redact(text: str) -> str:
    """``text`` with every password of a URI in it replaced by ``***``."""
    if not isinstance(text, str) or ("@" not in text and "=" not in text):
        return text
    text = _USERINFO.sub(lambda m: f"{m['head']}:{MASK}@" if m["pw"] else m[0], text)
    return _QUERY.sub(lambda m: m["head"] + MASK if m["pw"] else m[0], text)


def split_credentials(uri: str) -> tuple[str, str | None, str | None]:
    """``(uri without user:password@, user, password)`` of an http(s) URI; other URIs
    come back unchanged with no credentials."""
    m = re.match(r"^(https?://)([^/@\s]*)@(.*)$", uri)
    if not m:
        return uri, None, None
    user, _, password = m[2].partition(":")
    from urllib.parse import unquote

    return m[1] + m[3], unquote(user) or None, unquote(password) if password else None


def take_secrets(args: list[str]) -> list[str]:
    """Take passwords off command-line arguments before anything records them.

    An ``http(s)://user:pw@host`` URI loses its credentials, which go where MLflow reads
    them (``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``). A database URI keeps
    ``user:***@``, and the password goes to ``RNNBENCH_TRACKING_PASSWORD``, from which
    :func:`rnnbench.tracking.configure` puts it back when it connects."""
    out = []
    for arg in args:
        key, eq, value = arg.partition("=")
        if eq and value.startswith(("http://", "https://")) and "@" in value:
            bare, user, password = split_credentials(value)
            if user:
                os.environ[HTTP_USER_ENV] = user
            if password:
                os.environ[HTTP_PASSWORD_ENV] = password
            arg = f"{key}={bare}"
        elif eq:
            m = _USERINFO.search(value)
            if m and m["pw"] and m["pw"] != MASK:
                os.environ[DB_PASSWORD_ENV] = m["pw"]
            arg = f"{key}={redact(value)}"
        out.append(arg)
    return out


def restore_password(uri: str) -> str:
    """A database URI with ``user:***@`` gets the password taken off the command line."""
    password = os.environ.get(DB_PASSWORD_ENV)
    if password and f":{MASK}@" in uri:
        return uri.replace(f":{MASK}@", f":{password}@", 1)
    return uri


def redact_files(folder: Path, pattern: str = "*.yaml") -> None:
    """Rewrite the files of ``folder`` matching ``pattern`` (Hydra's record of a job) with
    their passwords hidden."""
    for path in Path(folder).glob(pattern):
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError):
            continue
        clean = redact(text)
        if clean != text:
            path.write_text(clean)
