"""The on-disk data cache: parsed data sets and downloads, under one directory.

The directory is ``$RNNBENCH_CACHE``, else the platform's user cache folder
(``platformdirs.user_cache_dir("rnnbench")``: ``$XDG_CACHE_HOME/rnnbench`` or
``~/.cache/rnnbench`` on Linux, ``~/Library/Caches/rnnbench`` on macOS). Inside it:

- ``arrays/<namespace>/<key>.npz``: parsed or tokenised data, keyed by the source's
  digest and every option that changes the result (:func:`cache_key`);
- ``downloads/<file>``: downloaded files, each checked against a fixed SHA-256.

Every entry is written to a temporary file in the same folder and renamed into place
(atomic on POSIX), then a ``.sha256`` sidecar is written the same way. An entry is used
only when its sidecar exists and matches the file's bytes; anything else (a partial
write, a crash between the two renames, a corrupted file) is deleted and rebuilt.

Building an entry or fetching a download holds an exclusive lock on ``<entry>.lock``
(``flock``), and the cache is checked again once the lock is held: two processes that
need the same entry at once (the jobs of a multirun, the workers of a sweep) build it
once, and the second one reads what the first one wrote.

Downloads that do not match their fixed SHA-256 are kept aside as ``<file>.bad`` and
raise :class:`~rnnbench.errors.DataError` naming the expected and actual hashes.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

try:
    import fcntl
except ImportError:  # not POSIX: no lock; a clash is still caught by the sidecar check
    fcntl = None  # type: ignore[assignment]

import numpy as np
import platformdirs

from rnnbench.errors import DataError

CHUNK = 1 << 20
META_KEY = "__meta__"


def cache_root() -> Path:
    """The cache directory (created on first use)."""
    env = os.environ.get("RNNBENCH_CACHE")
    if env:
        root = Path(env).expanduser()
    else:  # the platform's cache folder ($XDG_CACHE_HOME or ~/.cache on Linux)
        root = Path(platformdirs.user_cache_dir("rnnbench", appauthor=False))
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"the data cache {root} cannot be created ({exc}). Set RNNBENCH_CACHE to a "
            "writable folder."
        ) from None
    return root


def cache_key(source: str, **options: Any) -> str:
    """A short stable key for ``source`` (a name plus a digest) and its options."""
    text = json.dumps({"source": source, **options}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def bytes_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _not_writable(folder: Path, exc: OSError) -> DataError:
    return DataError(
        f"the data cache folder {folder} cannot be written ({exc.strerror or exc}). Make it "
        f"writable, or set RNNBENCH_CACHE to a writable folder.")


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _atomic_write(path: Path, write: Callable[[Any], None]) -> str:
    """Write ``path`` through ``write(fileobj)`` into a temporary file, fsync, rename;
    then write its SHA-256 sidecar the same way. Returns the digest."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    except OSError as exc:
        raise _not_writable(path.parent, exc) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        digest = file_sha256(tmp)
        os.replace(tmp, path)
        fd2, tmp2 = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        with os.fdopen(fd2, "w") as fh:
            fh.write(digest + "\n")
        os.replace(tmp2, _sidecar(path))
    except BaseException:
        for leftover in (tmp, locals().get("tmp2")):
            if leftover and os.path.exists(leftover):
                os.unlink(leftover)
        raise
    return digest


def is_valid(path: Path) -> bool:
    """True when ``path`` and its sidecar exist and the sidecar matches the bytes."""
    side = _sidecar(path)
    if not (path.is_file() and side.is_file()):
        return False
    try:
        expected = side.read_text().strip()
    except OSError:
        return False
    return expected == file_sha256(path)


def _discard(path: Path) -> None:
    for p in (path, _sidecar(path)):
        try:
            p.unlink()
        except FileNotFoundError:
            pass


@contextmanager
def building(path: Path) -> Iterator[None]:
    """Hold the exclusive build lock of the cache entry ``path`` (blocks until free)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path.with_name(path.name + ".lock"), "a")
    except OSError as exc:
        raise _not_writable(path.parent, exc) from None
    with fh:
        if fcntl is not None:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def entry_path(namespace: str, key: str) -> Path:
    return cache_root() / "arrays" / namespace / f"{key}.npz"


def load_arrays(namespace: str, key: str) -> dict[str, Any] | None:
    """The cached arrays of ``namespace/key``, or None when absent or not intact (an
    entry that fails its check is deleted)."""
    path = entry_path(namespace, key)
    if not path.exists() and not _sidecar(path).exists():
        return None
    if not is_valid(path):
        _discard(path)
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            out: dict[str, Any] = {k: npz[k] for k in npz.files}
    except Exception:  # unreadable despite a matching digest: rebuild it
        _discard(path)
        return None
    if META_KEY in out:
        out[META_KEY] = json.loads(str(out[META_KEY]))
    return out


def save_arrays(namespace: str, key: str, arrays: dict[str, Any]) -> Path:
    """Store ``arrays`` (NumPy arrays; ``__meta__`` may be a JSON-able dict) atomically."""
    path = entry_path(namespace, key)
    payload = {k: np.asarray(v) for k, v in arrays.items() if k != META_KEY}
    if META_KEY in arrays:
        payload[META_KEY] = np.asarray(json.dumps(arrays[META_KEY], sort_keys=True))
    _atomic_write(path, lambda fh: np.savez(fh, **payload))
    return path


def cached_arrays(namespace: str, key: str, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Load ``namespace/key`` from the cache, or ``build()`` it and store it."""
    hit = load_arrays(namespace, key)
    if hit is not None:
        return hit
    with building(entry_path(namespace, key)):
        hit = load_arrays(namespace, key)  # built by another process while we waited
        if hit is not None:
            return hit
        arrays = build()
        save_arrays(namespace, key, arrays)
    return load_arrays(namespace, key) or arrays


# ---- downloads ------------------------------------------------------------------------

def _keep_aside(path: Path) -> Path:
    bad = path.with_name(path.name + ".bad")
    if bad.exists():
        bad.unlink()
    os.replace(path, bad)
    return bad


def fetch(url: str, sha256: str, filename: str, *, what: str, timeout_s: float = 60.0) -> Path:
    """The file ``filename`` in the cache's ``downloads/``, fetched from ``url`` when it
    is not there (or not intact), and checked against the fixed ``sha256``.

    ``url`` may be ``http(s)://`` or ``file://``. A download whose SHA-256 differs is
    kept aside as ``<file>.bad`` and raises :class:`DataError` naming both hashes.
    """
    dest = cache_root() / "downloads" / filename
    with building(dest):
        return _fetch_locked(url, sha256, dest, what=what, timeout_s=timeout_s)


def _fetch_locked(url: str, sha256: str, dest: Path, *, what: str, timeout_s: float) -> Path:
    if dest.exists():
        if file_sha256(dest) == sha256:
            return dest
        _keep_aside(dest)  # corrupted or partial: fetch it again
    # the folder exists: building() made it
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout_s) as resp:
                    for block in iter(lambda: resp.read(CHUNK), b""):
                        h.update(block)
                        out.write(block)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", exc)
                raise DataError(
                    f"could not download {what} from {url} ({reason}). Download it yourself "
                    f"and pass task.path=<the file or folder>, or point task.mirror at a "
                    f"copy of it."
                ) from None
        actual = h.hexdigest()
        if actual != sha256:
            bad = dest.with_name(dest.name + ".bad")
            if bad.exists():
                bad.unlink()
            os.replace(tmp, bad)
            raise DataError(
                f"checksum mismatch for {what} downloaded from {url}: expected sha256 "
                f"{sha256}, got {actual}. The file was kept aside at {bad} and not used. "
                f"Check the URL or mirror (task.mirror), or pass a verified local copy "
                f"with task.path=."
            )
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest

