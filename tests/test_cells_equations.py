"""Every cell against a float64 NumPy reference written from shared/specs/cells.md.

The references (`helpers.py`) are written from the spec's equations, one gate at a
time, with separate matrices per gate (`W[g]` is d×n, `U[g]` n×n, `b[g]`, `p[g]` n).
The test maps them onto the layer's documented fused layout (`rnnbench.cells.variants`
module docstring) and compares outputs and final states over 60 steps.
"""

import zlib

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from helpers import B, D, N, T, load_params, random_params, reference  # noqa: E402
from rnnbench.cells import CELLS, CustomRecurrent  # noqa: E402

REL_TOL = 1e-5


def rel_err(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / max(np.max(np.abs(b)), 1e-12))


# the families whose references are in helpers.py (later families test their own)
SPEC_FAMILIES = ("rnn", "lstm", "gru", "janet")


@pytest.mark.parametrize("cell", [n for n, s in CELLS.items() if s.family in SPEC_FAMILIES])
def test_cell_matches_numpy_reference(cell):
    rng = np.random.default_rng(zlib.crc32(cell.encode()))
    x = rng.normal(size=(B, T, D))
    P = random_params(cell, rng)
    layer = CustomRecurrent(cell, N, return_sequences=True, return_state=True)
    layer.build((None, T, D))
    # the weights the spec needs, no more: removed gates create nothing
    assert layer.count_params() == CELLS[cell].param_count(D, N)
    load_params(layer, cell, P)

    out, *states = layer(x.astype("float32"))
    ref_out, ref_states = reference(cell, x, P)

    assert rel_err(out, ref_out) < REL_TOL, cell
    assert len(states) == len(ref_states)
    for got, want in zip(states, ref_states):
        assert rel_err(got, want) < REL_TOL, cell
    # the reference itself is not degenerate
    assert np.std(ref_out[:, -1]) > 0.05


def test_reference_detects_peephole_on_old_cell_state():
    """The output gate must look at c' (new), not c: the test would see the difference."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(B, T, D))
    P = random_params("peephole", rng)
    layer = CustomRecurrent("peephole", N, return_sequences=True)
    layer.build((None, T, D))
    load_params(layer, "peephole", P)
    out = np.asarray(layer(x.astype("float32")))
    wrong = dict(P, p=dict(P["p"], o=P["p"]["o"] * 0.5))
    assert rel_err(out, reference("peephole", x, wrong)[0]) > 1e-3
