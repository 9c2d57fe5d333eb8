"""Language modeling: corpora and loaders, vocabulary, windows, carried state, exact metrics."""

from __future__ import annotations

import functools
import hashlib
import http.server
import math
import threading
import zipfile

import numpy as np
import pytest

from rnnbench.errors import ConfigError, DataError
from rnnbench.tasks import cache, corpora, get_task, language
from rnnbench.tasks.configs import LanguageConfig

TEXT = ("the cat sat on the mat\nthe dog sat on the log\n"
        "a cat and a dog met on the mat\n") * 30


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNBENCH_CACHE", str(tmp_path / "cache"))


def lm_cfg(name="lm_word", **kw):
    return LanguageConfig(name=name, **kw)


# ---- text, vocabulary, splits ---------------------------------------------------------

def test_text8_cleaning_keeps_lowercase_letters_and_single_spaces():
    cleaned = language.clean_text("Hello, World! 42 times\n\tÉcole", "text8")
    assert cleaned == "hello world times cole"
    assert language.clean_text("AbC", "lower") == "abc"
    assert language.clean_text("AbC", "none") == "AbC"


def test_vocabulary_comes_from_train_only_with_unk(tmp_path):
    corpus = corpora.Corpus(name="t", texts={"train": "a a a b b c\n", "val": "a zebra\n",
                                              "test": "b c quagga\n"},
                             digest="x", source="test", license="")
    cfg = lm_cfg(corpus="path", path=str(tmp_path), vocab_size=3)
    out = language.tokenize_corpus(corpus, "word", cfg)
    vocab = list(out["vocab"])
    # train counts: a=3, b=2, c=1, <eos>=1 -> the two most frequent after <unk>
    assert vocab == ["<unk>", "a", "b"]
    assert "zebra" not in vocab and "quagga" not in vocab
    assert list(out["val"]) == [1, 0, 0]  # a, zebra -> unk, <eos> -> unk (cut by size)
    assert out[cache.META_KEY]["unk_rate"]["val"] == pytest.approx(2 / 3)


def test_contiguous_split_by_fractions():
    parts = language.split_stream(100, 0.1, 0.2)
    assert (parts["train"], parts["val"], parts["test"]) == (slice(0, 70), slice(70, 80),
                                                              slice(80, 100))


def test_char_vocabulary_orders_by_count_and_maps_unseen_to_unk():
    streams = {"train": language._char_codes("aaabbc"), "val": language._char_codes("abz"),
               "test": language._char_codes("cc")}
    vocab, ids = language.char_vocab_and_ids(streams, None)
    assert vocab == ["<unk>", "a", "b", "c"]
    assert list(ids["train"]) == [1, 1, 1, 2, 2, 3]
    assert list(ids["val"]) == [1, 2, 0]
    vocab2, ids2 = language.char_vocab_and_ids(streams, 3)
    assert vocab2 == ["<unk>", "a", "b"] and list(ids2["test"]) == [0, 0]


# ---- windows ---------------------------------------------------------------------------

@pytest.mark.parametrize("stateful", [True, False])
def test_windows_cover_every_target_exactly_once(stateful):
    ids = np.arange(1, 104, dtype=np.int32)  # 103 tokens -> 102 targets
    x, y, w = language.make_windows(ids, bptt=5, batch_size=4, stateful=stateful)
    assert x.shape == y.shape == w.shape and x.shape[1] == 5
    real = w > 0
    assert real.sum() == 102
    assert sorted(y[real].tolist()) == list(range(2, 104))
    np.testing.assert_array_equal(y[real], x[real] + 1)  # next-token targets
    if stateful:
        assert len(x) % 4 == 0
        # row i of batch k + 1 continues row i of batch k
        batches = x.reshape(-1, 4, 5)
        for k in range(len(batches) - 1):
            for i in range(4):
                cur, nxt = batches[k, i], batches[k + 1, i]
                if w.reshape(-1, 4, 5)[k + 1, i, 0] > 0:
                    assert nxt[0] == cur[-1] + 1


# ---- loaders ----------------------------------------------------------------------------

def test_path_corpus_file_and_folder(tmp_path):
    f = tmp_path / "one.txt"
    f.write_text(TEXT)
    task = get_task(lm_cfg(corpus="path", path=str(f), vocab_size=50, bptt=8))
    data = task.prepare(batch_size=4, seed=0)
    assert data.vocab_size == len(data.meta["vocab"]) <= 50
    assert "<eos>" in data.meta["vocab"]  # lines end with <eos> at word level
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("alpha beta\n" * 40)
    (folder / "sub" / "b.txt").write_text("gamma delta\n" * 40)
    (folder / "ignored.md").write_text("zzz " * 100)
    data = get_task(lm_cfg(corpus="path", path=str(folder), bptt=4)).prepare(4, 0)
    assert set(data.meta["vocab"]) >= {"alpha", "gamma"}
    assert "zzz" not in data.meta["vocab"]


def test_bad_corpus_inputs_name_the_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        get_task(lm_cfg(corpus="path", path=str(tmp_path / "missing.txt"))).prepare(4, 0)
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n 123 !!\n")
    with pytest.raises(DataError, match="empty"):
        get_task(lm_cfg(corpus="path", path=str(empty), clean="text8")).prepare(4, 0)
    (tmp_path / "nofiles").mkdir()
    with pytest.raises(DataError, match="no .txt files"):
        get_task(lm_cfg(corpus="path", path=str(tmp_path / "nofiles"))).prepare(4, 0)
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\x00abc" * 10)
    with pytest.raises(DataError, match="bin.txt is not UTF-8"):
        get_task(lm_cfg(corpus="path", path=str(binary))).prepare(4, 0)
    with pytest.raises(ConfigError, match="task.corpus=path needs task.path"):
        lm_cfg(corpus="path")
    with pytest.raises(ConfigError, match="task.corpus"):
        lm_cfg(corpus="imdb")


def test_ptb_local_copy_keeps_the_official_split(tmp_path):
    for split, text in (("train", " a b c \n b c d \n" * 50), ("valid", " a b \n"),
                        ("test", " c d e \n")):
        (tmp_path / f"ptb.{split}.txt").write_text(text)
    task = get_task(lm_cfg(corpus="ptb", path=str(tmp_path), bptt=4))
    data = task.prepare(batch_size=2, seed=0)
    ids = data.meta["ids"]
    vocab = data.meta["vocab"]
    assert [vocab[i] for i in ids["val"]] == ["a", "b", "<eos>"]
    assert [vocab[i] for i in ids["test"]] == ["c", "d", "<unk>", "<eos>"]  # e never in train
    assert "differs" in data.datasets[0].extra["checksum"]  # not the reference files
    with pytest.raises(DataError, match="needs a folder with ptb.train.txt"):
        get_task(lm_cfg(corpus="ptb", path=str(tmp_path / "ptb.train.txt"))).prepare(2, 0)


def test_wikitext2_and_text8_local_archives(tmp_path):
    wt = tmp_path / "wikitext-2-v1.zip"
    with zipfile.ZipFile(wt, "w") as zf:
        zf.writestr("wikitext-2/wiki.train.tokens", " = Title = \n the cat sat \n" * 20)
        zf.writestr("wikitext-2/wiki.valid.tokens", " the cat \n")
        zf.writestr("wikitext-2/wiki.test.tokens", " the sat \n")
    data = get_task(lm_cfg(corpus="wikitext2", path=str(wt), bptt=4)).prepare(2, 0)
    assert [data.meta["vocab"][i] for i in data.meta["ids"]["val"]] == ["the", "cat", "<eos>"]

    t8 = tmp_path / "text8.zip"
    with zipfile.ZipFile(t8, "w") as zf:
        zf.writestr("text8", " anarchism originated as a term " * 50)
    task = get_task(lm_cfg(name="lm_char", corpus="text8", path=str(t8), bptt=10))
    data = task.prepare(2, 0)
    assert set(data.meta["vocab"]) <= set("abcdefghijklmnopqrstuvwxyz ") | {"<unk>"}
    # text8's official split: 90 % / 5 % / 5 % of the characters, in order
    counts = data.meta["targets"]
    total = sum(counts.values()) + 3
    assert abs(counts["train"] + 1 - 0.9 * total) <= 2
    assert abs(counts["test"] + 1 - 0.05 * total) <= 2


def _serve(folder):
    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_download_checksum_mismatch_through_the_task(tmp_path):
    served = tmp_path / "mirror"
    served.mkdir()
    (served / "input.txt").write_text("not the real tiny shakespeare\n" * 10)
    server = _serve(served)
    try:
        mirror = f"http://127.0.0.1:{server.server_address[1]}"
        task = get_task(lm_cfg(name="lm_char", corpus="shakespeare", mirror=mirror))
        with pytest.raises(DataError) as err:
            task.prepare(4, 0)
    finally:
        server.shutdown()
        server.server_close()
    msg = str(err.value)
    expected = corpora.REMOTE["shakespeare"].files["text"].sha256
    actual = hashlib.sha256(("not the real tiny shakespeare\n" * 10).encode()).hexdigest()
    assert expected in msg and actual in msg
    bad = cache.cache_root() / "downloads" / "shakespeare-input.txt.bad"
    assert bad.is_file()
    assert not (cache.cache_root() / "downloads" / "shakespeare-input.txt").exists()


def test_download_then_cache_through_the_task(tmp_path, monkeypatch):
    served = tmp_path / "mirror"
    served.mkdir()
    body = ("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 40).encode()
    (served / "input.txt").write_bytes(body)
    # the registry's fixed hash is data: point it at the served file for this test
    rf = corpora.REMOTE["shakespeare"].files["text"]
    monkeypatch.setattr(rf, "sha256", hashlib.sha256(body).hexdigest())
    server = _serve(served)
    try:
        mirror = f"http://127.0.0.1:{server.server_address[1]}"
        data = get_task(lm_cfg(name="lm_char", corpus="shakespeare", mirror=mirror,
                               bptt=16)).prepare(4, 0)
    finally:
        server.shutdown()
        server.server_close()
    assert "F" in data.meta["vocab"] and ":" in data.meta["vocab"]  # not cleaned
    # the server is gone: the tokenised cache entry answers
    again = get_task(lm_cfg(name="lm_char", corpus="shakespeare", mirror="http://127.0.0.1:9",
                            bptt=16)).prepare(4, 0)
    np.testing.assert_array_equal(again.meta["ids"]["test"], data.meta["ids"]["test"])


def test_packaged_lee_corpus_is_text8_clean():
    task = get_task(lm_cfg(name="lm_char", corpus="lee", bptt=50, limit=20))
    data = task.prepare(8, 0)
    assert set(data.meta["vocab"]) == set("abcdefghijklmnopqrstuvwxyz ") | {"<unk>"}
    assert data.datasets[0].license and "lee" in data.datasets[0].source.lower()
    assert data.meta["targets"]["train"] == 20 * 50


# ---- metrics and carried state ------------------------------------------------------------

def _tiny_model(vocab, bptt, batch, stateful, seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(bptt,), batch_size=batch if stateful else None, dtype="int32")
    h = keras.layers.Embedding(vocab, 8)(inputs)
    h = keras.layers.LSTM(8, return_sequences=True, stateful=stateful)(h)
    return keras.Model(inputs, keras.layers.Dense(vocab)(h))


def test_carried_state_evaluation_equals_one_pass_over_each_stream(tmp_path):
    f = tmp_path / "c.txt"
    f.write_text(TEXT)
    cfg = lm_cfg(name="lm_char", corpus="path", path=str(f), bptt=7, carry_state=True)
    task = get_task(cfg)
    assert task.stateful
    data = task.prepare(batch_size=3, seed=0)
    model = _tiny_model(data.vocab_size, 7, 3, stateful=True)
    total, count = task.nll(model, data, "test")
    ids = data.meta["ids"]["test"]
    assert count == len(ids) - 1

    # the same weights, no state carried, one pass over each of the 3 contiguous streams
    import keras

    free_in = keras.Input(shape=(None,), dtype="int32")
    layers = [keras.layers.Embedding(data.vocab_size, 8),
              keras.layers.LSTM(8, return_sequences=True), keras.layers.Dense(data.vocab_size)]
    h = free_in
    for layer in layers:
        h = layer(h)
    free = keras.Model(free_in, h)
    free.set_weights(model.get_weights())
    n = len(ids) - 1
    streams = math.ceil(n / 3)
    x = np.concatenate([ids[:-1], np.zeros(3 * streams - n, np.int32)]).reshape(3, streams)
    y = np.concatenate([ids[1:], np.zeros(3 * streams - n, np.int32)]).reshape(3, streams)
    w = np.concatenate([np.ones(n), np.zeros(3 * streams - n)]).reshape(3, streams)
    logits = np.asarray(free.predict_on_batch(x))
    expected = float((language.log_softmax_nll(logits, y) * w).sum())
    assert total == pytest.approx(expected, rel=1e-4)

    # a model that does not carry state gives a different (worse-informed) number
    reset_free = _tiny_model(data.vocab_size, 7, 3, stateful=False)
    reset_free.set_weights(model.get_weights())
    task_nocarry = get_task(lm_cfg(name="lm_char", corpus="path", path=str(f), bptt=7,
                                   carry_state=False))
    d2 = task_nocarry.prepare(batch_size=3, seed=0)
    t2, c2 = task_nocarry.nll(reset_free, d2, "test")
    assert c2 == count and t2 != pytest.approx(total, rel=1e-6)


def test_scores_and_unigram_baseline_are_exact(tmp_path):
    f = tmp_path / "c.txt"
    f.write_text("abababababaaaaab" * 20)
    task = get_task(lm_cfg(name="lm_char", corpus="path", path=str(f), bptt=5,
                           carry_state=False))
    data = task.prepare(4, 0)
    base = task.baselines(data)
    train_t = data.meta["ids"]["train"][1:]
    test_t = data.meta["ids"]["test"][1:]
    v = data.vocab_size
    counts = np.bincount(train_t, minlength=v)
    p = (counts + 1) / (counts.sum() + v)
    nll = -np.log(p[test_t]).mean()
    assert base["nll"] == pytest.approx(nll)
    assert base["bpc"] == pytest.approx(nll / math.log(2))
    # the head starts at the unigram: with its kernel zeroed the model IS the baseline,
    # and the task's exact evaluation must then give the baseline's numbers
    import keras

    inputs, feats = task.build_inputs(data)
    model = keras.Model(inputs, task.build_head(keras.layers.LSTM(4, return_sequences=True)(
        feats), data))
    head = model.get_layer("logits")
    head.kernel.assign(np.zeros(head.kernel.shape, np.float32))
    total, count = task.nll(model, data, "test")
    assert total / count == pytest.approx(nll, rel=1e-5)
    word = language.WordLMTask(lm_cfg())
    assert word._scores(2.0) == {"perplexity": pytest.approx(math.exp(2.0)), "nll": 2.0}


def test_state_reset_callback_zeroes_the_states():
    model = _tiny_model(5, 4, 2, stateful=True)
    model.predict_on_batch(np.ones((2, 4), np.int32))
    lstm = [layer for layer in model.layers if getattr(layer, "stateful", False)][0]
    assert any(np.abs(np.asarray(s)).sum() > 0 for s in lstm.states)
    cb = language._state_reset_callback()
    cb.set_model(model)
    cb.on_test_begin()
    assert all(np.abs(np.asarray(s)).sum() == 0 for s in lstm.states)
