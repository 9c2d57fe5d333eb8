"""Polyphonic music: Bach chorales as 88-key piano rolls, next-step prediction.

The chorales come from music21's corpus (Riemenschneider numbering: 371 numbers, 350
distinct files; each file is used once).
Each is quantised like JSB Chorales (Boulanger-Lewandowski et al. 2012): one step per
quarter note (``task.step_quarters``), a key is on at step ``t`` when a note sounds at
that time (onset ≤ t < offset, ties merged), keys are MIDI 21-108. The model reads the
roll up to step ``t`` and predicts step ``t + 1`` as 88 independent Bernoullis; the
metric is the negative log-likelihood per time step (nats, summed over the 88 keys), the
quantity Chung et al. 2014 report on JSB Chorales, plus the frame-level accuracy
TP / (TP + FP + FN) at threshold 0.5. The split is a fixed permutation of the chorales
(not the exact JSB file split), so figures are comparable in kind, not digit for digit.

Parsing all chorales takes one to two minutes the first time; each chorale's roll is
cached on its own, so runs with ``task.limit`` parse only what they use.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np

from rnnbench.errors import DataError
from rnnbench.tasks import cache
from rnnbench.tasks.base import DatasetInfo, Task, TaskData, make_pipeline

LOWEST_KEY = 21  # A0
N_KEYS = 88
CACHE_VERSION = 1
BUCKETS = (64, 128)  # batch lengths below the longest chorale


@keras.saving.register_keras_serializable(package="rnnbench")
class PianoRollNLL(keras.losses.Loss):
    """Negative log-likelihood of a piano-roll step under 88 independent Bernoullis,
    summed over the keys (so the per-step mean matches the literature's NLL).

    Args:
        name: the loss's name.
        reduction: Keras reduction over steps (default: the mean over the steps that
            have weight, so padding does not dilute it).
    """

    def __init__(self, name: str = "piano_roll_nll", reduction: str = "mean_with_sample_weight",
                 **kwargs: Any) -> None:
        super().__init__(name=name, reduction=reduction, **kwargs)

    def call(self, y_true, y_pred):
        y_true = keras.ops.cast(y_true, y_pred.dtype)
        # softplus(z) - y z = -[y log σ(z) + (1 - y) log(1 - σ(z))], stable for any z
        per_key = keras.ops.softplus(y_pred) - y_true * y_pred
        return keras.ops.sum(per_key, axis=-1)


def chorale_names() -> list[str]:
    """The corpus paths of the chorales in Riemenschneider order."""
    try:
        from music21 import corpus
    except ImportError:
        raise DataError("task=chorales reads music21's corpus; install music21.") from None
    names = list(corpus.chorales.Iterator(numberingSystem="riemenschneider",
                                          returnType="filename"))
    if not names:
        raise DataError("music21's corpus has no Bach chorales (is the corpus installed?).")
    # some harmonisations carry two Riemenschneider numbers: keep each file once, so
    # that no chorale is in two splits
    return list(dict.fromkeys(str(n) for n in names))


def piano_roll(score: Any, step: float) -> np.ndarray:
    """``(steps, 88)`` uint8 roll of a music21 score, one row per ``step`` quarters."""
    flat = score.stripTies(inPlace=False).flatten()
    end = float(flat.highestTime)
    n_steps = max(1, int(math.ceil(end / step - 1e-9)))
    roll = np.zeros((n_steps, N_KEYS), np.uint8)
    for element in flat.notes:
        on = float(element.offset)
        off = on + float(element.quarterLength)
        if off <= on:
            continue  # grace notes
        first = int(math.ceil(on / step - 1e-9))
        last = int(math.ceil(off / step - 1e-9))  # exclusive
        for p in element.pitches:
            key = int(p.midi) - LOWEST_KEY
            if 0 <= key < N_KEYS:
                roll[first:min(last, n_steps), key] = 1
    return roll


def _roll_key(name: str, step: float) -> str:
    import music21

    return cache.cache_key(f"music21:{music21.__version__}:{name}", step=step,
                           version=CACHE_VERSION)


def load_roll(name: str, step: float) -> np.ndarray:
    """The cached roll of chorale ``name``, parsed and stored on a miss."""
    key = _roll_key(name, step)

    def build() -> dict[str, Any]:
        from music21 import corpus

        try:
            score = corpus.parse(name)
        except Exception as exc:  # music21 raises many kinds on a bad file
            raise DataError(f"music21 could not parse the chorale {name} ({exc}).") from None
        return {"roll": piano_roll(score, step)}

    return cache.cached_arrays("chorales", key, build)["roll"]


class ParseProgress:
    """A counter of the chorales parsed, on stderr: one ``\\r``-rewritten line on a
    terminal, else a line every ``every`` chorales (and at the end).

    Args:
        total: how many chorales will be parsed (0: nothing is printed).
        every: the step between lines when stderr is not a terminal.
    """

    def __init__(self, total: int, every: int = 25, stream: Any = None) -> None:
        import sys

        self.total, self.every, self.count = total, every, 0
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def step(self, name: str) -> None:
        self.count += 1
        line = f"chorales: parsed {self.count}/{self.total} ({name})"
        if self.tty:
            self.stream.write(f"\r{line:<72}")
        elif self.count % self.every == 0 or self.count == self.total:
            self.stream.write(line + "\n")
        else:
            return
        self.stream.flush()

    def done(self) -> None:
        if self.tty and self.count:
            self.stream.write("\n")
            self.stream.flush()


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int):
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * val_fraction))
    return {"train": np.sort(perm[n_test + n_val:]), "val": np.sort(perm[n_test:n_test + n_val]),
            "test": np.sort(perm[:n_test])}


def bernoulli_nll(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-step NLL (summed over keys) of rolls ``y`` under logits."""
    z = logits.astype(np.float64)
    return (np.logaddexp(0.0, z) - y * z).sum(axis=-1)


class ChoralesTask(Task):
    """Bach chorales, next-step piano-roll prediction; see the module docstring.

    Args:
        cfg: the ``task`` node (:class:`rnnbench.tasks.configs.ChoralesConfig`).
    """

    name = "chorales"
    family = "music"
    kind = "seq2seq"
    causal = True
    primary_metric = "nll"
    primary_mode = "min"

    def prepare(self, batch_size: int, seed: int) -> TaskData:
        cfg = self.cfg
        names = chorale_names()
        index = split_indices(len(names), cfg.val_fraction, cfg.test_fraction, cfg.split_seed)
        if cfg.limit is not None:
            index = {k: v[: cfg.limit] for k, v in index.items()}
        wanted = [names[i] for v in index.values() for i in v]
        missing = [n for n in wanted
                   if not cache.entry_path("chorales", _roll_key(n, cfg.step_quarters)).exists()]
        if missing:
            print(f"chorales: parsing {len(missing)} chorales with music21 (once; cached "
                  f"under {cache.cache_root() / 'arrays' / 'chorales'})", flush=True)
        progress = ParseProgress(len(missing))
        todo = set(missing)
        rolls: dict[str, list[np.ndarray]] = {}
        for k, v in index.items():
            rolls[k] = []
            for i in v:
                rolls[k].append(load_roll(names[i], cfg.step_quarters))
                if names[i] in todo:
                    todo.discard(names[i])
                    progress.step(names[i])
        progress.done()
        for split, rs in rolls.items():
            if not rs:
                raise DataError(f"task=chorales: the {split} split is empty; raise "
                                "task.limit or the split fractions.")
        length = max(len(r) for rs in rolls.values() for r in rs) - 1
        length = max(length, 1)
        arrays, windows = {}, {}
        for split, rs in rolls.items():
            x = np.zeros((len(rs), length, N_KEYS), np.float32)
            y = np.zeros_like(x)
            w = np.zeros((len(rs), length), np.float32)
            for i, r in enumerate(rs):
                n = len(r) - 1
                x[i, :n], y[i, :n], w[i, :n] = r[:-1], r[1:], 1.0
            arrays[split] = (x, y)
            windows[split] = (x, y, w)
        # chorales run 8-192 steps (median ~50): batches are bucketed by length and cut
        # to their bucket, instead of all running through the longest chorale's padding
        bounds = sorted({b for b in BUCKETS if b < length} | {length})
        pipes = {split: make_pipeline(x, y, batch_size, weights=w, shuffle=(split == "train"),
                                      seed=seed, lengths=w.sum(axis=1).astype(np.int64),
                                      boundaries=bounds)
                 for split, (x, y, w) in windows.items()}
        steps = {k: int(v[2].sum()) for k, v in windows.items()}
        _, ytr, wtr = windows["train"]
        key_prior = (ytr * wtr[..., None]).sum(axis=(0, 1)) + 1.0
        key_prior /= wtr.sum() + 2.0  # add-one smoothed frequency of each key on train
        import music21

        info = DatasetInfo(
            name="bach-chorales",
            source=f"music21 {music21.__version__} corpus, Riemenschneider chorales (bach/*.mxl)",
            license="BSD-3-Clause (music21 corpus); the chorales are public domain",
            digest=cache.cache_key("chorales", names=[names[i] for v in index.values()
                                                      for i in v], step=cfg.step_quarters)[:16],
            size=(f"{len(rolls['train'])}/{len(rolls['val'])}/{len(rolls['test'])} chorales, "
                  f"{steps['train']}/{steps['val']}/{steps['test']} predicted steps "
                  f"(train/val/test), 88 keys"),
            extra={"step_quarters": cfg.step_quarters},
        )
        return TaskData(train=pipes["train"], val=pipes["val"], test=pipes["test"],
                        n_features=N_KEYS, n_outputs=N_KEYS, seq_len=None,
                        n_train=len(windows["train"][0]), arrays=arrays, datasets=[info],
                        lengths={k: v[2].sum(axis=1).astype(np.int64)
                                 for k, v in windows.items()},
                        meta={"windows": windows, "key_prior": key_prior,
                              "names": {k: [names[i] for i in v] for k, v in index.items()}})

    def build_head(self, h, data: TaskData):
        """88 logits; their biases start at the log-odds of each key's train frequency,
        so training starts from the independent-keys baseline, not from NLL ≈ 61."""
        p = np.asarray(data.meta["key_prior"], np.float64)
        prior = (np.log(p) - np.log1p(-p)).tolist()
        return keras.layers.Dense(N_KEYS, dtype="float32", name="key_logits",
                                  bias_initializer=keras.initializers.Constant(prior))(h)

    def loss(self):
        return PianoRollNLL()

    def evaluate(self, model, data: TaskData, split: str) -> dict[str, float]:
        x, y, w = data.meta["windows"][split]
        total, steps, tp, fp, fn = 0.0, 0.0, 0.0, 0.0, 0.0
        for i in range(0, len(x), 64):
            logits = np.asarray(model.predict_on_batch(x[i:i + 64]))
            yb, wb = y[i:i + 64], w[i:i + 64]
            total += float((bernoulli_nll(logits, yb) * wb).sum())
            steps += float(wb.sum())
            on = (logits > 0) & (wb[..., None] > 0)
            truth = (yb > 0.5) & (wb[..., None] > 0)
            tp += float((on & truth).sum())
            fp += float((on & ~truth).sum())
            fn += float((~on & truth).sum())
        return {"nll": total / max(steps, 1.0),
                "frame_accuracy": tp / max(tp + fp + fn, 1.0)}

    def baselines(self, data: TaskData) -> dict[str, float]:
        """Each key on with its train frequency (add-one smoothed), independent of the past."""
        p = np.asarray(data.meta["key_prior"], np.float64)
        logit = np.log(p) - np.log1p(-p)
        _, y, w = data.meta["windows"]["test"]
        z = np.broadcast_to(logit, y.shape)
        nll = float((bernoulli_nll(z, y) * w).sum() / max(w.sum(), 1.0))
        on_pred = (z > 0) & (w[..., None] > 0)
        truth = (y > 0.5) & (w[..., None] > 0)
        tp = float((on_pred & truth).sum())
        denom = tp + float((on_pred & ~truth).sum()) + float((~on_pred & truth).sum())
        return {"nll": nll, "frame_accuracy": tp / max(denom, 1.0)}
