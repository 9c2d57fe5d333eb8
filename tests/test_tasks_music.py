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


def test_bucketed_pipeline_cuts_each_batch_to_its_bucket_and_loses_nothing():
    from rnnbench.tasks.base import make_pipeline

    rng = np.random.default_rng(0)
    lengths = np.array([3, 9, 2, 16, 5, 4, 12, 7, 1, 8, 16, 6])
    x = np.zeros((len(lengths), 16, 2), np.float32)
    w = np.zeros((len(lengths), 16), np.float32)
    for i, n in enumerate(lengths):
        x[i, :n] = rng.normal(size=(n, 2)) + 10 * i  # the example's index is readable
        w[i, :n] = 1.0
    y = np.arange(len(lengths), dtype=np.float32)
    for shuffle in (False, True):
        ds = make_pipeline(x, y, 2, shuffle=shuffle, seed=1, weights=w, lengths=lengths,
                           boundaries=[4, 8, 16])
        seen = []
        for xb, yb, wb in ds.as_numpy_iterator():
            cut = xb.shape[1]
            assert cut in (4, 8, 16) and wb.shape[1] == cut
            for xi, yi, wi in zip(xb, yb, wb):
                i = int(yi)
                # the smallest boundary that holds the example, and all of it is there
                assert cut == min(b for b in (4, 8, 16) if b >= lengths[i])
                np.testing.assert_array_equal(xi, x[i, :cut])
                assert wi.sum() == lengths[i]
                seen.append(i)
        assert sorted(seen) == list(range(len(lengths)))  # every example once an epoch
        assert int(ds.cardinality()) == 1 + 2 + 3  # known to Keras: 1, 4 and 5 per bucket
    with pytest.raises(ValueError, match="longer than the last bucket boundary"):
        make_pipeline(x, y, 2, shuffle=False, seed=0, lengths=lengths, boundaries=[4, 8])


@pytest.mark.slow
def test_chorale_batches_are_bucketed_by_length(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNBENCH_CACHE", str(tmp_path / "cache"))
    task = get_task(ChoralesConfig(name="chorales", limit=6))
    data = task.prepare(batch_size=2, seed=0)
    assert data.seq_len is None  # the model takes any length
    full = data.meta["windows"]["train"][0].shape[1]
    for xb, yb, wb in data.train.as_numpy_iterator():
        assert xb.shape[1] in (*(b for b in music.BUCKETS if b < full), full)
        assert wb[:, : xb.shape[1]].sum() == wb.sum()
    assert sum(int(wb.sum()) for *_, wb in data.train.as_numpy_iterator()) == \
        int(data.meta["windows"]["train"][2].sum())
