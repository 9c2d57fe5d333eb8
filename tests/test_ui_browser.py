"""The MLflow UI, checked in a real browser: a real ``mlflow server`` on 127.0.0.1, a small
``rnnbench`` multirun logged through it, and headless Debian Chromium (driven by
playwright, no browser download) on MLflow's "compare runs" page.

Needs ``/usr/bin/chromium`` (``.ci/install-browser.sh``) and the ``playwright`` package;
without them the test is skipped, saying which is missing. ``RNNBENCH_SAVE_SCREENSHOT=1``
also copies the screenshot to ``docs/img/mlflow_compare.png``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from helpers import ROOT, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.server]

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1400, "height": 1800}

# Every compare table of the page, by section: {"Tags": {"cell": ["rnn", "lstm"], ...}}.
READ_TABLES = """() => {
  const out = {};
  for (const item of document.querySelectorAll('.du-bois-light-collapse-item')) {
    const head = item.querySelector('.du-bois-light-collapse-header');
    const rows = {};
    for (const tr of item.querySelectorAll('table.mlflow-compare-table tr')) {
      const [key, ...values] = [...tr.querySelectorAll('th, td')].map(c => c.textContent.trim());
      if (key) rows[key] = values;
    }
    if (head) out[head.textContent.trim()] = rows;
  }
  return out;
}"""

# One metric's row in the compare page's (virtualised) metrics grid: the value cells on
# the same row as the metric's name, left to right, and whether they are drawn level with
# it (the name and value grids scroll together).
READ_METRIC = """(name) => {
  const link = [...document.querySelectorAll('a[title="Plot chart"]')]
    .find(a => a.textContent.trim() === name);
  if (!link) return null;
  const cell = link.parentElement;
  const section = cell.closest('.du-bois-light-collapse-content-box');
  const values = [...section.querySelectorAll('div[style]')]
    .filter(d => d !== cell && d.style.top === cell.style.top && d.style.position === 'absolute'
                 && !d.querySelector('a'))
    .sort((a, b) => parseFloat(a.style.left) - parseFloat(b.style.left));
  const y = cell.getBoundingClientRect().top;
  return {values: values.map(d => d.textContent.trim()),
          level: values.every(d => Math.abs(d.getBoundingClientRect().top - y) < 2)};
}"""

# True when the element is on screen and not hidden behind anything or clipped by a
# scrolling box: the topmost element at a point inside it is it or one of its children.
ON_SCREEN = """(el) => {
  const r = el.getBoundingClientRect();
  if (r.width === 0 || r.height === 0 || r.top < 0 || r.bottom > innerHeight) return false;
  const hit = document.elementFromPoint(r.left + Math.min(r.width / 2, 30), r.top + r.height / 2);
  return !!hit && (hit === el || el.contains(hit));
}"""


def browser_or_skip() -> object:
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"Debian's Chromium is not installed at {CHROMIUM}: run "
                    f".ci/install-browser.sh (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the Python package playwright is not installed (pip install playwright)")
    return sync_playwright


def fast_dir(tmp_path_factory, name: str) -> Path:
    """A fresh folder, in memory (/dev/shm) when there is room: SQLite's syncs are slow on a
    shared disk."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 1 << 30:
        import tempfile

        return Path(tempfile.mkdtemp(prefix=f"rnnbench-{name}-", dir=shm))
    return tmp_path_factory.mktemp(name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(base: str, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.load(resp)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``mlflow server`` on 127.0.0.1 and a free port, with a fresh SQLite store."""
    home = fast_dir(tmp_path_factory, "mlflow-server")
    port = free_port()
    exe = Path(sys.executable).with_name("mlflow")
    cmd = [str(exe) if exe.exists() else "mlflow", "server", "--host", "127.0.0.1",
           "--port", str(port), "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}",
           "--artifacts-destination", str(home / "artifacts"), "--workers", "1"]
    log = (home / "server.log").open("w")
    proc = subprocess.Popen(cmd, cwd=home, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            try:
                with urllib.request.urlopen(base + "/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("mlflow server did not start:\n"
                                         + (home / "server.log").read_text()[-3000:])
                time.sleep(0.5)
        yield base, home
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        if str(home).startswith("/dev/shm/"):
            shutil.rmtree(home, ignore_errors=True)


def test_compare_view_shows_runs_cells_task_and_metric(server, tmp_path):
    sync_playwright = browser_or_skip()
    base, home = server
    proc = run_cli(["-m", "cell=rnn,lstm", "debug=smoke", "tracking=server", "hardware.xla=off",
                    "diagnostics.enabled=false", "tracking.log_model=false",
                    f"tracking.uri={base}"], home)
    assert proc.returncode == 0, proc.stderr[-3000:]

    exp = api(base, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=co2")["experiment"]
    found = api(base, "/api/2.0/mlflow/runs/search",
                {"experiment_ids": [exp["experiment_id"]], "max_results": 10})["runs"]
    assert len(found) == 2 and {r["info"]["status"] for r in found} == {"FINISHED"}

    def tag(run: dict, key: str) -> str:
        return next(t["value"] for t in run["data"]["tags"] if t["key"] == key)

    runs = sorted(found, key=lambda r: tag(r, "cell") != "rnn")  # rnn first, then lstm
    ids = [r["info"]["run_id"] for r in runs]
    names = [r["info"]["run_name"] for r in runs]
    test_mse = [next(m["value"] for m in r["data"]["metrics"] if m["key"] == "test_mse")
                for r in runs]
    url = (f"{base}/#/compare-runs?runs={urllib.parse.quote(json.dumps(ids))}"
           f"&experiments={urllib.parse.quote(json.dumps([exp['experiment_id']]))}")

    shot = tmp_path / "mlflow_compare.png"
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True,
            args=FLAGS, viewport=VIEWPORT)
        try:
            page = context.new_page()
            page.goto(url, timeout=60_000)
            page.get_by_text("Comparing 2 Runs").wait_for(timeout=60_000)
            page.locator("table.mlflow-compare-table th", has_text="task").first.wait_for(
                state="attached", timeout=30_000)

            # what the page says: run ids and names, the cell and task tags, the params
            tables = page.evaluate(READ_TABLES)
            details, params, tags = tables["Run details"], tables["Parameters"], tables["Tags"]
            order = [details["Run ID:"].index(i) for i in ids]  # the page's column order
            assert sorted(details["Run ID:"]) == sorted(ids)
            assert [details["Run Name:"][k] for k in order] == names
            assert [tags["cell"][k] for k in order] == ["rnn", "lstm"]
            assert [params["cell.name"][k] for k in order] == ["rnn", "lstm"]
            assert tags["task"] == ["co2", "co2"]

            def section(title: str):
                return page.locator(".du-bois-light-collapse-item", has=page.locator(
                    ".du-bois-light-collapse-header", has_text=title)).first

            def row(title: str, key: str):
                return section(title).locator("tr").filter(
                    has=page.locator("th", has_text=re.compile(f"^{re.escape(key)}$"))).first

            def on_screen(loc) -> bool:
                loc.scroll_into_view_if_needed()
                return loc.evaluate(ON_SCREEN)

            # ... and that a person sees it: each row scrolled to is really on screen
            for title, key in (("Run details", "Run Name:"), ("Tags", "cell"),
                               ("Tags", "task"), ("Parameters", "cell.name")):
                assert on_screen(row(title, key)), f"{title} / {key} is not visible"

            def show_metric(name: str) -> dict:
                """Wheel the virtualised metrics grid until ``name``'s row is drawn."""
                grid = section("Metrics").locator(".ReactVirtualized__Grid").last
                link = section("Metrics").locator("a[title='Plot chart']", has_text=name).first
                grid.scroll_into_view_if_needed()
                seen = None
                for _ in range(80):
                    seen = page.evaluate(READ_METRIC, name)
                    if seen and link.evaluate(ON_SCREEN):
                        # MLflow's name column follows the values one wheel event late
                        # (MLflow 3.17); a last 1-pixel step brings it level
                        page.mouse.wheel(0, 1)
                        page.wait_for_timeout(300)
                        return page.evaluate(READ_METRIC, name)
                    grid.hover()
                    page.mouse.wheel(0, 90)
                    page.wait_for_timeout(100)
                raise AssertionError(f"metric {name} never came into view: {seen}")

            seen = show_metric("test_mse")
            assert seen["level"] and len(seen["values"]) == 2, seen
            shown = [seen["values"][k] for k in order]
            for text, value in zip(shown, test_mse):  # the UI rounds to 3 decimals
                assert abs(float(text.replace(",", "")) - value) <= 6e-4 * max(1, abs(value))

            # the screenshot: cells, task and test_mse side by side in the parallel
            # coordinates plot, the run names, the metrics that differ, the tags
            page.reload()
            page.get_by_text("Comparing 2 Runs").wait_for(timeout=60_000)
            close = page.get_by_role("button", name="Close", exact=True)
            if close.count():
                close.first.click()
            pick_params, pick_metrics = page.get_by_role("combobox").nth(0), \
                page.get_by_role("combobox").nth(1)
            pick_params.click()
            pick_params.fill("task.name")
            page.keyboard.press("Enter")
            page.keyboard.press("Escape")
            metric_box = page.locator(".du-bois-light-select").nth(1)
            while metric_box.locator(".du-bois-light-select-selection-item-remove").count():
                metric_box.locator(".du-bois-light-select-selection-item-remove").first.click()
            pick_metrics.click()
            pick_metrics.fill("test_mse")
            page.keyboard.press("Enter")
            page.keyboard.press("Escape")
            for title in ("Parameters", "Artifacts"):
                page.locator(".du-bois-light-collapse-header", has_text=title).first.click()
            page.get_by_role("switch", name="Metrics - Show diff only").click()
            page.get_by_role("switch", name="Tags - Show diff only").click()
            plot = section("Visualizations").locator("svg").first
            for word in ("cell.name", "task.name", "test_mse", "co2", "rnn", "lstm"):
                page.locator("svg text", has_text=word).first.wait_for(timeout=10_000)
            show_metric("test_mse")
            page.evaluate("() => window.scrollTo(0, 0)")
            page.locator("h1, h2", has_text="Comparing 2 Runs").first.scroll_into_view_if_needed()
            for loc in (plot, row("Run details", "Run Name:"), row("Tags", "cell"),
                        section("Metrics").locator("a[title='Plot chart']",
                                                   has_text="test_mse").first):
                assert loc.evaluate(ON_SCREEN), f"{loc} is not in the screenshot"
            page.screenshot(path=str(shot))
        finally:
            context.close()

    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 20_000
    if os.environ.get("RNNBENCH_SAVE_SCREENSHOT") == "1":
        target = ROOT / "docs" / "img" / "mlflow_compare.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)
