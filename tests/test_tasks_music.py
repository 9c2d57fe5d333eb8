"""Polyphonic music: piano-roll quantisation, the per-step NLL, the chorale subset."""

from __future__ import annotations

import numpy as np
import pytest

from rnnbench.tasks import get_task, music
from rnnbench.tasks.configs import ChoralesConfig


def test_piano_roll_quantises_like_jsb():
    from music21 import chord, note, stream, tie

    part = stream.Part()
    c4 = note.Note("C4", quarterLength=2.0)  # steps 0, 1
    part.insert(0.0, c4)
    tied_a = note.Note("E4", quarterLength=1.0)
    tied_a.tie = tie.Tie("start")
    tied_b = note.Note("E4", quarterLength=1.0)
    tied_b.tie = tie.Tie("stop")
    part.insert(0.0, tied_a)
    part.insert(1.0, tied_b)  # E4 over steps 0, 1 (tie merged)
    part.insert(2.0, chord.Chord(["G4", "B4"], quarterLength=0.5))  # onset at step 2
    part.insert(2.5, note.Note("A0", quarterLength=1.0))  # sounds at step 3 (2.5 <= 3 < 3.5)
    score = stream.Score([part])
    roll = music.piano_roll(score, 1.0)
    assert roll.shape == (4, 88)
    on = {t: sorted(np.flatnonzero(roll[t]) + music.LOWEST_KEY) for t in range(4)}
    assert on == {0: [60, 64], 1: [60, 64], 2: [67, 71], 3: [21]}


def test_piano_roll_nll_matches_the_bernoulli_formula():
    import keras

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 88)).astype(np.float32)
    y = (rng.random((2, 3, 88)) < 0.1).astype(np.float32)
    w = np.array([[1, 1, 0], [1, 0, 0]], np.float32)
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    per_step = -(y * np.log(p) + (1 - y) * np.log(1 - p)).sum(-1)
    np.testing.assert_allclose(music.bernoulli_nll(logits, y), per_step, rtol=1e-9)
    loss = music.PianoRollNLL()(y, logits, sample_weight=w)
    assert float(loss) == pytest.approx((per_step * w).sum() / w.sum(), rel=1e-5)
    assert isinstance(keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(music.PianoRollNLL())), music.PianoRollNLL)


def test_chorale_subset_splits_without_overlap(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNBENCH_CACHE", str(tmp_path / "cache"))
    names = music.chorale_names()
    assert len(names) == len(set(names)) >= 340
    task = get_task(ChoralesConfig(name="chorales", limit=2))
    data = task.prepare(batch_size=2, seed=0)
    split_names = data.meta["names"]
    assert all(len(v) == 2 for v in split_names.values())
    assert not set(split_names["train"]) & set(split_names["test"])
    x, y = data.arrays["train"]
    w = data.meta["windows"]["train"][2]
    assert x.shape[2] == 88 and set(np.unique(x)) <= {0.0, 1.0}
    np.testing.assert_array_equal(x[:, 1:][w[:, 1:] > 0], y[:, :-1][w[:, 1:] > 0])  # shifted
    voices = y[w > 0].sum(axis=-1)
    assert 2 <= voices.mean() <= 4.5  # four-part chorales
    base = task.baselines(data)
    assert 5 < base["nll"] < 30
    # the head starts at the key priors: with its kernel zeroed, the model IS the baseline,
    # and the task's exact evaluation must then give the baseline's numbers
    import keras

    inputs, feats = task.build_inputs(data)
    h = keras.layers.LSTM(4, return_sequences=True)(feats)
    model = keras.Model(inputs, task.build_head(h, data))
    head = model.get_layer("key_logits")
    head.kernel.assign(np.zeros(head.kernel.shape, np.float32))
    got = task.evaluate(model, data, "test")
    assert got["nll"] == pytest.approx(base["nll"], rel=1e-5)
    assert got["frame_accuracy"] == pytest.approx(base["frame_accuracy"])
    # the second time every roll comes from the cache
    entries = list((tmp_path / "cache" / "arrays" / "chorales").glob("*.npz"))
    assert len(entries) == 6
