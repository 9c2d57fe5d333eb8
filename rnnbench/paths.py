"""Paths built from config values, and the files rnnbench writes and deletes there.

The rule: rnnbench never deletes or overwrites anything outside the folder it made for
that purpose. Every path built from a config value goes through :func:`inside`, which
resolves it (symlinks included) and refuses one that is not strictly inside its root;
a folder is deleted only through :func:`remove_made_folder`, which also wants the
marker file that rnnbench wrote there. State files are written through
:func:`atomic_write_text`: a reader sees the old file or the new one, never a part.

Light: no Keras, no MLflow (the config checks import it).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from rnnbench.errors import ConfigError


def check_name(key: str, value: str, fix: str) -> None:
    """Refuse a config value that is meant to be one folder or file name but is empty,
    ``.``, ``..``, absolute, or has a path separator. ``fix`` ends the message."""
    bad = (not value or value in (".", "..") or os.path.isabs(value)
           or "/" in value or "\\" in value or "\0" in value)
    if bad:
        raise ConfigError(
            f"{key}={value!r} is not allowed: it must be a plain name (letters, digits, "
            f"'_', '-', '.'), not '.', '..', a path or empty, because rnnbench makes a "
            f"folder of that name and may delete it again. {fix}")


def inside(root: str | os.PathLike, name: str, key: str, fix: str) -> Path:
    """``root/name`` resolved, checked to be strictly inside ``root`` (resolved too).

    Refuses (ConfigError naming ``key``) a ``name`` that is not a plain name (see
    :func:`check_name`) or whose resolved path leaves ``root``, e.g. through a symlink.
    """
    check_name(key, name, fix)
    base = Path(root).expanduser().resolve()
    path = (base / name).resolve()
    if path == base or not path.is_relative_to(base):
        raise ConfigError(
            f"{key}={name!r}: {base / name} resolves to {path}, outside {base} (a symbolic "
            f"link?). rnnbench only writes and deletes inside the folder it made. {fix}")
    return path


def remove_made_folder(path: Path, markers: tuple[str, ...], key: str, fix: str) -> bool:
    """Delete the folder ``path`` when it is a real folder (not a link) holding one of
    the ``markers`` files rnnbench writes there. Returns whether something was deleted;
    a folder without a marker is refused (ConfigError naming ``key``) and left alone."""
    if not os.path.lexists(path):
        return False
    if path.is_symlink() or not path.is_dir():
        raise ConfigError(f"{key}: {path} is not a folder rnnbench made (it is a link or a "
                          f"file); rnnbench does not delete it. {fix}")
    if not any((path / m).is_file() for m in markers):
        raise ConfigError(
            f"{key}: {path} exists but is not a folder rnnbench made (none of "
            f"{', '.join(markers)} in it); rnnbench does not delete it. {fix}")
    shutil.rmtree(path)
    return True


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` all or nothing: a temporary file in the same folder,
    flushed to disk, then renamed over ``path``. An OSError (a full disk, a read-only
    folder) leaves ``path`` as it was and no temporary file behind."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
