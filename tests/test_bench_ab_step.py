"""`benchmarks/ab_step.py`: another revision's package really is loaded beside the
working tree's, both train, and the per-turn ratios are printed; a wrong revision is
refused with the reason."""

from __future__ import annotations

import re
import subprocess

import pytest

from helpers import ROOT, load_benchmark

pytest.importorskip("tensorflow")


def _load():
    return load_benchmark("ab_step")


def test_the_revision_is_loaded_from_git_under_its_own_name(tmp_path):
    bench = _load()
    cells = bench.load_revision("HEAD", tmp_path)
    assert cells.__name__ == "rnnbench_before.cells"
    loaded = tmp_path / "rnnbench_before" / "cells" / "bptt.py"
    assert loaded.is_file() and str(tmp_path) in cells.bptt.__file__
    committed = subprocess.run(["git", "show", "HEAD:rnnbench/cells/bptt.py"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout
    assert loaded.read_text() == committed.replace("from rnnbench", "from rnnbench_before")


def test_both_sides_train_and_the_ratios_are_printed(capsys):
    bench = _load()
    assert bench.main(["--before", "HEAD", "--cells", "lstm", "--rounds", "2", "--steps", "1",
                       "--n", "8", "--time", "5"]) == 0
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| lstm |")]
    assert len(row) == 1
    spreads = re.findall(r"(\d+\.\d+) \[(\d+\.\d+)–(\d+\.\d+)\]", row[0])
    assert len(spreads) == 2
    for median, low, high in spreads:
        assert 0 < float(low) <= float(median) <= float(high)


def test_a_wrong_revision_is_refused_with_the_reason(tmp_path):
    bench = _load()
    with pytest.raises(SystemExit, match="not a revision"):
        bench.load_revision("no-such-revision", tmp_path)
