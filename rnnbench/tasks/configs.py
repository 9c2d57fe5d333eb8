"""Config schemas of the tasks, one dataclass per task option in ``conf/task/``, and
``TASKS``, the one table of task names: each name's schema and implementation.

Kept free of TensorFlow so that the config can be composed and checked before the
Keras backend is chosen. ``TASK_SCHEMAS`` (read from ``TASKS``) maps each
``conf/task/<name>.yaml`` to its schema; the YAML file pulls it in with
``- /schema/task/<name>@_here_`` (or, in a task file of the global package that also
sets its paper's training protocol, as the long-range probes do, with
``- /schema/task/<name>@task``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from omegaconf import MISSING

from rnnbench.errors import ConfigError


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


@dataclass
class TaskConfig:
    """Keys every task has. ``limit`` caps the examples (windows, utterances) per split,
    for smoke runs and tests; null uses all of them."""

    name: str = MISSING
    limit: Optional[int] = None

    def __post_init__(self) -> None:
        if self.limit is not None:
            _require(self.limit >= 1, f"task.limit={self.limit} is not allowed: "
                     "task.limit must be null or an integer >= 1.")


@dataclass
class TimeSeriesConfig(TaskConfig):
    """Direct multi-step forecasting: ``lookback`` past values predict the next
    ``horizon``. The split is chronological (``val_fraction``/``test_fraction`` of the
    series at the end). ``normalize``: ``window`` subtracts each window's last value and
    divides by the train split's scale (for trending series); ``global`` standardises
    with the train split's mean and std; ``seasonal`` differences the series at lag
    ``season`` (inputs and targets become the change from one season earlier,
    standardised on train), so the model forecasts the departure from the
    seasonal-naive forecast (needs ``horizon <= season``). ``season`` is also the
    period of the seasonal-naive baseline and MASE."""

    lookback: int = 52
    horizon: int = 8
    season: int = 52
    stride: int = 1
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    normalize: str = "window"
    path: Optional[str] = None
    column: Optional[str] = None
    date_column: Optional[str] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("lookback", "horizon", "season", "stride"):
            value = getattr(self, key)
            _require(value >= 1, f"task.{key}={value} is not allowed: "
                     f"task.{key} must be an integer >= 1.")
        for key in ("val_fraction", "test_fraction"):
            value = getattr(self, key)
            _require(0 < value < 0.5, f"task.{key}={value} is not allowed: "
                     f"task.{key} must be in (0, 0.5).")
        _require(self.normalize in ("window", "global", "seasonal"),
                 f"task.normalize={self.normalize!r} is not allowed: "
                 "task.normalize must be one of window, global, seasonal.")
        _require(self.normalize != "seasonal" or self.horizon <= self.season,
                 f"task.normalize=seasonal needs task.horizon <= task.season (got "
                 f"horizon={self.horizon}, season={self.season}): each forecast step is "
                 "the change from the value one season earlier, which must be known.")


def _check_positive(cfg: object, *keys: str) -> None:
    for key in keys:
        value = getattr(cfg, key)
        _require(value >= 1, f"task.{key}={value} is not allowed: "
                 f"task.{key} must be an integer >= 1.")


def _check_fractions(cfg: object, *keys: str) -> None:
    for key in keys:
        value = getattr(cfg, key)
        _require(0 < value < 0.5, f"task.{key}={value} is not allowed: "
                 f"task.{key} must be in (0, 0.5).")


def _check_choice(cfg: object, key: str, choices: tuple[str, ...]) -> None:
    value = getattr(cfg, key)
    _require(value in choices, f"task.{key}={value!r} is not allowed: "
             f"task.{key} must be one of {', '.join(choices)}.")




@dataclass
class LanguageConfig(TaskConfig):
    """Language modeling on a contiguous token stream (``lm_char``, ``lm_word``).

    ``corpus``: ``wiki`` (gensim's Wikipedia sample, the default), ``lee`` (gensim's
    small news corpus), ``ptb``, ``wikitext2``, ``text8``, ``shakespeare`` (downloaded
    into the cache with a fixed SHA-256, or read from ``path``), or ``path`` (any text
    file, or a folder of ``.txt`` files, at ``path``). ``mirror`` replaces the download
    URL's folder (the checksum stays fixed). ``clean``: ``auto`` (text8-style for wiki,
    lee and text8, as-is for the others), ``text8`` (lowercase a-z and single spaces),
    ``lower``, ``none``. Corpora without an official split are split contiguously by
    ``val_fraction``/``test_fraction`` (the end of the text). The vocabulary comes from
    the train split only: the ``vocab_size - 1`` most frequent tokens plus ``<unk>``
    (null: every train token). Training runs truncated BPTT over contiguous windows of
    ``bptt`` tokens; ``carry_state`` carries the recurrent state from one window to the
    next (stateful layers, fixed batch, states reset every epoch and before each
    evaluation); otherwise every window starts from a zero state. ``limit`` caps each
    split at ``limit * bptt`` tokens."""

    corpus: str = "wiki"
    path: Optional[str] = None
    mirror: Optional[str] = None
    clean: str = "auto"
    vocab_size: Optional[int] = None
    bptt: int = 35
    carry_state: bool = True
    embedding_dim: int = 128
    val_fraction: float = 0.1
    test_fraction: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        # imported here, not at the top: the corpora module loads NumPy, and composing a
        # config should not
        from rnnbench.tasks.corpora import CORPORA

        _check_choice(self, "corpus", CORPORA)
        _check_choice(self, "clean", ("auto", "text8", "lower", "none"))
        _check_positive(self, "bptt", "embedding_dim")
        _check_fractions(self, "val_fraction", "test_fraction")
        if self.vocab_size is not None:
            _require(self.vocab_size >= 2, f"task.vocab_size={self.vocab_size} is not "
                     "allowed: task.vocab_size must be null or an integer >= 2.")
        _require(self.corpus != "path" or bool(self.path),
                 "task.corpus=path needs task.path=<a text file or a folder of .txt files>.")


@dataclass
class VowelsConfig(TaskConfig):
    """JapaneseVowels speaker classification (9 speakers, 12 LPC cepstra per frame,
    7-29 frames). The official train/test split is kept; ``val_fraction`` of each
    speaker's train utterances (chosen with ``split_seed``) become the validation set.
    ``path``: a folder with ``JapaneseVowels_TRAIN.ts``/``_TEST.ts`` to use instead of
    the copy in the sktime wheel."""

    val_fraction: float = 0.15
    split_seed: int = 0
    path: Optional[str] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_fractions(self, "val_fraction")


@dataclass
class AudioConfig(TaskConfig):
    """Spoken-word classification from WAV files through an MFCC front end.

    ``path``: a folder laid out like Free Spoken Digits (``layout=fsdd``: the label is the
    file name up to the first ``_``, e.g. ``7_jackson_12.wav``) or Speech Commands
    (``layout=folders``: the label is the sub-folder; ``_background_noise_`` is skipped,
    and ``validation_list.txt``/``testing_list.txt`` are used when present); ``auto``
    picks by what is there. Every file must have the same sample rate (``sample_rate``,
    null: the first file's). Audio is cut at ``max_seconds``. Front end: STFT with
    ``frame_ms``/``hop_ms`` → ``n_mels`` mel bands between ``fmin`` and ``fmax`` (null:
    Nyquist) → log → DCT, first ``n_mfcc`` coefficients, optional ``deltas`` (Δ and ΔΔ)
    and per-utterance mean/variance ``normalize``."""

    path: Optional[str] = None
    layout: str = "auto"
    sample_rate: Optional[int] = None
    max_seconds: float = 2.0
    frame_ms: float = 25.0
    hop_ms: float = 10.0
    n_mels: int = 40
    n_mfcc: int = 13
    fmin: float = 20.0
    fmax: Optional[float] = None
    deltas: bool = True
    normalize: bool = True
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    split_seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_choice(self, "layout", ("auto", "fsdd", "folders"))
        _check_positive(self, "n_mels", "n_mfcc")
        _require(self.n_mfcc <= self.n_mels, f"task.n_mfcc={self.n_mfcc} is not allowed: "
                 f"task.n_mfcc must be <= task.n_mels ({self.n_mels}).")
        for key in ("max_seconds", "frame_ms", "hop_ms"):
            value = getattr(self, key)
            _require(value > 0, f"task.{key}={value} is not allowed: task.{key} must be > 0.")
        _require(self.fmin >= 0, f"task.fmin={self.fmin} is not allowed: task.fmin must be >= 0.")
        if self.fmax is not None:
            _require(self.fmax > self.fmin, f"task.fmax={self.fmax} is not allowed: "
                     f"task.fmax must be null or > task.fmin ({self.fmin}).")
        if self.sample_rate is not None:
            _require(self.sample_rate >= 1000, f"task.sample_rate={self.sample_rate} is not "
                     "allowed: task.sample_rate must be null or an integer >= 1000 (Hz).")
        _check_fractions(self, "val_fraction", "test_fraction")


@dataclass
class AddingConfig(TaskConfig):
    """The adding problem (Arjovsky et al. 2016 form): ``length`` steps of two channels,
    values uniform in [0, 1] and a marker channel with one 1 in each half; the target
    is the sum of the two marked values. ``n_train``/``n_val``/``n_test`` sequences are
    generated with ``data_seed`` (fixed, independent of the run's seed)."""

    length: int = 100
    n_train: int = 50000
    n_val: int = 2000
    n_test: int = 2000
    data_seed: int = 1234

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.length >= 2, f"task.length={self.length} is not allowed: "
                 "task.length must be an integer >= 2.")
        _check_positive(self, "n_train", "n_val", "n_test")


@dataclass
class CopyConfig(TaskConfig):
    """The copy-memory task (Arjovsky et al. 2016): ``n_symbols`` symbols from
    ``n_categories`` categories, ``length`` blanks, a delimiter, then the symbols must be
    reproduced. Sequences have ``length + 2 * n_symbols`` steps."""

    length: int = 100
    n_symbols: int = 10
    n_categories: int = 8
    n_train: int = 20000
    n_val: int = 2000
    n_test: int = 2000
    data_seed: int = 1234

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive(self, "length", "n_symbols", "n_train", "n_val", "n_test")
        _require(self.n_categories >= 2, f"task.n_categories={self.n_categories} is not "
                 "allowed: task.n_categories must be an integer >= 2.")


@dataclass
class ChoralesConfig(TaskConfig):
    """Bach chorales (music21 corpus, Riemenschneider numbering) as an 88-key piano roll
    (MIDI 21-108) with one step per ``step_quarters`` quarter notes (1.0 as in JSB
    Chorales). A fixed permutation (``split_seed``) splits them by ``val_fraction`` and
    ``test_fraction``; ``limit`` keeps the first ``limit`` chorales of each split (only
    those are parsed)."""

    step_quarters: float = 1.0
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    split_seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.step_quarters > 0, f"task.step_quarters={self.step_quarters} is not "
                 "allowed: task.step_quarters must be > 0.")
        _check_fractions(self, "val_fraction", "test_fraction")


@dataclass(frozen=True)
class TaskEntry:
    """One row of the task table.

    Args:
        schema: the config schema of ``conf/task/<name>.yaml``.
        target: ``"module:Class"`` of the task's implementation, imported on first use
            (the task modules import TensorFlow).
    """

    schema: type
    target: str


#: The task table: every task name, its config schema and its implementation.
TASKS: dict[str, TaskEntry] = {
    "co2": TaskEntry(TimeSeriesConfig, "rnnbench.tasks.timeseries:Co2Task"),
    "sunspots": TaskEntry(TimeSeriesConfig, "rnnbench.tasks.timeseries:SunspotsTask"),
    "electricity": TaskEntry(TimeSeriesConfig, "rnnbench.tasks.timeseries:ElectricityTask"),
    "timeseries_csv": TaskEntry(TimeSeriesConfig, "rnnbench.tasks.timeseries:CsvSeriesTask"),
    "lm_char": TaskEntry(LanguageConfig, "rnnbench.tasks.language:CharLMTask"),
    "lm_word": TaskEntry(LanguageConfig, "rnnbench.tasks.language:WordLMTask"),
    "speech_vowels": TaskEntry(VowelsConfig, "rnnbench.tasks.speech:VowelsTask"),
    "speech_audio": TaskEntry(AudioConfig, "rnnbench.tasks.speech:AudioTask"),
    "adding": TaskEntry(AddingConfig, "rnnbench.tasks.probes:AddingTask"),
    "copy": TaskEntry(CopyConfig, "rnnbench.tasks.probes:CopyTask"),
    "chorales": TaskEntry(ChoralesConfig, "rnnbench.tasks.music:ChoralesTask"),
}

#: Task name -> config schema, read from `TASKS` (the config store registers these).
TASK_SCHEMAS: dict[str, type] = {name: entry.schema for name, entry in TASKS.items()}
