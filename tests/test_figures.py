"""Figures that read like a paper's: rendered math, integer epochs, metrics in the data's
units, and a report page that keeps its data when it is shared alone. Drawn from small
data, no training."""

from __future__ import annotations

import base64
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.mathtext import MathTextParser  # noqa: E402

from rnnbench.report import document, figures, writers  # noqa: E402
from rnnbench.report.content import Row, TaskSection  # noqa: E402
from rnnbench.report.collect import RunRecord  # noqa: E402

RAW_TEX = re.compile(r"[_^\\{}]|[‖∂]")


def texts(fig) -> list[str]:
    fig.canvas.draw()  # mathtext errors show when the text is laid out
    out = [t.get_text() for t in fig.findobj(matplotlib.text.Text)]
    return [t for t in out if t]


def assert_math_is_rendered(fig) -> list[str]:
    """Every text with TeX-like markup has it inside $...$, and that parses."""
    parser = MathTextParser("path")
    found = []
    for text in texts(fig):
        outside = re.sub(r"\$[^$]*\$", "", text)
        assert not RAW_TEX.search(outside.replace("learning_curves", "")), text
        for math in re.findall(r"\$[^$]*\$", text):
            parser.parse(math)
            found.append(math)
    return found


def test_gradient_flow_heatmap_renders_its_math():
    from rnnbench.diagnostics.artifacts import heatmap_figure
    from rnnbench.diagnostics.flow import FlowProfile

    rows = [(e, FlowProfile(np.geomspace(1, 1e-3 * (e + 1), 12), np.full(12, 4)), {})
            for e in (0, 1, 2)]
    fig = heatmap_figure(rows, "co2 · lstm · seed 0")
    maths = assert_math_is_rendered(fig)
    plt.close(fig)
    assert any(r"\partial L_T" in m for m in maths), maths


def integer_ticks(ax) -> list[float]:
    lo, hi = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
    return ticks


def test_run_learning_curves_have_integer_epochs_and_units():
    from rnnbench.callbacks import learning_curves_figure

    history = {"loss": [0.5, 0.25, 0.2], "val_loss": [0.6, 0.3, 0.25],
               "mae": [0.4, 0.3, 0.2], "val_mae": [0.5, 0.35, 0.3]}
    units = {"loss": (4.0, "ppm²"), "mae": (2.0, "ppm")}
    fig = learning_curves_figure(history, "co2", "lstm", units)
    loss_ax, mae_ax = fig.axes
    for ax in (loss_ax, mae_ax):
        integer_ticks(ax)
    assert loss_ax.get_title() == "loss (ppm²)" and mae_ax.get_title() == "mae (ppm)"
    train, val = loss_ax.get_lines()
    assert list(val.get_ydata()) == pytest.approx([2.4, 1.2, 1.0])
    assert list(mae_ax.get_lines()[0].get_ydata()) == pytest.approx([0.8, 0.6, 0.4])
    plt.close(fig)


def record(run_id: str, units: str | None) -> RunRecord:
    tags = {"task": "co2", "cell": "lstm"}
    if units is not None:
        tags["metric_units"] = units
    return RunRecord(run_id, run_id, "co2", "FINISHED", 0, 1, tags)


def test_report_learning_curves_are_in_the_series_units(monkeypatch):
    units = '{"loss": [9.0, "ppm\\u00b2"], "mae": [3.0, "ppm"]}'
    row = Row(label="lstm", cell="lstm", impl="builtin", variant={},
              used=[record("a", units), record("b", units)],
              curves={1: [1.0, 2.0], 2: [0.5, 1.0], 3: [0.25, 0.5]})
    section = TaskSection(task="co2", family="timeseries", variant={}, kind="seq2one",
                          metric="mse", mode="min", metric_note="", rows=[row])
    drawn = {}
    monkeypatch.setattr(figures, "_png", lambda fig: drawn.setdefault("fig", fig) and b"png")
    assert figures.learning_curves(section) == b"png"
    ax = drawn["fig"].axes[0]
    assert ax.get_ylabel() == "val_loss (ppm²)"
    assert list(ax.get_lines()[0].get_ydata()) == pytest.approx([13.5, 6.75, 3.375])
    integer_ticks(ax)
    plt.close(drawn["fig"])
    # runs that disagree (or say nothing) are drawn as logged
    row.used = [record("a", units), record("b", None)]
    assert figures.loss_units([row]) == (1.0, "")


def test_report_page_carries_its_csv_data():
    table = document.Table("co2-results", ["cell", "mean"], [["lstm", "0.26"]],
                         ["cell", "test_mse_mean"], [["lstm", 0.2637684630851571]])
    doc = document.Document("t")
    doc.add(table)
    page = writers.html_page(doc)
    links = re.findall(r'<a download="([^"]+)" href="data:text/csv;charset=utf-8;base64,'
                       r'([A-Za-z0-9+/=]+)">', page)
    assert len(links) == 1 and links[0][0] == "co2-results.csv"
    assert base64.b64decode(links[0][1]).decode() == writers.csv_text(table)
    assert 'href="tables/' not in page
    assert "(tables/co2-results.csv)" in writers.markdown(doc)  # relative, next to report.md


def test_a_gradient_flow_that_underflows_ends_in_a_marker_on_the_floor(monkeypatch):
    """IndRNN's g(k) reaches exactly 0 (below float32) after some 40 lags: the line cannot
    go on on a log axis, so it ends in a marker on the floor at that lag, explained in
    the panel, instead of just stopping."""
    lags = list(range(60))
    g = [0.5 ** k if k < 40 else 0.0 for k in lags]
    assert figures.underflow_lag(lags, g) == 40
    assert figures.underflow_lag(lags, [1.0] * 60) is None
    assert figures.underflow_lag([0, 1], [0.0, 1.0]) is None  # no positive value before
    rows = [Row(label="indrnn", cell="indrnn", impl="custom", variant={},
                profiles={1: (lags, g)}, final_profile=(lags, g), final_epochs=[1]),
            Row(label="lstm", cell="lstm", impl="builtin", variant={},
                profiles={1: (lags, [0.9 ** k for k in lags])})]
    section = TaskSection(task="adding", family="probe", variant={}, kind="seq2one",
                          metric="mse", mode="min", metric_note="", rows=rows)
    drawn = {}
    monkeypatch.setattr(figures, "_png", lambda fig: drawn.setdefault("fig", fig) and b"png")
    assert figures.gradient_flow(section) == b"png"
    fig = drawn["fig"]
    assert_math_is_rendered(fig)
    indrnn, lstm = fig.axes[:2]
    floor = indrnn.get_ylim()[0]
    markers = [ln for ln in indrnn.get_lines() if ln.get_marker() == "v" and len(ln.get_xdata())]
    assert len(markers) == 2  # the epoch's line and the tested weights' line
    assert all(list(m.get_xdata()) == [40] and list(m.get_ydata()) == [floor] for m in markers)
    legend = [t.get_text() for t in indrnn.get_legend().get_texts()]
    assert legend[-1] == "g = 0 from here (below float32)", legend
    assert not [ln for ln in lstm.get_lines() if ln.get_marker() == "v"]
    assert "g = 0 from here (below float32)" not in [t.get_text() for t in
                                                     lstm.get_legend().get_texts()]
    plt.close(fig)


def test_a_run_profile_that_underflows_ends_in_a_marker_on_the_floor():
    from rnnbench.diagnostics.artifacts import heatmap_figure
    from rnnbench.diagnostics.flow import FlowProfile

    g = np.array([0.5 ** k if k < 30 else 0.0 for k in range(40)])
    rows = [(0, FlowProfile(np.geomspace(1, 1e-3, 40), np.full(40, 4)), {}),
            (1, FlowProfile(g, np.full(40, 4)), {})]
    fig = heatmap_figure(rows, "adding · indrnn · seed 0")
    assert_math_is_rendered(fig)
    heat, colorbar, profile = fig.axes[0], fig.axes[-1], fig.axes[1]
    markers = [ln for ln in profile.get_lines() if ln.get_marker() == "v"
               and len(ln.get_xdata())]
    assert [list(m.get_xdata()) for m in markers] == [[30]]
    assert list(markers[0].get_ydata()) == [profile.get_ylim()[0]]
    assert "g = 0 from here (below float32)" in [t.get_text() for t in
                                                  profile.get_legend().get_texts()]
    assert "blank: g = 0" in colorbar.get_ylabel()
    plt.close(fig)
