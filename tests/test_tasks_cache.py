"""The data cache: atomic entries, corrupt entries rebuilt, checked downloads."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest

from rnnbench.errors import DataError
from rnnbench.tasks import cache


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("RNNBENCH_CACHE", str(root))
    return root


@pytest.fixture
def http_dir(tmp_path):
    """A real HTTP server on 127.0.0.1 serving a folder; yields (folder, base_url, hits)."""
    folder = tmp_path / "served"
    folder.mkdir()
    hits: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            hits.append(self.path)
            super().do_GET()

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()


def test_cache_root_follows_the_environment(cache_dir):
    assert cache.cache_root() == cache_dir
    assert cache_dir.is_dir()


def test_arrays_round_trip_and_build_only_once(cache_dir):
    calls = []

    def build():
        calls.append(1)
        return {"a": np.arange(5), "names": np.array(["x", "yz"]), cache.META_KEY: {"k": 2}}

    key = cache.cache_key("src:abc", level="char", size=3)
    first = cache.cached_arrays("t", key, build)
    second = cache.cached_arrays("t", key, build)
    assert calls == [1]
    np.testing.assert_array_equal(second["a"], np.arange(5))
    assert list(second["names"]) == ["x", "yz"] and second[cache.META_KEY] == {"k": 2}
    assert first[cache.META_KEY] == {"k": 2}
    path = cache.entry_path("t", key)
    assert (path.parent / (path.name + ".sha256")).read_text().strip() == cache.file_sha256(path)
    assert not list(path.parent.glob("*.part"))


BUILDER = """
import os, sys, time
import numpy as np
from rnnbench.tasks import cache

def waiting_on(lock):
    # /proc/locks marks a process blocked on a lock with "->"; the field before the
    # range is MAJOR:MINOR:INODE of the locked file
    inode = str(os.stat(lock).st_ino)
    with open("/proc/locks") as fh:
        rows = [line.split() for line in fh]
    return any("->" in row and row[-3].rsplit(":", 1)[-1] == inode for row in rows)

def build():
    with open(sys.argv[1], "a") as log:
        log.write("built\\n")
    # This process holds the lock: keep it until the other one is provably blocked on
    # it, so that the other one reads this entry after waiting instead of arriving late.
    path = cache.entry_path("race", "k1")
    lock = path.with_name(path.name + ".lock")
    deadline = time.monotonic() + 60
    while not waiting_on(lock):
        if time.monotonic() > deadline:
            sys.exit("the other process never waited for the lock")
        time.sleep(0.01)
    with open(sys.argv[1], "a") as log:
        log.write("another process waited\\n")
    return {"a": np.arange(4) * 3}

out = cache.cached_arrays("race", "k1", build)
print(out["a"].tolist())
"""


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs Linux's /proc/locks")
def test_two_processes_build_an_entry_once(cache_dir, tmp_path):
    """Two processes that need the same entry at once: one builds, the other waits for
    the lock and reads the entry; no mismatched sidecar, no second build. The builder
    holds the lock until /proc/locks shows the other process blocked on it."""
    import os
    import subprocess
    import sys

    log = tmp_path / "builds.log"
    env = {**os.environ, "RNNBENCH_CACHE": str(cache_dir)}
    procs = [subprocess.Popen([sys.executable, "-c", BUILDER, str(log)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    assert [out.strip() for out, _ in outs] == ["[0, 3, 6, 9]"] * 2
    assert log.read_text().splitlines() == ["built", "another process waited"]
    assert cache.is_valid(cache.entry_path("race", "k1"))


def test_keys_differ_by_source_and_options():
    assert cache.cache_key("a", x=1) != cache.cache_key("a", x=2)
    assert cache.cache_key("a", x=1) != cache.cache_key("b", x=1)
    assert cache.cache_key("a", x=1, y=2) == cache.cache_key("a", y=2, x=1)


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "no_sidecar", "bad_sidecar"])
def test_a_damaged_entry_is_rebuilt_not_used(cache_dir, damage):
    key = cache.cache_key("src", v=1)
    cache.save_arrays("t", key, {"a": np.arange(1000)})
    path = cache.entry_path("t", key)
    side = path.with_name(path.name + ".sha256")
    if damage == "flip_byte":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "no_sidecar":
        side.unlink()
    else:
        side.write_text("0" * 64)
    assert cache.load_arrays("t", key) is None
    assert not path.exists()
    rebuilt = cache.cached_arrays("t", key, lambda: {"a": np.arange(3)})
    np.testing.assert_array_equal(rebuilt["a"], np.arange(3))


def test_fetch_checks_the_fixed_sha256_and_then_uses_the_cache(cache_dir, http_dir):
    folder, base, hits = http_dir
    payload = b"hello corpus\n" * 100
    (folder / "data.txt").write_bytes(payload)
    sha = hashlib.sha256(payload).hexdigest()
    path = cache.fetch(f"{base}/data.txt", sha, "demo-data.txt", what="demo")
    assert path.read_bytes() == payload and path.parent == cache_dir / "downloads"
    assert len(hits) == 1
    again = cache.fetch(f"{base}/data.txt", sha, "demo-data.txt", what="demo")
    assert again == path and len(hits) == 1  # served from the cache

    # a corrupted cached copy is set aside and fetched again
    path.write_bytes(b"garbage")
    fixed = cache.fetch(f"{base}/data.txt", sha, "demo-data.txt", what="demo")
    assert fixed.read_bytes() == payload and len(hits) == 2


def test_fetch_mismatch_keeps_the_file_aside_and_names_both_hashes(cache_dir, http_dir):
    folder, base, _ = http_dir
    (folder / "data.txt").write_bytes(b"tampered")
    expected = "ab" * 32
    actual = hashlib.sha256(b"tampered").hexdigest()
    with pytest.raises(DataError) as err:
        cache.fetch(f"{base}/data.txt", expected, "demo-data.txt", what="demo corpus")
    msg = str(err.value)
    assert expected in msg and actual in msg and "demo corpus" in msg
    dest = cache_dir / "downloads" / "demo-data.txt"
    assert not dest.exists()
    bad = dest.with_name("demo-data.txt.bad")
    assert bad.read_bytes() == b"tampered"
    assert not list(dest.parent.glob("*.part"))


def test_fetch_from_a_file_url(cache_dir, tmp_path):
    src = tmp_path / "local.txt"
    src.write_bytes(b"abc")
    sha = hashlib.sha256(b"abc").hexdigest()
    path = cache.fetch(src.as_uri(), sha, "local.txt", what="local")
    assert path.read_bytes() == b"abc"


def test_fetch_unreachable_says_what_to_do(cache_dir, tmp_path):
    with pytest.raises(DataError, match="task.path"):
        cache.fetch((tmp_path / "nope.txt").as_uri(), "0" * 64, "nope.txt", what="nothing")
    with pytest.raises(DataError, match="could not download"):
        cache.fetch("http://127.0.0.1:9/x.txt", "0" * 64, "x.txt", what="x", timeout_s=2)
    assert not (cache_dir / "downloads" / "x.txt").exists()


def test_unwritable_cache_is_a_data_error(monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("RNNBENCH_CACHE", str(blocker / "sub"))
    with pytest.raises(DataError, match="RNNBENCH_CACHE"):
        cache.cache_root()
    assert Path(blocker).is_file()


def test_without_rnnbench_cache_the_platforms_cache_folder_is_used(tmp_path, monkeypatch):
    monkeypatch.delenv("RNNBENCH_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_root() == tmp_path / "xdg" / "rnnbench"
    assert (tmp_path / "xdg" / "rnnbench").is_dir()
