"""What a task is: data splits, the model's input and head, the loss and the metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE


@dataclass
class DatasetInfo:
    """Where a data set came from, for ``mlflow.log_input``."""

    name: str
    source: str
    license: str
    digest: str
    size: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class TaskData:
    """The prepared splits of a task and what the model needs to know about them.

    ``train``/``val``/``test`` are batched, prefetching ``tf.data`` pipelines of
    ``(x, y)``. ``arrays`` keeps the unbatched NumPy splits where the task has them
    (for exact evaluation and the diagnostics' probe batch). ``lengths`` gives, for a
    task whose sequences are right-padded, the real length of each example of
    ``arrays[split]`` (every later step is padding); a task without padding leaves it
    empty. A task that pads without a mask must set it: its padding can look like real
    input (a silent chorale step, the token id 0). ``meta`` holds task-specific values
    (scalers, vocabulary, class names).
    """

    train: tf.data.Dataset
    val: tf.data.Dataset
    test: tf.data.Dataset
    n_features: int | None = None
    vocab_size: int | None = None
    n_outputs: int = 1
    seq_len: int | None = None
    masked: bool = False
    n_train: int = 0
    arrays: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    lengths: dict[str, Any] = field(default_factory=dict)
    datasets: list[DatasetInfo] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


class Task:
    """Base class of the tasks. A subclass sets the class attributes and implements
    :meth:`prepare`, :meth:`build_head`, :meth:`loss` and :meth:`evaluate`.

    Args:
        cfg: the ``task`` config node (a dataclass from ``rnnbench.tasks.configs``).
    """

    name: str = ""
    family: str = ""
    kind: str = "seq2one"  # or "seq2seq"
    causal: bool = True  # a causal task refuses bidirectional layers
    primary_metric: str = "loss"
    primary_mode: str = "min"
    stateful: bool = False

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    # -- data -----------------------------------------------------------------------
    def prepare(self, batch_size: int, seed: int) -> TaskData:
        raise NotImplementedError

    # -- model ----------------------------------------------------------------------
    def build_inputs(self, data: TaskData):
        """Return ``(inputs, features)``: the Keras input and the sequence fed to the
        first recurrent layer (float, shape ``(batch, time, features)``)."""
        import keras

        inputs = keras.Input(shape=(data.seq_len, data.n_features), name="inputs")
        if data.masked:
            return inputs, keras.layers.Masking(mask_value=0.0, name="mask")(inputs)
        return inputs, inputs

    def build_head(self, h, data: TaskData):
        raise NotImplementedError

    def loss(self):
        raise NotImplementedError

    def compile_metrics(self) -> list:
        return []

    # -- evaluation -----------------------------------------------------------------
    def evaluate(self, model, data: TaskData, split: str) -> dict[str, float]:
        """Exact metrics over the whole split (not a mean of batch means)."""
        raise NotImplementedError

    def baselines(self, data: TaskData) -> dict[str, float]:
        """Scores of the trivial baselines on the test split, same metric names."""
        return {}

    def callbacks(self, data: TaskData) -> list:
        """Keras callbacks the task needs during ``fit`` (e.g. resetting carried states)."""
        return []

    def metric_units(self, data: TaskData) -> dict[str, tuple[float, str]]:
        """For a task that trains on normalised values: ``{metric: (factor, unit)}``, so
        that a per-epoch metric times ``factor`` is in the data's own ``unit``. Empty when
        the per-epoch metrics are already in their units."""
        return {}

    def probe_batch(self, data: TaskData, size: int, seed: int):
        """A fixed batch ``(x, y, lengths)`` from the validation split for the
        diagnostics; ``lengths`` (the real length of each example) is None when the
        task has no padding."""
        import numpy as np

        x, y = data.arrays["val"]
        rng = np.random.default_rng(seed)
        idx = np.sort(rng.choice(len(x), size=min(size, len(x)), replace=False))
        lengths = data.lengths.get("val")
        return x[idx], y[idx], None if lengths is None else np.asarray(lengths)[idx]


def make_pipeline(x, y, batch_size: int, *, shuffle: bool, seed: int, weights=None,
                  drop_remainder: bool = False, lengths=None,
                  boundaries=None) -> tf.data.Dataset:
    """Batched, prefetching pipeline over in-memory arrays; shuffled with ``seed``.

    Only the example indices go through ``shuffle`` and ``batch``; each batch is then
    gathered from the arrays in one op, so an epoch boundary does not refill a shuffle
    buffer with whole examples. ``weights`` (per example or per step) become the third
    element, Keras's ``sample_weight``.

    Variable-length sequences padded along axis 1 can be bucketed: with ``lengths`` (the
    true length of each example) and ascending ``boundaries`` (the last at least the
    longest), examples are batched with others of the same bucket (the smallest boundary
    that holds them) and each batch is cut to its bucket's boundary, so a short sequence
    is not run through the padding of the longest one. There are as many batch shapes
    as buckets (one compilation each).
    """
    arrays = (x, y) if weights is None else (x, y, weights)
    tensors = tuple(tf.convert_to_tensor(a) for a in arrays)
    ds = tf.data.Dataset.range(len(x))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    if lengths is None:
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        ds = ds.map(lambda idx: tuple(tf.gather(t, idx) for t in tensors),
                    num_parallel_calls=AUTOTUNE)
        return ds.prefetch(AUTOTUNE)

    import numpy as np

    lengths, boundaries = np.asarray(lengths, np.int64), np.asarray(sorted(boundaries), np.int64)
    if lengths.max() > boundaries[-1]:
        raise ValueError(f"the longest sequence ({lengths.max()}) is longer than the last "
                         f"bucket boundary ({boundaries[-1]})")
    per_bucket = np.bincount(np.searchsorted(boundaries, lengths, side="left"))
    n_batches = int((per_bucket // batch_size if drop_remainder
                     else -(-per_bucket // batch_size)).sum())
    lengths, bounds = tf.constant(lengths), tf.constant(boundaries)

    def bucket(length):
        return tf.searchsorted(bounds, tf.reshape(length, [1]), side="left")[0]

    ds = ds.group_by_window(
        key_func=lambda i: tf.cast(bucket(tf.gather(lengths, i)), tf.int64),
        reduce_func=lambda _, window: window.batch(batch_size, drop_remainder=drop_remainder),
        window_size=batch_size)

    def gather(idx):
        cut = tf.gather(bounds, bucket(tf.reduce_max(tf.gather(lengths, idx))))
        return tuple(tf.gather(t, idx)[:, :cut] if len(t.shape) > 1 else tf.gather(t, idx)
                     for t in tensors)

    ds = ds.apply(tf.data.experimental.assert_cardinality(n_batches))  # known to Keras
    return ds.map(gather, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)
