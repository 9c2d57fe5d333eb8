"""Speech: variable-length sequence classification with masking.

``speech_vowels`` classifies the 9 speakers of JapaneseVowels (12 LPC cepstra per frame,
7-29 frames), read from the sktime wheel's ``.ts`` files by the small parser here.
``speech_audio`` classifies spoken words from WAV files through an MFCC front end built
from ``tf.signal`` (STFT → mel filterbank → log → DCT, optional Δ/ΔΔ, per-utterance
mean and variance normalisation).

Sequences are right-padded with zeros to a fixed length and a ``Masking`` layer hides
the padding (after standardisation a real frame is never exactly all zeros). Metrics,
exact over the whole split: accuracy and macro-F1 (the unweighted mean of per-class F1;
a class never predicted and never present is left out). The trivial baseline predicts
the most frequent train class.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from rnnbench.errors import ConfigError, DataError
from rnnbench.tasks import cache
from rnnbench.tasks.base import DatasetInfo, Task, TaskData, make_pipeline

# ---- metrics --------------------------------------------------------------------------


def classification_metrics(pred: np.ndarray, true: np.ndarray, n_classes: int) -> dict[str, float]:
    """Accuracy and macro-F1 of integer predictions over a whole split."""
    pred = np.asarray(pred).astype(np.int64)
    true = np.asarray(true).astype(np.int64)
    f1s = []
    for c in range(n_classes):
        tp = float(np.sum((pred == c) & (true == c)))
        fp = float(np.sum((pred == c) & (true != c)))
        fn = float(np.sum((pred != c) & (true == c)))
        if tp + fp + fn == 0:
            continue
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return {"accuracy": float(np.mean(pred == true)) if len(true) else float("nan"),
            "macro_f1": float(np.mean(f1s)) if f1s else float("nan")}


def stratified_split(labels: np.ndarray, fractions: list[float], seed: int) -> list[np.ndarray]:
    """Indices split per class: ``fractions[k]`` of each class go to part ``k + 1``, the
    rest to part 0. A class with enough members puts at least one in every part."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(len(fractions) + 1)]
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        counts = [int(round(len(idx) * f)) for f in fractions]
        if len(idx) > len(fractions):
            counts = [max(1, n) for n in counts]
        pos = len(idx)
        for k, n in enumerate(counts, start=1):
            n = max(0, min(n, pos - 1))  # keep at least one for part 0
            parts[k].extend(idx[pos - n:pos])
            pos -= n
        parts[0].extend(idx[:pos])
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def subsample(n: int, limit: int | None, seed: int) -> np.ndarray:
    """The first ``limit`` of a seeded permutation of ``range(n)``, in order."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).permutation(n)[:limit])


def pad_sequences(seqs: list[np.ndarray], length: int) -> np.ndarray:
    """Right-pad (or cut) each ``(frames, features)`` array with zeros to ``length``."""
    d = seqs[0].shape[1]
    out = np.zeros((len(seqs), length, d), np.float32)
    for i, s in enumerate(seqs):
        n = min(len(s), length)
        out[i, :n] = s[:n]
    return out


class SequenceClassificationTask(Task):
    """Shared parts of the speech tasks: padded, masked inputs, a softmax head, accuracy
    and macro-F1. Subclasses implement :meth:`load` returning per-split lists of
    ``(frames, features)`` arrays and integer labels, the class names and the
    :class:`DatasetInfo`.

    Args:
        cfg: the ``task`` node of the subclass.
    """

    family = "speech"
    kind = "seq2one"
    causal = False
    primary_metric = "accuracy"
    primary_mode = "max"
    standardize = True

    def load(self) -> tuple[dict[str, tuple[list[np.ndarray], np.ndarray]], list[str], DatasetInfo]:
        raise NotImplementedError

    def prepare(self, batch_size: int, seed: int) -> TaskData:
        splits, classes, info = self.load()
        if self.cfg.limit is not None:
            keep = {k: subsample(len(v[1]), self.cfg.limit, seed=17) for k, v in splits.items()}
            splits = {k: ([v[0][i] for i in keep[k]], np.asarray(v[1])[keep[k]])
                      for k, v in splits.items()}
        train_frames = np.concatenate(splits["train"][0])
        mean = train_frames.mean(axis=0) if self.standardize else 0.0
        std = train_frames.std(axis=0) + 1e-8 if self.standardize else 1.0
        length = max(len(s) for seqs, _ in splits.values() for s in seqs)
        arrays = {}
        for split, (seqs, labels) in splits.items():
            x = pad_sequences([((s - mean) / std).astype(np.float32) for s in seqs], length)
            arrays[split] = (x, np.asarray(labels, dtype=np.int32))
        pipes = {split: make_pipeline(*arrays[split], batch_size, shuffle=(split == "train"),
                                      seed=seed) for split in arrays}
        return TaskData(
            train=pipes["train"], val=pipes["val"], test=pipes["test"],
            n_features=int(arrays["train"][0].shape[2]), n_outputs=len(classes),
            seq_len=length, masked=True, n_train=len(arrays["train"][0]), arrays=arrays,
            lengths={k: np.array([len(s) for s in v[0]], np.int64) for k, v in splits.items()},
            datasets=[info],
            meta={"classes": classes, "lengths": {k: [len(s) for s in v[0]]
                                                   for k, v in splits.items()}},
        )

    def build_head(self, h, data: TaskData):
        import keras

        return keras.layers.Dense(data.n_outputs, dtype="float32", name="logits")(h)

    def loss(self):
        import keras

        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def compile_metrics(self) -> list:
        return ["accuracy"]

    def evaluate(self, model, data: TaskData, split: str) -> dict[str, float]:
        x, y = data.arrays[split]
        logits = np.asarray(model.predict(x, batch_size=256, verbose=0))
        return classification_metrics(logits.argmax(axis=-1), y, data.n_outputs)

    def baselines(self, data: TaskData) -> dict[str, float]:
        """The majority class of the train split, predicted for every test example."""
        majority = int(np.bincount(data.arrays["train"][1], minlength=data.n_outputs).argmax())
        y = data.arrays["test"][1]
        return classification_metrics(np.full_like(y, majority), y, data.n_outputs)


# ---- JapaneseVowels -------------------------------------------------------------------

def parse_ts(path: Path) -> tuple[list[np.ndarray], list[str], dict[str, str]]:
    """Read a multivariate ``.ts`` file (sktime/UEA text format): ``@`` header lines,
    then one case per line, dimensions separated by ``:``, values by ``,``, the class
    label last. Returns ``(frames, features)`` arrays, the labels and the header."""
    seqs: list[np.ndarray] = []
    labels: list[str] = []
    header: dict[str, str] = {}
    in_data = False
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} cannot be read as a .ts text file ({exc}).") from None
    for lineno, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            if line.lower() == "@data":
                in_data = True
            elif line.startswith("@"):
                key, _, value = line[1:].partition(" ")
                header[key.lower()] = value.strip()
            continue
        *dims, label = line.split(":")
        try:
            cols = [np.array([float(v) for v in d.split(",")], dtype=np.float64) for d in dims]
        except ValueError:
            raise DataError(f"{path}, line {lineno}: a value is not a number.") from None
        if not cols or len({len(c) for c in cols}) != 1:
            raise DataError(f"{path}, line {lineno}: the dimensions have different lengths "
                            f"({[len(c) for c in cols]}).")
        seqs.append(np.stack(cols, axis=1))
        labels.append(label.strip())
    if not in_data or not seqs:
        raise DataError(f"{path} has no @data section with cases.")
    dims_expected = header.get("dimensions")
    if dims_expected and any(s.shape[1] != int(dims_expected) for s in seqs):
        raise DataError(f"{path}: a case does not have the {dims_expected} dimensions its "
                        "header declares.")
    return seqs, labels, header


def _sktime_vowels_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("sktime")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("task=speech_vowels reads JapaneseVowels from the sktime wheel; "
                        "install it with pip install sktime (or pass task.path=<a folder "
                        "with JapaneseVowels_TRAIN.ts and JapaneseVowels_TEST.ts>).")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "JapaneseVowels"


class VowelsTask(SequenceClassificationTask):
    """JapaneseVowels: which of 9 speakers says /ae/, from 12 LPC cepstra per frame.

    Args:
        cfg: the ``task`` node (:class:`rnnbench.tasks.configs.VowelsConfig`).
    """

    name = "speech_vowels"

    def load(self):
        cfg = self.cfg
        folder = Path(cfg.path).expanduser() if cfg.path else _sktime_vowels_dir()
        files = {s: folder / f"JapaneseVowels_{s.upper()}.ts" for s in ("train", "test")}
        for f in files.values():
            if not f.is_file():
                raise DataError(f"{f} is missing: task=speech_vowels needs "
                                "JapaneseVowels_TRAIN.ts and JapaneseVowels_TEST.ts there.")
        train_x, train_y, header = parse_ts(files["train"])
        test_x, test_y, _ = parse_ts(files["test"])
        declared = header.get("classlabel", "").split()[1:]
        classes = declared if declared else sorted(set(train_y))
        unknown = sorted(set(train_y + test_y) - set(classes))
        if unknown:
            raise DataError(f"{folder}: labels {unknown} are not among the declared classes "
                            f"{classes}.")
        index = {c: i for i, c in enumerate(classes)}
        ytr = np.array([index[c] for c in train_y])
        yte = np.array([index[c] for c in test_y])
        rest, val = stratified_split(ytr, [cfg.val_fraction], cfg.split_seed)
        digest = hashlib.sha256(files["train"].read_bytes() + files["test"].read_bytes())
        info = DatasetInfo(
            name="JapaneseVowels",
            source=("sktime/datasets/data/JapaneseVowels (UCI; Kudo, Toyama & Shimbo 1999)"
                    if not cfg.path else str(folder.resolve())),
            license="CC BY 4.0 (UCI Machine Learning Repository)",
            digest=digest.hexdigest()[:16],
            size=(f"{len(rest)}/{len(val)}/{len(test_x)} utterances (train/val/test), "
                  f"{len(classes)} speakers, 12 LPC cepstra, 7-29 frames"),
        )
        splits = {
            "train": ([train_x[i] for i in rest], ytr[rest]),
            "val": ([train_x[i] for i in val], ytr[val]),
            "test": (test_x, yte),
        }
        return splits, classes, info


# ---- audio: WAV files → MFCC ------------------------------------------------------------

def read_wav(path: Path) -> tuple[int, np.ndarray]:
    """Sample rate and mono float32 samples in [-1, 1] of a WAV file."""
    import warnings

    from scipy.io import wavfile

    if path.is_dir():
        raise DataError(f"{path} is a folder where a .wav file was expected.")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", wavfile.WavFileWarning)
            rate, data = wavfile.read(path)
    except OSError as exc:
        raise DataError(f"{path} cannot be read ({exc.strerror or exc}).") from None
    except Exception as exc:  # SciPy's parser fails in many ways on a damaged header
        raise DataError(f"{path} is not a valid WAV file ({type(exc).__name__}: {exc}). "
                        f"Remove it or replace it with an intact copy.") from None
    short = [str(w.message) for w in caught if "EOF" in str(w.message)]
    if short:
        raise DataError(f"{path} is truncated ({short[0]}): it would train on part of a "
                        f"recording. Remove it or replace it with an intact copy.")
    if rate <= 0:
        raise DataError(f"{path} has a sample rate of {rate} Hz in its header: it is "
                        f"damaged. Remove it or replace it with an intact copy.")
    data = np.asarray(data)
    if data.ndim == 2:
        data = data.mean(axis=1)
    if data.dtype == np.uint8:
        samples = (data.astype(np.float32) - 128.0) / 128.0
    elif np.issubdtype(data.dtype, np.integer):
        samples = data.astype(np.float32) / float(np.iinfo(data.dtype).max)
    else:
        samples = data.astype(np.float32)
    if samples.size == 0:
        raise DataError(f"{path} has no samples.")
    return int(rate), samples


def delta(features, width: int = 2):
    """Regression deltas along time (axis -2) over ``±width`` frames, edges repeated."""
    import tensorflow as tf

    n = tf.shape(features)[-2]
    padded = tf.concat([tf.repeat(features[..., :1, :], width, axis=-2), features,
                        tf.repeat(features[..., -1:, :], width, axis=-2)], axis=-2)
    num = tf.zeros_like(features)
    for k in range(1, width + 1):
        ahead = padded[..., width + k:width + k + n, :]
        behind = padded[..., width - k:width - k + n, :]
        num += k * (ahead - behind)
    return num / (2.0 * sum(k * k for k in range(1, width + 1)))


def mfcc_extractor(rate: int, cfg: Any):
    """A compiled function ``samples -> MFCC frames`` for audio at ``rate`` Hz.

    STFT (Hann window of ``frame_ms``, hop ``hop_ms``, FFT size the next power of two)
    → power spectrum → ``n_mels`` triangular mel filters between ``fmin`` and ``fmax``
    → ``log(mel + 1e-6)`` → DCT-II (``tf.signal.mfccs_from_log_mel_spectrograms``),
    first ``n_mfcc`` → Δ and ΔΔ when ``deltas`` → per-utterance mean/variance
    normalisation when ``normalize``. Output: ``(frames, n_mfcc * (3 if deltas else 1))``.
    """
    import tensorflow as tf

    frame = max(2, int(round(rate * cfg.frame_ms / 1000.0)))
    hop = max(1, int(round(rate * cfg.hop_ms / 1000.0)))
    fft = 1 << (frame - 1).bit_length()
    fmax = cfg.fmax if cfg.fmax is not None else rate / 2.0
    mel_matrix = tf.signal.linear_to_mel_weight_matrix(
        num_mel_bins=cfg.n_mels, num_spectrogram_bins=fft // 2 + 1, sample_rate=rate,
        lower_edge_hertz=cfg.fmin, upper_edge_hertz=fmax)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
    def extract(x):
        x = tf.pad(x, [[0, tf.maximum(0, frame - tf.shape(x)[0])]])
        stft = tf.signal.stft(x, frame_length=frame, frame_step=hop, fft_length=fft,
                              window_fn=tf.signal.hann_window)
        power = tf.math.square(tf.abs(stft))
        log_mel = tf.math.log(tf.tensordot(power, mel_matrix, 1) + 1e-6)
        coeffs = tf.signal.mfccs_from_log_mel_spectrograms(log_mel)[..., : cfg.n_mfcc]
        if cfg.deltas:
            d1 = delta(coeffs)
            coeffs = tf.concat([coeffs, d1, delta(d1)], axis=-1)
        if cfg.normalize:
            mean, var = tf.nn.moments(coeffs, axes=[0], keepdims=True)
            coeffs = (coeffs - mean) / tf.sqrt(var + 1e-8)
        return coeffs

    return lambda samples: extract(np.asarray(samples, np.float32)).numpy()


def mfcc(samples: np.ndarray, rate: int, cfg: Any) -> np.ndarray:
    """MFCC frames of one utterance (see :func:`mfcc_extractor`)."""
    return mfcc_extractor(rate, cfg)(samples)


def find_wavs(root: Path, layout: str) -> tuple[list[tuple[Path, str]], str]:
    """``(file, label)`` pairs under ``root`` and the layout used."""
    if root.is_file():
        raise DataError(f"task.path={root} is a file; task=speech_audio needs a folder of "
                        f".wav files (e.g. task.path={root.parent}).")
    if not root.is_dir():
        raise DataError(f"task.path={root}: no such folder.")
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("_"))
    nested = [(p, d.name) for d in subdirs for p in sorted(d.glob("*.wav"))
              + sorted(d.glob("*.WAV"))]
    flat = sorted(root.glob("*.wav")) + sorted(root.glob("*.WAV"))
    if layout == "auto":
        layout = "folders" if nested else "fsdd"
    if layout == "folders":
        if not nested:
            raise DataError(f"task.path={root}: no sub-folders with .wav files; with "
                            "task.layout=folders each label is a sub-folder of WAV files "
                            "(Speech Commands layout).")
        return nested, layout
    if not flat:
        raise DataError(f"task.path={root}: no .wav files in the folder (nor sub-folders of "
                        "them). Expected Free Spoken Digits (7_jackson_12.wav) or Speech "
                        "Commands (<label>/<file>.wav) layout.")
    pairs = []
    for p in flat:
        label, sep, _ = p.stem.partition("_")
        if not sep or not label:
            raise DataError(
                f"{p}: no label in the file name. With the Free Spoken Digits layout the "
                "label is the name up to the first '_' (e.g. 7_jackson_12.wav); or put the "
                "files in one sub-folder per label (Speech Commands layout).")
        pairs.append((p, label))
    return pairs, layout


class AudioTask(SequenceClassificationTask):
    """Spoken-word classification from a folder of WAV files through MFCCs.

    Args:
        cfg: the ``task`` node (:class:`rnnbench.tasks.configs.AudioConfig`).
    """

    name = "speech_audio"
    standardize = False  # features are normalised per utterance (or left as they are)

    def load(self):
        cfg = self.cfg
        if not cfg.path:
            raise ConfigError("task=speech_audio needs task.path=<a folder of WAV files> "
                              "(Free Spoken Digits or Speech Commands layout).")
        root = Path(cfg.path).expanduser()
        pairs, layout = find_wavs(root, cfg.layout)
        classes = sorted({label for _, label in pairs})
        if len(classes) < 2:
            raise DataError(f"task.path={root}: found only the label {classes} in "
                            f"{len(pairs)} files; classification needs at least 2 labels.")
        digest = hashlib.sha256()
        for p, label in pairs:
            digest.update(f"{p.relative_to(root)}|{label}|".encode())
            digest.update(cache.file_sha256(p).encode())
        options = {k: getattr(cfg, k) for k in (
            "sample_rate", "max_seconds", "frame_ms", "hop_ms", "n_mels", "n_mfcc", "fmin",
            "fmax", "deltas", "normalize")}
        key = cache.cache_key(f"wav:{digest.hexdigest()}", layout=layout, **options)

        def build() -> dict[str, Any]:
            rate_expected = cfg.sample_rate
            first = None
            feats = []
            extractors: dict[int, Any] = {}
            for p, _ in pairs:
                rate, samples = read_wav(p)
                if rate_expected is None:
                    rate_expected, first = rate, p
                if rate != rate_expected:
                    origin = "task.sample_rate" if cfg.sample_rate else f"the first file {first}"
                    raise DataError(
                        f"{p} has sample rate {rate} Hz, but {origin} sets {rate_expected} Hz. "
                        "Every file must have the same rate; resample them (e.g. sox in.wav "
                        f"-r {rate_expected} out.wav) or set task.sample_rate.")
                nyquist = rate / 2.0
                if (cfg.fmax is not None and cfg.fmax > nyquist) or cfg.fmin >= nyquist:
                    raise DataError(
                        f"{p} has sample rate {rate} Hz (Nyquist {nyquist:g} Hz), too low for "
                        f"the mel filterbank task.fmin={cfg.fmin:g}..task.fmax={cfg.fmax} Hz. "
                        "Lower task.fmax (and task.fmin) or use audio with a higher rate.")
                if rate * cfg.frame_ms / 1000.0 < 8:
                    raise DataError(f"{p} has sample rate {rate} Hz: a {cfg.frame_ms:g} ms "
                                    "frame has fewer than 8 samples. Use a higher rate or "
                                    "larger task.frame_ms.")
                samples = samples[: int(rate * cfg.max_seconds)]
                if rate not in extractors:
                    extractors[rate] = mfcc_extractor(rate, cfg)
                feats.append(extractors[rate](samples))
            lengths = np.array([len(f) for f in feats], np.int64)
            return {"frames": np.concatenate(feats), "lengths": lengths,
                    cache.META_KEY: {"sample_rate": rate_expected}}

        data = cache.cached_arrays("audio", key, build)
        bounds = np.concatenate([[0], np.cumsum(data["lengths"])])
        feats = [data["frames"][bounds[i]:bounds[i + 1]] for i in range(len(pairs))]
        labels = np.array([classes.index(label) for _, label in pairs])
        index = self._split(root, pairs, labels, layout)
        splits = {s: ([feats[i] for i in idx], labels[idx]) for s, idx in index.items()}
        for s, (seqs, _) in splits.items():
            if not seqs:
                raise DataError(f"task.path={root}: the {s} split is empty ({len(pairs)} "
                                "files); add files or change task.val_fraction/test_fraction.")
        rate = data[cache.META_KEY]["sample_rate"]
        info = DatasetInfo(
            name=root.name, source=str(root.resolve()), license="user data",
            digest=digest.hexdigest()[:16],
            size=(f"{len(index['train'])}/{len(index['val'])}/{len(index['test'])} WAV files "
                  f"(train/val/test), {len(classes)} labels, {rate} Hz"),
            extra={"layout": layout, "classes": json.dumps(classes)[:500]},
        )
        return splits, classes, info

    def _split(self, root: Path, pairs, labels: np.ndarray, layout: str) -> dict[str, np.ndarray]:
        """Speech Commands' own lists when present, else a stratified seeded split."""
        cfg = self.cfg
        lists = {s: root / f"{name}_list.txt" for s, name in (("val", "validation"),
                                                                 ("test", "testing"))}
        if layout == "folders" and all(f.is_file() for f in lists.values()):
            rel = [p.relative_to(root).as_posix() for p, _ in pairs]
            members = {s: set(f.read_text().split()) for s, f in lists.items()}
            val = np.array([i for i, r in enumerate(rel) if r in members["val"]], np.int64)
            test = np.array([i for i, r in enumerate(rel) if r in members["test"]], np.int64)
            train = np.array([i for i, r in enumerate(rel)
                              if r not in members["val"] and r not in members["test"]], np.int64)
            return {"train": train, "val": val, "test": test}
        train, val, test = stratified_split(labels, [cfg.val_fraction, cfg.test_fraction],
                                            cfg.split_seed)
        return {"train": train, "val": val, "test": test}
