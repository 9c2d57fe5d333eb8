"""Speech: the JapaneseVowels reader, the MFCC front end, WAV folders and their errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.io import wavfile

from rnnbench.errors import ConfigError, DataError
from rnnbench.tasks import get_task, speech
from rnnbench.tasks.configs import AudioConfig, VowelsConfig

RATE = 8000


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNBENCH_CACHE", str(tmp_path / "cache"))


def tone(freq, seconds=0.4, rate=RATE, amp=0.5, seed=0):
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(seed).normal(0, 0.01, t.shape)
    return amp * np.sin(2 * np.pi * freq * t) + noise


def write_wav(path, samples, rate=RATE):
    path.parent.mkdir(parents=True, exist_ok=True)
    wavfile.write(path, rate, (np.clip(samples, -1, 1) * 32767).astype(np.int16))


# ---- JapaneseVowels -------------------------------------------------------------------

def test_japanese_vowels_from_the_sktime_wheel():
    folder = speech._sktime_vowels_dir()
    seqs, labels, header = speech.parse_ts(folder / "JapaneseVowels_TRAIN.ts")
    assert len(seqs) == 270 and header["dimensions"] == "12"
    assert {s.shape[1] for s in seqs} == {12}
    assert min(len(s) for s in seqs) >= 7 and max(len(s) for s in seqs) <= 29
    assert sorted(set(labels)) == [str(i) for i in range(1, 10)]
    test_seqs, _, _ = speech.parse_ts(folder / "JapaneseVowels_TEST.ts")
    assert len(test_seqs) == 370
    assert seqs[0][0, 0] == pytest.approx(1.860936)

    task = get_task(VowelsConfig(name="speech_vowels"))
    data = task.prepare(batch_size=32, seed=0)
    n_tr, n_val = len(data.arrays["train"][1]), len(data.arrays["val"][1])
    assert n_tr + n_val == 270 and len(data.arrays["test"][1]) == 370
    assert np.bincount(data.arrays["val"][1]).min() >= 4  # stratified: every speaker
    assert data.masked and data.seq_len == 29 and data.n_features == 12 and data.n_outputs == 9
    x = data.arrays["train"][0]
    real = np.abs(x).sum(axis=-1) > 0
    lengths = real.sum(axis=1)
    assert np.all(real[np.arange(29)[None, :] < lengths[:, None]])  # right-padded
    assert abs(x[real].mean()) < 0.05 and abs(x[real].std() - 1) < 0.05  # train-standardised
    assert task.causal is False and data.datasets[0].digest


def test_ts_reader_names_the_bad_line(tmp_path):
    bad = tmp_path / "JapaneseVowels_TRAIN.ts"
    bad.write_text("@problemName x\n@dimensions 2\n@data\n1,2:3,4:a\n1,x:3,4:b\n")
    with pytest.raises(DataError, match=r"line 5"):
        speech.parse_ts(bad)
    ragged = tmp_path / "r.ts"
    ragged.write_text("@data\n1,2,3:3,4:a\n")
    with pytest.raises(DataError, match="different lengths"):
        speech.parse_ts(ragged)
    with pytest.raises(DataError, match="JapaneseVowels_TEST.ts"):
        get_task(VowelsConfig(name="speech_vowels", path=str(tmp_path))).prepare(8, 0)


def test_macro_f1_and_accuracy_match_their_definitions():
    from sklearn.metrics import accuracy_score, f1_score

    rng = np.random.default_rng(0)
    true = rng.integers(0, 5, 300)
    pred = np.where(rng.random(300) < 0.6, true, rng.integers(0, 4, 300))
    got = speech.classification_metrics(pred, true, 6)  # class 5 never occurs
    assert got["accuracy"] == pytest.approx(accuracy_score(true, pred))
    assert got["macro_f1"] == pytest.approx(f1_score(true, pred, average="macro"))


def test_stratified_split_is_reproducible_and_disjoint():
    labels = np.repeat(np.arange(3), 20)
    a = speech.stratified_split(labels, [0.15, 0.15], seed=1)
    b = speech.stratified_split(labels, [0.15, 0.15], seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert sorted(np.concatenate(a).tolist()) == list(range(60))
    assert all(np.bincount(labels[p], minlength=3).min() >= 3 for p in a[1:])


# ---- MFCC front end -------------------------------------------------------------------

def _cfg(**kw):
    return AudioConfig(name="speech_audio", path="x", **kw)


def test_mfcc_shape_normalisation_and_deltas():
    feats = speech.mfcc(tone(500, seconds=0.5), RATE, _cfg())
    frame, hop = 200, 80
    assert feats.shape == (1 + (4000 - frame) // hop, 13 * 3)
    assert np.allclose(feats.mean(axis=0), 0, atol=1e-4)
    assert np.allclose(feats.std(axis=0), 1, atol=1e-2)
    plain = speech.mfcc(tone(500, seconds=0.5), RATE, _cfg(deltas=False, normalize=False))
    assert plain.shape == (48, 13)


def test_log_mel_energy_peaks_at_the_tone():
    import scipy.fft

    n_mels = 40
    cfg = _cfg(n_mels=n_mels, n_mfcc=n_mels, deltas=False, normalize=False)
    mel_edges = np.linspace(1127 * np.log1p(20 / 700), 1127 * np.log1p(4000 / 700), n_mels + 2)
    centers = 700 * (np.exp(mel_edges[1:-1] / 1127) - 1)
    for freq in (300.0, 1000.0, 2500.0):
        c = speech.mfcc(tone(freq), RATE, cfg)
        log_mel = scipy.fft.idct(c * np.sqrt(2 * n_mels), type=2, axis=-1)  # undo the DCT-II
        peak = int(np.median(log_mel.argmax(axis=-1)))
        assert abs(peak - int(np.abs(centers - freq).argmin())) <= 1, freq


def test_regression_deltas_of_a_ramp_are_its_slope():
    ramp = np.arange(20, dtype=np.float32)[:, None] * np.array([[0.5, -2.0]], np.float32)
    d = np.asarray(speech.delta(ramp))
    np.testing.assert_allclose(d[2:-2], np.tile([[0.5, -2.0]], (16, 1)), rtol=1e-6)


def test_read_wav_formats(tmp_path):
    x = tone(440, seconds=0.1)
    wavfile.write(tmp_path / "f.wav", RATE, x.astype(np.float32))
    wavfile.write(tmp_path / "u8.wav", RATE, ((x + 1) * 127.5).astype(np.uint8))
    wavfile.write(tmp_path / "st.wav", RATE, np.stack([x, x], axis=1).astype(np.float32))
    for name in ("f.wav", "u8.wav", "st.wav"):
        rate, y = speech.read_wav(tmp_path / name)
        assert rate == RATE and y.ndim == 1 and len(y) == len(x)
        assert np.abs(y - x).max() < 0.02
    (tmp_path / "text.wav").write_text("not audio")
    with pytest.raises(DataError, match="text.wav"):
        speech.read_wav(tmp_path / "text.wav")


# ---- WAV folders ------------------------------------------------------------------------

def make_fsdd(root, per_class=6, freqs=(300, 900, 2000)):
    for label, f in enumerate(freqs):
        for i in range(per_class):
            write_wav(root / f"{label}_tester_{i}.wav",
                      tone(f * (1 + 0.02 * i), seconds=0.3 + 0.02 * i, seed=i))
    return root


def test_fsdd_layout_labels_from_file_names(tmp_path):
    root = make_fsdd(tmp_path / "fsdd")
    pairs, layout = speech.find_wavs(root, "auto")
    assert layout == "fsdd" and {lab for _, lab in pairs} == {"0", "1", "2"}
    task = get_task(AudioConfig(name="speech_audio", path=str(root)))
    data = task.prepare(batch_size=4, seed=0)
    sizes = [len(data.arrays[s][1]) for s in ("train", "val", "test")]
    assert sum(sizes) == 18 and min(sizes) >= 3
    assert data.masked and data.n_features == 39 and data.n_outputs == 3
    assert data.datasets[0].extra["layout"] == "fsdd"


def test_speech_commands_layout_uses_its_lists(tmp_path):
    root = tmp_path / "sc"
    for word, f in (("yes", 400), ("no", 1500)):
        for i in range(5):
            write_wav(root / word / f"spk{i}_nohash_0.wav", tone(f, seed=i))
    write_wav(root / "_background_noise_" / "noise.wav", np.zeros(800))
    (root / "validation_list.txt").write_text("yes/spk0_nohash_0.wav\nno/spk0_nohash_0.wav\n")
    (root / "testing_list.txt").write_text("yes/spk1_nohash_0.wav\nno/spk1_nohash_0.wav\n")
    task = get_task(AudioConfig(name="speech_audio", path=str(root)))
    data = task.prepare(batch_size=4, seed=0)
    assert [len(data.arrays[s][1]) for s in ("train", "val", "test")] == [6, 2, 2]
    assert data.meta["classes"] == ["no", "yes"]


def test_wav_folder_errors_name_the_file(tmp_path):
    nolabel = tmp_path / "nolabel"
    write_wav(nolabel / "recording1.wav", tone(300))
    with pytest.raises(DataError, match="recording1.wav: no label"):
        get_task(AudioConfig(name="speech_audio", path=str(nolabel))).prepare(4, 0)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no .wav files"):
        get_task(AudioConfig(name="speech_audio", path=str(empty))).prepare(4, 0)
    with pytest.raises(DataError, match="no such folder"):
        get_task(AudioConfig(name="speech_audio", path=str(tmp_path / "nope"))).prepare(4, 0)
    with pytest.raises(ConfigError, match="task.path"):
        get_task(AudioConfig(name="speech_audio")).prepare(4, 0)

    mixed = make_fsdd(tmp_path / "mixed", per_class=3)
    write_wav(mixed / "1_other_9.wav", tone(900, rate=16000), rate=16000)
    with pytest.raises(DataError, match=r"1_other_9.wav has sample rate 16000 Hz"):
        get_task(AudioConfig(name="speech_audio", path=str(mixed))).prepare(4, 0)

    low = tmp_path / "low"
    for label in ("a", "b"):
        write_wav(low / f"{label}_x_0.wav", tone(300, rate=8000), rate=8000)
    cfg = AudioConfig(name="speech_audio", path=str(low), fmax=7600.0)
    with pytest.raises(DataError, match=r"a_x_0.wav has sample rate 8000 Hz"):
        get_task(cfg).prepare(4, 0)

    one = tmp_path / "one"
    write_wav(one / "5_x_0.wav", tone(300))
    write_wav(one / "5_x_1.wav", tone(300))
    with pytest.raises(DataError, match="at least 2 labels"):
        get_task(AudioConfig(name="speech_audio", path=str(one))).prepare(4, 0)
