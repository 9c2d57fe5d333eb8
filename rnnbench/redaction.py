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
from urllib.parse import quote, unquote

MASK = "***"
# the start of a URI: its scheme and "//"; the URI then runs to white space or a quote
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
_URI_END = re.compile(r"[\s'\"]")
_QUERY = re.compile(r"(?P<head>[?&;](?:password|passwd|pwd|token|secret)=)(?P<pw>[^&\s'\"]*)",
                    re.IGNORECASE)
# where :func:`take_secrets` keeps a database password taken off the command line
DB_PASSWORD_ENV = "RNNBENCH_TRACKING_PASSWORD"
HTTP_USER_ENV, HTTP_PASSWORD_ENV = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"


def _userinfo(uri: str) -> tuple[str, str | None, str | None, str]:
    """``(scheme://, user, password, rest)`` of one URI, as written (not decoded).

    The user information ends at the LAST ``@`` of the URI: a password may hold ``/``,
    ``?``, ``#``, ``:`` or ``@`` written as they are, which the standard URI grammar (and
    :func:`urllib.parse.urlsplit`) would take for the end of the host. The user ends at the
    first ``:``. Without ``@`` there is no user information (user and password None)."""
    m = _SCHEME.match(uri)
    if not m:
        return "", None, None, uri
    head, after = m[0], uri[m.end():]
    info, at, rest = after.rpartition("@")
    if not at:
        return head, None, None, after
    user, colon, password = info.partition(":")
    if "/" in user:  # the authority ended before any "@": the "@" is in the path
        return head, None, None, after
    return head, user, (password if colon else None), rest


def _redact_uri(uri: str) -> str:
    head, user, password, rest = _userinfo(uri)
    if not password:
        return uri
    return f"{head}{user}:{MASK}@{rest}"


def redact(text: str) -> str:
    """``text`` with every password of a URI in it replaced by ``***``.

    Each URI in ``text`` (``scheme://`` up to white space or a quote) keeps its scheme,
    user, host and path; what lies between the user's ``:`` and the last ``@`` becomes
    ``***``. A ``?password=`` (``passwd``, ``pwd``, ``token``, ``secret``) query value
    is hidden too."""
    if not isinstance(text, str) or ("@" not in text and "=" not in text):
        return text
    out, pos = [], 0
    for m in _SCHEME.finditer(text):
        if m.start() < pos:
            continue  # inside the URI just handled
        end = _URI_END.search(text, m.end())
        stop = end.start() if end else len(text)
        out += [text[pos:m.start()], _redact_uri(text[m.start():stop])]
        pos = stop
    out.append(text[pos:])
    return _QUERY.sub(lambda q: q["head"] + MASK if q["pw"] else q[0], "".join(out))


def split_credentials(uri: str) -> tuple[str, str | None, str | None]:
    """``(uri without user:password@, user, password)`` of an http(s) URI, the user and
    password decoded (``%40`` is ``@``); other URIs come back unchanged with no
    credentials. The credentials end at the last ``@``."""
    if not uri.startswith(("http://", "https://")):
        return uri, None, None
    head, user, password, rest = _userinfo(uri)
    if user is None:
        return uri, None, None
    return head + rest, unquote(user) or None, unquote(password) if password else None


def take_secrets(args: list[str]) -> list[str]:
    """Take passwords off command-line arguments before anything records them.

    An ``http(s)://user:pw@host`` URI loses its credentials, which go where MLflow reads
    them (``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``). A database URI keeps
    ``user:***@``, and the password goes to ``RNNBENCH_TRACKING_PASSWORD``, from which
    :func:`rnnbench.tracking.configure` puts it back when it connects. In both the
    password runs to the last ``@``, so that one holding ``@`` or ``/`` stays whole."""
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
        elif eq and _SCHEME.match(value):
            password = _userinfo(value)[2]
            if password and password != MASK:
                os.environ[DB_PASSWORD_ENV] = password
            arg = f"{key}={redact(value)}"
        elif eq:
            arg = f"{key}={redact(value)}"
        out.append(arg)
    return out


def restore_password(uri: str) -> str:
    """The URI a database driver connects with: ``user:***@`` gets back the password taken
    off the command line, and the password (given back, or written in the URI) is
    percent-encoded, so that the driver, which decodes it, reads it whole even when it
    holds ``@``, ``/``, ``?`` or ``#``."""
    head, user, password, rest = _userinfo(uri)
    if not password or head in ("http://", "https://"):
        return uri
    if password == MASK:
        password = os.environ.get(DB_PASSWORD_ENV)
        if not password:
            return uri
    return f"{head}{user}:{quote(unquote(password), safe='')}@{rest}"


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
