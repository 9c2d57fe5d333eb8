"""`benchmarks/cells.py` on tiny shapes: the targets table of issue 17, with each ratio
both from the best turns (what `met` judges) and turn by turn."""

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
