"""Long-range probes: synthetic tasks where the answer depends on inputs far back.

``adding`` (Hochreiter & Schmidhuber 1997, in the form of Arjovsky, Shah & Bengio 2016):
two input channels of ``length`` steps, values uniform in [0, 1] and a marker channel
that is 1 at one position in the first half and one in the second half; the target is
the sum of the two marked values. Predicting the expected sum (1.0) scores
MSE = Var(U1 + U2) = 1/6 ≈ 0.167: a model "solves" the task far below that.

``copy`` (Arjovsky et al. 2016): ``n_symbols`` symbols drawn from ``n_categories``
categories, then ``length - 1`` blanks, a delimiter, ``n_symbols`` more blanks; the
output is blank everywhere except the last ``n_symbols`` steps, which must repeat the
symbols. A memoryless model that outputs blank, then a uniform guess, scores the
cross-entropy ``n_symbols · ln(n_categories) / (length + 2 · n_symbols)``.

Both data sets are generated from ``task.data_seed`` (not the run's seed), so every
run and every cell sees the same sequences.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from rnnbench.tasks.base import DatasetInfo, Task, TaskData, make_pipeline


def _sizes(cfg: Any) -> dict[str, int]:
    sizes = {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test}
    if cfg.limit is not None:
        sizes = {k: min(v, cfg.limit) for k, v in sizes.items()}
    return sizes


def adding_data(n: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` adding-problem sequences ``(n, length, 2)`` and their targets ``(n, 1)``."""
    values = rng.uniform(0.0, 1.0, size=(n, length))
    half = length // 2
    first = rng.integers(0, half, size=n)
    second = rng.integers(half, length, size=n)
    markers = np.zeros((n, length))
    rows = np.arange(n)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    x = np.stack([values, markers], axis=-1).astype(np.float32)
    y = (values[rows, first] + values[rows, second])[:, None].astype(np.float32)
    return x, y


def copy_data(n: int, length: int, n_symbols: int, n_categories: int,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` copy-memory sequences: input ids ``(n, T)`` with 0 = blank, 1..K = symbols,
    K + 1 = delimiter; target ids ``(n, T)`` with 0 = blank, 1..K; ``T = length + 2·S``."""
    total = length + 2 * n_symbols
    symbols = rng.integers(1, n_categories + 1, size=(n, n_symbols))
    x = np.zeros((n, total), np.int32)
    y = np.zeros((n, total), np.int32)
    x[:, :n_symbols] = symbols
    x[:, n_symbols + length - 1] = n_categories + 1  # the delimiter
    y[:, -n_symbols:] = symbols
    return x, y


class AddingTask(Task):
    """The adding problem; metric MSE, baseline the constant prediction 1.0.

    Args:
        cfg: the ``task`` node (:class:`rnnbench.tasks.configs.AddingConfig`).
    """

    name = "adding"
    family = "probe"
    kind = "seq2one"
    causal = True  # a backward pass would shorten the distance the probe measures
    primary_metric = "mse"
    primary_mode = "min"

    def prepare(self, batch_size: int, seed: int) -> TaskData:
        cfg = self.cfg
        arrays = {}
        for split, n in _sizes(cfg).items():
            # each split from its own stream, so n_train does not change val/test
            arrays[split] = adding_data(n, cfg.length, np.random.default_rng(
                [cfg.data_seed, {"train": 0, "val": 1, "test": 2}[split]]))
        pipes = {s: make_pipeline(*arrays[s], batch_size, shuffle=(s == "train"), seed=seed)
                 for s in arrays}
        info = DatasetInfo(
            name=f"adding-T{cfg.length}", source="generated (rnnbench.tasks.probes.adding_data)",
            license="n/a (synthetic)", digest=f"seed{cfg.data_seed}-T{cfg.length}",
            size="/".join(str(len(arrays[s][0])) for s in ("train", "val", "test"))
            + f" sequences (train/val/test) of {cfg.length} steps",
        )
        return TaskData(train=pipes["train"], val=pipes["val"], test=pipes["test"],
                        n_features=2, n_outputs=1, seq_len=cfg.length,
                        n_train=len(arrays["train"][0]), arrays=arrays, datasets=[info])

    def build_head(self, h, data: TaskData):
        import keras

        return keras.layers.Dense(1, dtype="float32", name="sum")(h)

    def loss(self):
        return "mse"

    def compile_metrics(self) -> list:
        return ["mae"]

    def evaluate(self, model, data: TaskData, split: str) -> dict[str, float]:
        x, y = data.arrays[split]
        pred = np.asarray(model.predict(x, batch_size=512, verbose=0), dtype=np.float64)
        err = pred.reshape(-1) - y.reshape(-1).astype(np.float64)
        return {"mse": float(np.mean(err ** 2)), "mae": float(np.mean(np.abs(err)))}

    def baselines(self, data: TaskData) -> dict[str, float]:
        """Always predicting 1.0, the expected sum (published: MSE ≈ 0.167)."""
        y = data.arrays["test"][1].reshape(-1).astype(np.float64)
        return {"mse": float(np.mean((1.0 - y) ** 2)), "mae": float(np.mean(np.abs(1.0 - y)))}


class CopyTask(Task):
    """The copy-memory task; metric per-step cross-entropy (nats), baseline the
    memoryless strategy ``S · ln K / (T + 2S)``.

    Args:
        cfg: the ``task`` node (:class:`rnnbench.tasks.configs.CopyConfig`).
    """

    name = "copy"
    family = "probe"
    kind = "seq2seq"
    causal = True
    primary_metric = "xent"
    primary_mode = "min"

    def prepare(self, batch_size: int, seed: int) -> TaskData:
        cfg = self.cfg
        arrays = {}
        for split, n in _sizes(cfg).items():
            x, y = copy_data(n, cfg.length, cfg.n_symbols, cfg.n_categories,
                             np.random.default_rng([cfg.data_seed,
                                                    {"train": 0, "val": 1, "test": 2}[split]]))
            onehot = np.eye(cfg.n_categories + 2, dtype=np.float32)[x]
            arrays[split] = (onehot, y)
        pipes = {s: make_pipeline(*arrays[s], batch_size, shuffle=(s == "train"), seed=seed)
                 for s in arrays}
        total = cfg.length + 2 * cfg.n_symbols
        info = DatasetInfo(
            name=f"copy-T{cfg.length}", source="generated (rnnbench.tasks.probes.copy_data)",
            license="n/a (synthetic)", digest=f"seed{cfg.data_seed}-T{cfg.length}",
            size="/".join(str(len(arrays[s][0])) for s in ("train", "val", "test"))
            + f" sequences of {total} steps, {cfg.n_symbols} symbols from {cfg.n_categories}",
        )
        return TaskData(train=pipes["train"], val=pipes["val"], test=pipes["test"],
                        n_features=cfg.n_categories + 2, n_outputs=cfg.n_categories + 1,
                        seq_len=total, n_train=len(arrays["train"][0]), arrays=arrays,
                        datasets=[info])

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
        nll_sum, hits, count, seq_hits = 0.0, 0.0, 0, 0
        s = self.cfg.n_symbols
        for i in range(0, len(x), 256):
            logits = np.asarray(model.predict_on_batch(x[i:i + 256]), dtype=np.float64)
            yb = y[i:i + 256]
            top = logits.max(axis=-1, keepdims=True)
            lse = np.log(np.exp(logits - top).sum(axis=-1)) + top[..., 0]
            nll = lse - np.take_along_axis(logits, yb[..., None].astype(np.int64), -1)[..., 0]
            nll_sum += float(nll.sum())
            pred = logits.argmax(axis=-1)
            hits += float((pred == yb).sum())
            seq_hits += int(np.all(pred[:, -s:] == yb[:, -s:], axis=1).sum())
            count += yb.size
        return {"xent": nll_sum / count, "accuracy": hits / count,
                "copy_accuracy": seq_hits / len(x)}

    def baselines(self, data: TaskData) -> dict[str, float]:
        """The memoryless strategy: blank with certainty, then a uniform guess over the
        categories for the last ``S`` steps (published: ``S · ln K / (T + 2S)``)."""
        cfg = self.cfg
        total = cfg.length + 2 * cfg.n_symbols
        k = cfg.n_categories
        return {"xent": cfg.n_symbols * math.log(k) / total,
                "accuracy": (total - cfg.n_symbols + cfg.n_symbols / k) / total,
                "copy_accuracy": float(k ** -cfg.n_symbols)}
