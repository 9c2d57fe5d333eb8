"""`benchmarks/cells.py` on tiny shapes: the targets table of issue 17, with each ratio
both from the best turns (what `met` judges) and turn by turn; the cells of issue 24 with
the form that ran (scan or step) and that issue's targets."""

from __future__ import annotations

import re

import pytest

from helpers import load_benchmark

pytest.importorskip("tensorflow")


def _load():
    return load_benchmark("cells")


SPREAD = re.compile(r"^(\d+\.\d\d) \[(\d+\.\d\d)–(\d+\.\d\d)\]$")


def test_targets_show_best_turn_and_turn_by_turn_ratios(capsys):
    bench = _load()
    assert bench.main(["--n", "8", "--time", "5", "--steps", "1", "--rounds", "3",
                       "--cells", "lstm", "gru", "--xla", "on"]) == 0
    out = capsys.readouterr().out
    rows = [line.strip("| ").split(" | ") for line in out.splitlines()
            if line.startswith("| ≥ ")]
    assert [(r[0], r[1]) for r in rows] == [
        ("≥ 1.0× keras LSTM", "lstm"), ("≥ 1.0× keras LSTM", "gru"),
        ("≥ 1.25× keras LSTM", "lstm"), ("≥ 0.85× batched ceiling", "lstm")]
    for target, _, wall, cpu, met, wall_turns, cpu_turns in rows:
        goal = float(re.search(r"(\d+\.\d+)×", target).group(1))
        values = [float(wall)] + ([] if cpu == "—" else [float(cpu)])
        assert met == ("yes" if min(values) >= goal else "NO")
        for turns in [wall_turns] + ([] if cpu == "—" else [cpu_turns]):
            median, low, high = map(float, SPREAD.match(turns).groups())
            assert 0 < low <= median <= high
    assert "turn by turn" in out


def _cells(out):
    """The main table's rows by (cell, impl, gradient)."""
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("| cell | impl |"))
    names = lines[head].strip("| ").split(" | ")
    rows = {}
    for line in lines[head + 2:]:
        if not line.startswith("| "):
            break
        row = dict(zip(names, line.strip("| ").split(" | ")))
        rows[(row["cell"], row["impl"], row["gradient"])] = row
    return rows


@pytest.mark.slow
def test_modern_cells_have_a_form_column_and_the_targets_of_issue_24(capsys):
    bench = _load()
    # --gradients bptt: the families without a hand-written gradient still run, autodiff
    assert bench.main(["--n", "8", "--time", "5", "--steps", "1", "--rounds", "2",
                       "--cells", "mingru", "indrnn", "slstm", "--xla", "on",
                       "--gradients", "bptt"]) == 0
    out = capsys.readouterr().out
    rows = _cells(out)
    assert {k: r["form"] for k, r in rows.items()} == {
        ("lstm", "builtin", "autodiff"): "step", ("mingru", "custom", "autodiff"): "scan",
        ("indrnn", "custom", "autodiff"): "step", ("slstm", "custom", "autodiff"): "step"}
    assert float(rows[("lstm", "builtin", "autodiff")]["steps/s ×keras LSTM"]) == 1.0
    # no ceiling for a scan, a diagonal recurrence or slstm's 3-D heads
    for key in rows:
        if key[0] != "lstm":
            assert rows[key]["×ceiling"] == rows[key]["ceiling GFLOP/s"] == "—", key
    steps = {k[0]: float(r["steps/s"]) for k, r in rows.items()}
    text = out[out.index("targets of issue 24"):]
    assert "set at T=100" in text
    got = [line.strip("| ").split(" | ") for line in text.splitlines()
           if line.startswith("| ≥ ")]
    assert [(r[0], r[1], r[2]) for r in got] == [
        ("≥ 3× keras LSTM steps/s, scan", "mingru", "scan"),
        ("≥ 0.8× keras LSTM steps/s, step", "indrnn", "step"),
        ("≥ 0.8× keras LSTM steps/s, step", "slstm", "step")]
    for target, cell, _, _, wall, cpu, met, wall_turns, cpu_turns in got:
        goal = float(re.search(r"≥ (\d+(?:\.\d+)?)×", target).group(1))
        # the steps/s ratio is the table's steps/s over Keras's LSTM's (2 decimals there)
        assert float(wall) == pytest.approx(steps[cell] / steps["lstm"], abs=0.01)
        assert met == ("yes" if min(float(wall), float(cpu)) >= goal else "NO")
        for turns in (wall_turns, cpu_turns):
            median, low, high = map(float, SPREAD.match(turns).groups())
            assert 0 < low <= median <= high


def test_modern_targets_judge_the_form_that_ran():
    from types import SimpleNamespace

    bench = _load()
    row = dict(impl="custom", xla="on", x_steps=12.0, x_steps_cpu=11.0,
               x_steps_turns=[12.0, 13.0], x_steps_cpu_turns=[11.0, 11.5])
    table = [{**row, "cell": "mingru", "form": "scan"},
             {**row, "cell": "minlstm", "form": "step"},  # cell.parallel=false
             {**row, "cell": "lru", "form": "scan", "x_steps": 4.9}]
    args = SimpleNamespace(time=1000, batch=64, d=64, n=256)
    text = bench.modern_targets(table, args, "1.0", "1.0")
    got = {r[1]: r[6] for r in (line.strip("| ").split(" | ") for line in text.splitlines()
                                if line.startswith("| ≥ "))}
    assert got == {"mingru": "yes", "minlstm": "NO (ran step)", "lru": "NO"}
    assert "set at T=1000" in text
    assert bench.modern_targets(table, SimpleNamespace(time=100, batch=64, d=64, n=256),
                                "1", "1").count("| ≥ ") == 1  # only mingru's of T=100


def test_the_form_column_says_which_form_ran():
    import numpy as np
    import tensorflow as tf

    from rnnbench.cells import describe_layer, make_recurrent_layer

    layer = make_recurrent_layer({"name": "mingru", "impl": "custom"}, 4,
                                 return_sequences=False, name="rec")
    x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype("float32")
    static = layer(x)
    assert describe_layer(layer)["form"] == "scan"
    # an unknown length when the graph is built: the scan still runs (dynamic_scan)
    unknown = tf.function(layer, input_signature=[tf.TensorSpec((None, None, 3))])(x)
    assert describe_layer(layer)["form"] == "scan"
    np.testing.assert_allclose(np.asarray(unknown), np.asarray(static), rtol=1e-5, atol=1e-6)
    stepped = make_recurrent_layer({"name": "mingru", "impl": "custom", "parallel": False}, 4,
                                   return_sequences=False, name="stepped")
    stepped(x)
    assert describe_layer(stepped)["form"] == "step"  # cell.parallel=false
    builtin = make_recurrent_layer({"name": "lstm"}, 4, return_sequences=False, name="b")
    builtin(x)
    assert describe_layer(builtin)["form"] == "step"
