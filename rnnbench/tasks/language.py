"""Language modeling: next-token prediction over a contiguous token stream.

``lm_char`` predicts characters and reports bits per character; ``lm_word`` predicts
words and reports perplexity. Both report the mean NLL per token in nats. Every metric
is the summed NLL of every target token of the split divided by their number (no mean
of batch means). The trivial baseline is the unigram model of the train split
(add-one smoothed).

Corpora (``rnnbench.tasks.corpora``): the two that ship with gensim (``wiki``, ``lee``),
four classic benchmarks downloaded into the cache and checked against a fixed SHA-256
(``ptb``, ``wikitext2``, ``text8``, ``shakespeare``), and any text file or folder
(``path``).

Windows: the split's token stream ``t_0 … t_N`` gives inputs ``t_0 … t_{N-1}`` and
targets ``t_1 … t_N``. With ``carry_state`` it is cut into ``batch_size`` contiguous
streams, read ``bptt`` tokens at a time, and row ``i`` of batch ``k + 1`` continues row
``i`` of batch ``k`` (stateful layers carry the state across; states are reset at
every epoch and before every evaluation). Without it the stream is cut into windows of
``bptt`` tokens that each start from a zero state (training shuffles them). Padding
at the end of a split has weight 0, so every target token is counted exactly once.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any

import numpy as np

from rnnbench.errors import DataError
from rnnbench.tasks import cache
from rnnbench.tasks.base import DatasetInfo, Task, TaskData, make_pipeline
from rnnbench.tasks.corpora import Corpus, load_corpus, source_digest

UNK = "<unk>"
EOS = "<eos>"
CACHE_VERSION = 1
_NON_LETTERS = re.compile(r"[^a-z]+")


# ---- tokens and vocabulary ------------------------------------------------------------

def clean_text(text: str, how: str) -> str:
    """``text8``: lowercase a-z and single spaces; ``lower``; ``none``."""
    if how == "text8":
        return _NON_LETTERS.sub(" ", text.lower()).strip()
    if how == "lower":
        return text.lower()
    return text


def word_tokens(text: str, lines: bool) -> list[str]:
    if not lines:
        return text.split()
    out: list[str] = []
    for line in text.splitlines():
        words = line.split()
        if words:
            out.extend(words)
            out.append(EOS)
    return out


def build_vocab(train_tokens: list[str], vocab_size: int | None) -> list[str]:
    """``<unk>`` first, then train tokens by decreasing count (ties by the token)."""
    counts = Counter(train_tokens)
    counts.pop(UNK, None)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    if vocab_size is not None:
        ranked = ranked[: vocab_size - 1]
    return [UNK] + [tok for tok, _ in ranked]


def encode(tokens: list[str], vocab: list[str]) -> np.ndarray:
    index = {tok: i for i, tok in enumerate(vocab)}
    return np.fromiter((index.get(t, 0) for t in tokens), dtype=np.int32, count=len(tokens))


def split_stream(n: int, val_fraction: float, test_fraction: float) -> dict[str, slice]:
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * val_fraction))
    n_train = n - n_val - n_test
    return {"train": slice(0, n_train), "val": slice(n_train, n_train + n_val),
            "test": slice(n_train + n_val, n)}


def _char_codes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4")


def char_vocab_and_ids(streams: dict[str, np.ndarray], vocab_size: int | None):
    """Characters (as code points) to ids: ``<unk>`` is 0, then train characters by
    decreasing count (ties by code point)."""
    codes, counts = np.unique(streams["train"], return_counts=True)
    order = np.lexsort((codes, -counts))
    if vocab_size is not None:
        order = order[: vocab_size - 1]
    kept = codes[order]  # id j + 1 is kept[j]
    sorter = np.argsort(kept)
    sorted_codes = kept[sorter]
    ids = {}
    for split, arr in streams.items():
        pos = np.minimum(np.searchsorted(sorted_codes, arr), len(sorted_codes) - 1)
        found = sorted_codes[pos] == arr
        ids[split] = np.where(found, sorter[pos] + 1, 0).astype(np.int32)
    vocab = [UNK] + [chr(int(c)) for c in kept]
    return vocab, ids


def tokenize_corpus(corpus: Corpus, level: str, cfg: Any) -> dict[str, Any]:
    """Token ids per split and the vocabulary (built on train only)."""
    how = corpus.default_clean if cfg.clean == "auto" else cfg.clean
    texts = {k: clean_text(v, how) for k, v in corpus.texts.items()}
    if level == "char":
        streams: dict[str, Any] = {k: _char_codes(v) for k, v in texts.items()}
    else:
        lines = corpus.lines and how != "text8"
        streams = {k: word_tokens(v, lines) for k, v in texts.items()}
    if "all" in streams:
        tokens = streams.pop("all")
        if len(tokens) == 0:
            raise DataError(f"the corpus '{corpus.name}' ({corpus.source}) is empty after "
                            f"cleaning (task.clean={cfg.clean}).")
        parts = split_stream(len(tokens), cfg.val_fraction, cfg.test_fraction)
        streams = {k: tokens[s] for k, s in parts.items()}
    for split in ("train", "val", "test"):
        if len(streams[split]) < 2:
            raise DataError(
                f"the corpus '{corpus.name}' ({corpus.source}) is empty or too small: its "
                f"{split} split has {len(streams[split])} {level} tokens, at least 2 are "
                f"needed. Use a longer text or larger task.val_fraction/test_fraction.")
    if level == "char":
        vocab, ids = char_vocab_and_ids(streams, cfg.vocab_size)
    else:
        vocab = build_vocab(streams["train"], cfg.vocab_size)
        ids = {k: encode(v, vocab) for k, v in streams.items()}
    return {"train": ids["train"], "val": ids["val"], "test": ids["test"],
            "vocab": np.asarray(vocab),
            cache.META_KEY: {"clean": how, "unk_rate": {
                k: float(np.mean(v == 0)) for k, v in ids.items()}}}


# ---- windows --------------------------------------------------------------------------

def make_windows(ids: np.ndarray, bptt: int, batch_size: int, stateful: bool):
    """``(x, y, w)`` rows of ``bptt`` tokens covering every target of ``ids`` once.

    Stateful: the rows come in batches of ``batch_size`` where row ``i`` of batch
    ``k + 1`` continues row ``i`` of batch ``k``. Padding has weight 0.
    """
    inputs, targets = ids[:-1], ids[1:]
    n = len(targets)
    if stateful:
        streams = math.ceil(n / batch_size)
        total = streams * batch_size
        chunks = math.ceil(streams / bptt)
        width = chunks * bptt

        def lay(a, fill):
            a = np.concatenate([a, np.full(total - n, fill, a.dtype)]).reshape(batch_size, streams)
            a = np.concatenate([a, np.full((batch_size, width - streams), fill, a.dtype)], axis=1)
            return a.reshape(batch_size, chunks, bptt).transpose(1, 0, 2).reshape(-1, bptt)
    else:
        rows = math.ceil(n / bptt)

        def lay(a, fill):
            return np.concatenate([a, np.full(rows * bptt - n, fill, a.dtype)]).reshape(rows, bptt)
    w = np.ones(n, np.float32)
    return (lay(inputs.astype(np.int32), 0), lay(targets.astype(np.int32), 0), lay(w, 0.0))


def reset_states(model: Any) -> None:
    """Reset every stateful recurrent layer of ``model`` to its zero state."""
    stack = list(model.layers)
    while stack:
        layer = stack.pop()
        if getattr(layer, "stateful", False) and hasattr(layer, "reset_state"):
            layer.reset_state()
        for attr in ("forward_layer", "backward_layer", "layer"):
            inner = getattr(layer, attr, None)
            if inner is not None and hasattr(inner, "stateful"):
                stack.append(inner)


def _state_reset_callback():
    import keras

    class ResetStates(keras.callbacks.Callback):
        """Resets the carried recurrent states at every epoch and around evaluation, so
        that no state leaks from training into validation or from one epoch to the next."""

        def on_epoch_begin(self, epoch, logs=None):
            reset_states(self.model)

        def on_test_begin(self, logs=None):
            reset_states(self.model)

        def on_test_end(self, logs=None):
            reset_states(self.model)

        def on_predict_begin(self, logs=None):
            reset_states(self.model)

    return ResetStates()


def log_softmax_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """``-log softmax(logits)[target]`` per position, computed stably."""
    logits = logits.astype(np.float32, copy=False)
    top = logits.max(axis=-1, keepdims=True)
    lse = np.log(np.exp(logits - top).sum(axis=-1)) + top[..., 0]
    picked = np.take_along_axis(logits, targets[..., None].astype(np.int64), axis=-1)[..., 0]
    return (lse - picked).astype(np.float64)


# ---- the tasks ------------------------------------------------------------------------

class LanguageModelTask(Task):
    """Next-token prediction on a corpus; see the module docstring.

    Args:
        cfg: the ``task`` node (:class:`rnnbench.tasks.configs.LanguageConfig`).
    """

    family = "language"
    kind = "seq2seq"
    causal = True
    primary_mode = "min"
    level = "word"

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.stateful = bool(cfg.carry_state)

    def _source_digest(self) -> str:
        """A digest of the corpus's source, known without parsing it."""
        return source_digest(self.cfg)

    def _tokens(self) -> tuple[dict[str, Any], str]:
        """Token ids from the cache, or the corpus tokenised and stored."""
        cfg = self.cfg
        digest = self._source_digest()
        key = cache.cache_key(
            f"{cfg.corpus}:{digest}", level=self.level, clean=cfg.clean,
            vocab_size=cfg.vocab_size, val_fraction=cfg.val_fraction,
            test_fraction=cfg.test_fraction, version=CACHE_VERSION)

        def build() -> dict[str, Any]:
            corpus = load_corpus(cfg)
            out = tokenize_corpus(corpus, self.level, cfg)
            out[cache.META_KEY].update({"source": corpus.source, "license": corpus.license,
                                        "name": corpus.name, **corpus.extra})
            return out

        return cache.cached_arrays("language", key, build), digest

    def prepare(self, batch_size: int, seed: int) -> TaskData:
        cfg = self.cfg
        tok, digest = self._tokens()
        meta = tok[cache.META_KEY]
        vocab = [str(v) for v in tok["vocab"]]
        ids = {s: tok[s] for s in ("train", "val", "test")}
        if cfg.limit is not None:
            ids = {s: v[: cfg.limit * cfg.bptt + 1] for s, v in ids.items()}
        arrays_xyw = {s: make_windows(v, cfg.bptt, batch_size, self.stateful)
                      for s, v in ids.items()}

        # stateful rows come in whole batches that must stay in order
        pipes = {split: make_pipeline(x, y, batch_size, weights=w, seed=seed,
                                      shuffle=(split == "train" and not self.stateful),
                                      drop_remainder=self.stateful)
                 for split, (x, y, w) in arrays_xyw.items()}

        counts = {s: int(len(v) - 1) for s, v in ids.items()}
        info = DatasetInfo(
            name=f"{cfg.corpus}-{self.level}",
            source=meta.get("source", cfg.corpus),
            license=meta.get("license", ""),
            digest=digest[:16],
            size=(f"{counts['train']}/{counts['val']}/{counts['test']} {self.level} targets "
                  f"(train/val/test), vocabulary {len(vocab)}"),
            extra={k: str(v) for k, v in {
                "clean": meta.get("clean"), "unk_rate_test": round(meta["unk_rate"]["test"], 5),
                "checksum": meta.get("checksum"), "citation": meta.get("citation")}.items()
                if v is not None},
        )
        return TaskData(
            train=pipes["train"], val=pipes["val"], test=pipes["test"],
            vocab_size=len(vocab), n_outputs=len(vocab), seq_len=cfg.bptt,
            n_train=len(arrays_xyw["train"][0]),
            arrays={s: (v[0], v[1]) for s, v in arrays_xyw.items()},
            # padding (weight 0, token id 0 = <unk>, a real token) ends each row
            lengths={s: v[2].sum(axis=1).astype(np.int64) for s, v in arrays_xyw.items()},
            datasets=[info],
            meta={"vocab": vocab, "ids": ids, "windows": arrays_xyw, "targets": counts,
                  "batch_size": batch_size, "stateful": self.stateful},
        )

    # -- model ----------------------------------------------------------------------
    def build_inputs(self, data: TaskData):
        import keras

        batch = data.meta["batch_size"] if self.stateful else None
        inputs = keras.Input(shape=(data.seq_len,), batch_size=batch, dtype="int32",
                             name="tokens")
        x = keras.layers.Embedding(data.vocab_size, self.cfg.embedding_dim,
                                   name="embedding")(inputs)
        return inputs, x

    def build_head(self, h, data: TaskData):
        """Logits over the vocabulary; their biases start at the train unigram's log
        probabilities, so training starts from the unigram baseline, not from ln V."""
        import keras

        prior = self.unigram_logprob(data).astype(np.float32).tolist()
        return keras.layers.Dense(data.vocab_size, dtype="float32", name="logits",
                                  bias_initializer=keras.initializers.Constant(prior))(h)

    def loss(self):
        import keras

        # mean over the weighted (real) tokens: the loss Keras logs is the NLL per token
        return keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction="mean_with_sample_weight")

    def callbacks(self, data: TaskData) -> list:
        return [_state_reset_callback()] if self.stateful else []

    def probe_batch(self, data: TaskData, size: int, seed: int):
        """A fixed validation batch. A stateful model takes exactly ``batch_size`` rows,
        so then the first full batch is returned whatever ``size`` is."""
        if self.stateful:
            x, y = data.arrays["val"]
            b = data.meta["batch_size"]
            return x[:b], y[:b], data.lengths["val"][:b]
        return super().probe_batch(data, size, seed)

    # -- evaluation -----------------------------------------------------------------
    def nll(self, model, data: TaskData, split: str) -> tuple[float, float]:
        """Summed NLL (nats) of every target token of ``split`` and their number."""
        x, y, w = data.meta["windows"][split]
        b = data.meta["batch_size"]
        reset_states(model)
        total, count = 0.0, 0.0
        for i in range(0, len(x), b):
            xb, yb, wb = x[i:i + b], y[i:i + b], w[i:i + b]
            if self.stateful and len(xb) < b:
                break  # never happens: stateful rows come in whole batches
            logits = np.asarray(model.predict_on_batch(xb))
            total += float(np.sum(log_softmax_nll(logits, yb) * wb))
            count += float(np.sum(wb))
        reset_states(model)
        return total, count

    def _scores(self, mean_nll: float) -> dict[str, float]:
        raise NotImplementedError

    def evaluate(self, model, data: TaskData, split: str) -> dict[str, float]:
        total, count = self.nll(model, data, split)
        return self._scores(total / max(count, 1.0))

    @staticmethod
    def unigram_logprob(data: TaskData) -> np.ndarray:
        """Log probabilities of the train split's unigram model (add-one smoothed)."""
        v = data.vocab_size
        counts = np.bincount(data.meta["ids"]["train"][1:], minlength=v).astype(np.float64)
        return np.log((counts + 1.0) / (counts.sum() + v))

    def baselines(self, data: TaskData) -> dict[str, float]:
        """The unigram model of the train split (add-one smoothed) on the test split."""
        logp = self.unigram_logprob(data)
        test_targets = data.meta["ids"]["test"][1:]
        return self._scores(float(-logp[test_targets].mean()))


class WordLMTask(LanguageModelTask):
    """Word-level language modeling: perplexity ``exp(mean NLL per word)``.

    Args:
        cfg: the ``task`` node (:class:`rnnbench.tasks.configs.LanguageConfig`).
    """

    name = "lm_word"
    level = "word"
    primary_metric = "perplexity"

    def _scores(self, mean_nll: float) -> dict[str, float]:
        return {"perplexity": float(math.exp(min(mean_nll, 700.0))), "nll": mean_nll}


class CharLMTask(LanguageModelTask):
    """Character-level language modeling: bits per character ``mean NLL / ln 2``.

    Args:
        cfg: the ``task`` node (:class:`rnnbench.tasks.configs.LanguageConfig`).
    """

    name = "lm_char"
    level = "char"
    primary_metric = "bpc"

    def _scores(self, mean_nll: float) -> dict[str, float]:
        return {"bpc": mean_nll / math.log(2.0), "nll": mean_nll}
