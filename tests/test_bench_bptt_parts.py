"""`benchmarks/bptt_parts.py`: its parts compute what they say (the whole hand-written
backward pass gives the same gradients as the gradient tape it is timed against), and
the script prints a row per part."""

from __future__ import annotations

import argparse
import math
import re

import pytest

from helpers import load_benchmark

pytest.importorskip("tensorflow")


def _load():
    return load_benchmark("bptt_parts")


@pytest.mark.parametrize("cell", ["peephole", "gru"])
def test_the_timed_bptt_gradient_equals_the_timed_autodiff(cell):
    bench = _load()
    args = argparse.Namespace(batch=4, time=6, d=3, n=5, seed=0)
    runs = bench.parts(cell, args)
    assert set(runs) == {"h·U loop", "forward", "+ reverse loop", "+ weight gradients",
                         "batched dU alone", "h·U products, one loop", "h·U products, two loops",
                         "autodiff", "layer, bptt",
                         "layer, autodiff of Keras's loop"}
    bptt, autodiff = runs["+ weight gradients"](), runs["autodiff"]()
    assert math.isfinite(bptt) and abs(bptt) > 0
    assert bptt == pytest.approx(autodiff, rel=1e-5, abs=1e-5)
    # the whole layer: the same weights, so both gradients give the same sums
    assert runs["layer, bptt"]() == pytest.approx(runs["layer, autodiff of Keras's loop"](),
                                                  rel=1e-5, abs=1e-5)


def test_the_script_prints_every_part(capsys):
    bench = _load()
    assert bench.main(["--cells", "gru", "--time", "4", "--n", "6", "--batch", "3",
                       "--rounds", "1", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| gru |")]
    assert len(rows) == 10
    assert [r for r in rows if r.startswith("| gru | autodiff |")][0].endswith("| 1.00 |")


def test_the_kernel_profile_finds_the_loop_kernels(capsys):
    """`--kernels`: TensorFlow's profiler sees the kernels XLA runs in the loops; both
    gradients run at least the forward and the backward product once per step."""
    bench = _load()
    assert bench.main(["--cells", "lstm", "--time", "5", "--n", "6", "--batch", "3",
                       "--rounds", "1", "--repeat", "2", "--kernels"]) == 0
    out = capsys.readouterr().out
    for part in ("layer, bptt", "layer, autodiff of Keras's loop"):
        section = out.split(f"lstm: {part}:")[1]
        counts = dict(re.findall(r"^\| (matrix products|the rest) \| [\d.]+ \| (\d+) \|$",
                                 section, re.M)[:2])
        assert int(counts["matrix products"]) >= 2
        assert int(counts["the rest"]) >= 3
        runs = [float(r) for r in re.findall(r"^\| \S+ \| [\d.]+ \| ([\d.]+) \| [\d.]+ \|$",
                                             section, re.M)]
        assert runs and max(runs) >= 5  # some kernel runs once per step (T=5)
