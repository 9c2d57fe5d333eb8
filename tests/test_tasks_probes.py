"""Long-range probes: the adding and copy problems, their metrics and baselines."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rnnbench.tasks import get_task, probes
from rnnbench.tasks.configs import AddingConfig, CopyConfig


def test_adding_sequences_follow_arjovsky_et_al():
    x, y = probes.adding_data(500, 40, np.random.default_rng(0))
    assert x.shape == (500, 40, 2) and y.shape == (500, 1)
    values, markers = x[..., 0], x[..., 1]
    assert values.min() >= 0 and values.max() <= 1
    assert np.all(markers.sum(axis=1) == 2)
    assert np.all(markers[:, :20].sum(axis=1) == 1) and np.all(markers[:, 20:].sum(axis=1) == 1)
    np.testing.assert_allclose(y[:, 0], (values * markers).sum(axis=1), rtol=1e-6)


def test_adding_is_reproducible_and_its_baseline_is_one_sixth():
    cfg = AddingConfig(name="adding", length=50, n_train=64, n_val=32, n_test=20000)
    a = get_task(cfg).prepare(32, seed=0)
    b = get_task(cfg).prepare(32, seed=5)  # the run seed does not change the data
    np.testing.assert_array_equal(a.arrays["test"][0], b.arrays["test"][0])
    base = get_task(cfg).baselines(a)
    assert base["mse"] == pytest.approx(1 / 6, abs=0.006)
    # more training data leaves val and test unchanged
    c = get_task(AddingConfig(name="adding", length=50, n_train=128, n_val=32,
                              n_test=20000)).prepare(32, 0)
    np.testing.assert_array_equal(a.arrays["val"][1], c.arrays["val"][1])


class _FixedLogits:
    """Stands in for a model whose predictions are given (tests the metric, not a net)."""

    def __init__(self, logits):
        self.logits = logits
        self.pos = 0

    def predict_on_batch(self, x):
        out = self.logits[self.pos:self.pos + len(x)]
        self.pos += len(x)
        return out


def test_copy_sequences_and_the_memoryless_baseline():
    cfg = CopyConfig(name="copy", length=30, n_train=16, n_val=16, n_test=300)
    task = get_task(cfg)
    data = task.prepare(16, 0)
    x, y = data.arrays["test"]
    assert x.shape == (300, 50, 10) and y.shape == (300, 50)
    ids = x.argmax(-1)
    np.testing.assert_array_equal(ids[:, -11], 9)  # the delimiter
    np.testing.assert_array_equal(y[:, -10:], ids[:, :10])  # copy the symbols
    assert np.all(y[:, :-10] == 0) and ids[:, :10].min() >= 1 and ids[:, :10].max() <= 8

    base = task.baselines(data)
    assert base["xent"] == pytest.approx(10 * math.log(8) / 50)
    # the memoryless strategy evaluated by the task's own metric gives the same number
    probs = np.zeros((300, 50, 9))
    probs[:, :-10, 0] = 1.0
    probs[:, -10:, 1:] = 1 / 8
    logits = np.log(np.maximum(probs, 1e-30))
    got = task.evaluate(_FixedLogits(logits), data, "test")
    assert got["xent"] == pytest.approx(base["xent"], rel=1e-9)
    # a perfect model
    perfect = np.log(np.maximum(np.eye(9)[y], 1e-30))
    best = task.evaluate(_FixedLogits(perfect), data, "test")
    assert best["accuracy"] == 1.0 and best["copy_accuracy"] == 1.0 and best["xent"] < 1e-9
