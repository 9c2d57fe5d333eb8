"""Checks of the files and folders a task reads, before anything reads them.

A path that is missing, a dangling link, a folder where a file is expected, a FIFO or a
device (reading one blocks for ever), an unreadable file, or a file of binary content
where text is expected: each is refused with one message naming the config key, the
path and the fix. :func:`check_task_files` runs these checks on the ``task`` node as
soon as the config is composed, before TensorFlow loads and before the tracking store is
touched; the task readers call the same helpers.

This module imports neither TensorFlow nor NumPy.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from rnnbench.errors import DataError

#: bytes read from the start of a file to tell text from binary content
SNIFF_BYTES = 8192


def _missing(path: Path, key: str, raw: str, what: str) -> DataError:
    if path.is_symlink():
        return DataError(f"{key}={raw} is a broken symbolic link (to {os.readlink(path)}, "
                         f"which does not exist). Point {key} at the {what} itself.")
    thing = "folder" if what == "folder" else "file"
    return DataError(f"{key}={raw}: no such {thing} (a {what} is expected). Check the path "
                     f"(relative paths are read from the folder the command runs in: "
                     f"{Path.cwd()}).")


def check_file(raw: str, key: str = "task.path", what: str = "file") -> Path:
    """``raw`` as a path to a readable regular file, or a DataError naming ``key``."""
    path = Path(raw).expanduser()
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise _missing(path, key, raw, what) from None
    except OSError as exc:
        raise DataError(f"{key}={raw} cannot be read ({exc.strerror}).") from None
    if stat.S_ISDIR(mode):
        raise DataError(f"{key}={raw} is a folder; a {what} is expected here, e.g. "
                        f"{key}={path / ('series.csv' if what == 'CSV file' else 'data.txt')}.")
    if not stat.S_ISREG(mode):
        kind = "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else \
            "a socket" if stat.S_ISSOCK(mode) else "a device" if \
            (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)) else "not a regular file"
        raise DataError(f"{key}={raw} is {kind}, not a regular file: reading it would wait "
                        f"for ever. Save the data to a file and point {key} at it.")
    _check_readable(path, key, raw)
    return path


def check_folder(raw: str, key: str = "task.path") -> Path:
    """``raw`` as a path to a readable folder, or a DataError naming ``key``."""
    path = Path(raw).expanduser()
    if not path.exists():
        raise _missing(path, key, raw, "folder")
    if not path.is_dir():
        raise DataError(f"{key}={raw} is a file; a folder is expected here (e.g. "
                        f"{key}={path.parent}).")
    if not os.access(path, os.R_OK | os.X_OK):
        raise DataError(f"{key}={raw}: the folder cannot be read (permission denied). "
                        f"Fix its permissions (chmod u+rx) or copy it elsewhere.")
    return path


def check_file_or_folder(raw: str, key: str = "task.path") -> Path:
    path = Path(raw).expanduser()
    if path.is_dir():
        return check_folder(raw, key)
    return check_file(raw, key, "file or folder")


def _check_readable(path: Path, key: str, raw: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise DataError(f"{key}={raw} cannot be read ({exc.strerror}). Fix its permissions "
                        f"(chmod u+r) or copy it elsewhere.") from None


def binary_reason(head: bytes) -> str | None:
    """Why the first bytes of a file are not text (NUL bytes, not UTF-8), or None."""
    if not head:
        return None
    nul = head.find(b"\x00")
    if nul >= 0:
        return f"it holds NUL bytes (the first at byte {nul})"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a character cut at the end of the sample
            return f"it is not UTF-8 text ({exc.reason} at byte {exc.start})"
    return None


def check_text(path: Path, key: str = "task.path") -> None:
    """Refuse a file whose start is binary content where text is expected."""
    with open(path, "rb") as f:
        head = f.read(SNIFF_BYTES)
    reason = binary_reason(head)
    if reason:
        raise DataError(f"{path} ({key}) is not a text file: {reason}. Point {key} at a "
                        f"UTF-8 text file.")


def check_task_files(task: Any) -> None:
    """The files and folders the ``task`` node names, checked before any is read.

    Args:
        task: the ``task`` node (a dataclass or a DictConfig); tasks without a ``path``
            key, or whose ``path`` is null, pass.
    """
    raw = getattr(task, "path", None)
    name = getattr(task, "name", None)
    if not raw:
        return
    raw = str(raw)
    if name == "timeseries_csv":
        check_text(check_file(raw, "task.path", "CSV file"))
    elif name in ("lm_char", "lm_word"):
        path = check_file_or_folder(raw)
        if path.is_file() and getattr(task, "corpus", None) == "path":
            check_text(path)
    elif name == "speech_audio" or name == "speech_vowels":
        check_folder(raw)
