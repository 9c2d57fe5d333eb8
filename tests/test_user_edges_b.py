"""Bad files and folders given to the tasks, and a quiet, honest start (issue 28, part B).

Most checks call a task's reader in-process on a bad file; the start-up behaviour
(``--version``, ``--help``, the console of a run, a missing file refused before the
store exists) goes through the real CLI.
"""

from __future__ import annotations

import io
import os
import struct
import threading
from pathlib import Path

import pytest

from rnnbench.errors import DataError
from rnnbench.tasks.configs import AudioConfig, LanguageConfig, TimeSeriesConfig
from rnnbench.tasks.files import binary_reason, check_task_files
from helpers import cli_env, run_cli


def _csv(tmp_path: Path, text: str, name: str = "s.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _series(path: Path, date_column: str | None = None, column: str = "v"):
    from rnnbench.tasks.timeseries import CsvSeriesTask

    cfg = TimeSeriesConfig(name="timeseries_csv", path=str(path), column=column,
                           date_column=date_column, lookback=4, horizon=2, season=2)
    return CsvSeriesTask(cfg).load_series()


def _rows(n: int, start: int = 0) -> str:
    return "".join(f"{i}\n" for i in range(start, start + n))


# ---- files that are not regular files ---------------------------------------------------

def test_a_fifo_as_csv_is_refused_at_once_naming_file_and_key(tmp_path):
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    cfg = TimeSeriesConfig(name="timeseries_csv", path=str(fifo), column="v")
    with pytest.raises(DataError, match=r"task.path=.*pipe.csv is a FIFO.*not a regular file"):
        check_task_files(cfg)  # config time; it would block for ever on open()
    with pytest.raises(DataError, match="is a FIFO"):
        _series(fifo)


def test_a_fifo_as_corpus_is_refused(tmp_path):
    from rnnbench.tasks.corpora import load_corpus

    fifo = tmp_path / "corpus.txt"
    os.mkfifo(fifo)
    cfg = LanguageConfig(name="lm_char", corpus="path", path=str(fifo))
    with pytest.raises(DataError, match=r"task.path=.*corpus.txt is a FIFO"):
        check_task_files(cfg)
    unblock = threading.Timer(3.0, _open_for_writing, [fifo])  # without the check:
    unblock.start()  # the read would wait for ever; this ends it after 3 s, and the test fails
    try:
        with pytest.raises(DataError, match="is a FIFO"):
            load_corpus(cfg)
    finally:
        unblock.cancel()


def _open_for_writing(fifo: Path) -> None:
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:  # no reader: nothing waits on the FIFO
        pass


def test_a_dangling_symlink_says_where_it_points(tmp_path):
    link = tmp_path / "series.csv"
    link.symlink_to(tmp_path / "gone" / "real.csv")
    with pytest.raises(DataError, match=r"broken symbolic link \(to .*gone/real.csv"):
        _series(link)


def test_a_corpus_of_nul_bytes_is_refused_naming_the_file(tmp_path):
    from rnnbench.tasks.corpora import load_corpus

    nul = tmp_path / "zeros.txt"
    nul.write_bytes(b"\x00" * 4096)
    cfg = LanguageConfig(name="lm_char", corpus="path", path=str(nul))
    with pytest.raises(DataError, match=r"zeros.txt .*not a text file: it holds NUL bytes"):
        check_task_files(cfg)
    with pytest.raises(DataError, match=r"zeros.txt is not a text file: it holds NUL bytes"):
        load_corpus(cfg)


def test_a_folder_corpus_with_a_binary_txt_names_that_file(tmp_path):
    from rnnbench.tasks.corpora import load_corpus

    (tmp_path / "a.txt").write_text("fine text " * 20)
    (tmp_path / "b.txt").write_bytes(b"text\x00\x00\x00more")
    with pytest.raises(DataError, match=r"b.txt is not a text file: it holds NUL bytes"):
        load_corpus(LanguageConfig(name="lm_char", corpus="path", path=str(tmp_path)))


def test_a_binary_csv_is_refused_before_pandas_reads_it(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes(b"\x00" * 1000)
    with pytest.raises(DataError, match=r"data.csv \(task.path\) is not a text file: it holds NUL"):
        _series(path)


def test_binary_reason_tells_text_from_binary():
    assert binary_reason(b"plain text\n") is None
    assert binary_reason("é".encode() * 10) is None
    assert binary_reason(b"x" * 10 + "é".encode()[:1]) is None  # a character cut at the end
    assert "NUL" in binary_reason(b"ab\x00")
    assert "not UTF-8" in binary_reason(b"\xff\xfe" + b"a" * 20)


# ---- CSV contents -----------------------------------------------------------------------

def test_values_beyond_float32_name_file_column_and_line(tmp_path):
    path = _csv(tmp_path, "v\n" + _rows(50) + "1e308\n" + _rows(50) + "-1e300\n")
    with pytest.raises(DataError, match=r"s.csv, line 52 \(data row 51\): column 'v' value "
                                        r"'1e308' is beyond float32's range.*2 such rows"):
        _series(path)


def test_an_empty_csv_says_it_is_empty(tmp_path):
    with pytest.raises(DataError, match=r"task.path=.*s.csv is empty \(0 bytes\)"):
        _series(_csv(tmp_path, ""))


def test_a_header_only_csv_says_there_are_no_rows(tmp_path):
    with pytest.raises(DataError, match=r"s.csv has a header \(date, v\) but no data rows"):
        _series(_csv(tmp_path, "date,v\n"))


def test_a_repeated_column_name_is_refused(tmp_path):
    with pytest.raises(DataError, match=r"names the column\(s\) 'v' more than once"):
        _series(_csv(tmp_path, "v,v\n" + "1,2\n" * 40))


def test_a_ragged_row_names_the_line(tmp_path):
    text = "v\n" + _rows(20) + "1,2,3\n" + _rows(20)
    with pytest.raises(DataError, match=r"not a readable CSV file \(.*line 22.*\)\.$"):
        _series(_csv(tmp_path, text))


def _dated(values: list[str]) -> str:
    return "date,v\n" + "".join(f"{d},{i}\n" for i, d in enumerate(values))


def test_repeated_dates_are_refused_with_the_lines(tmp_path):
    days = [f"2020-01-{d:02d}" for d in range(1, 29)]
    text = _dated(days[:10] + ["2020-01-05"] + days[10:])
    with pytest.raises(DataError, match=r"has the date '2020-01-05' on lines 6 and 12"):
        _series(_csv(tmp_path, text), date_column="date")


def test_mixed_utc_offsets_are_dates_not_a_traceback(tmp_path):
    days = [f"2020-01-{d:02d}T00:00+0{d % 2}:00" for d in range(1, 29)]
    values, _ = _series(_csv(tmp_path, _dated(days)), date_column="date")
    assert len(values) == 28


def test_an_unparsable_date_names_column_file_and_value(tmp_path):
    days = [f"2020-01-{d:02d}" for d in range(1, 29)]
    text = _dated(days[:5] + ["next tuesday"] + days[5:])
    with pytest.raises(DataError, match=r"s.csv, row 7 .*task.date_column='date' value "
                                        r"'next tuesday' is not a date\. Fix or drop "
                                        r"those rows, or leave task.date_column unset"):
        _series(_csv(tmp_path, text), date_column="date")


# ---- corpora and audio ------------------------------------------------------------------

def _wav(path: Path, samples: int = 800, rate: int = 8000) -> None:
    data = struct.pack(f"<{samples}h", *([1000, -1000] * (samples // 2)))
    header = (b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt "
              + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
              + b"data" + struct.pack("<I", len(data)))
    path.write_bytes(header + data)


def test_a_file_given_as_the_wav_folder_is_refused_at_config_time(tmp_path):
    f = tmp_path / "x.wav"
    _wav(f)
    with pytest.raises(DataError, match=r"task.path=.*x.wav is a file; a folder is expected"):
        check_task_files(AudioConfig(name="speech_audio", path=str(f)))


def test_an_unreadable_folder_is_refused(tmp_path, monkeypatch):
    from rnnbench.tasks import files

    monkeypatch.setattr(files.os, "access", lambda path, mode: False)
    with pytest.raises(DataError, match=r"the folder cannot be read \(permission denied\)"):
        check_task_files(AudioConfig(name="speech_audio", path=str(tmp_path)))


# ---- chorales: a counter while parsing ----------------------------------------------------

def test_chorale_parsing_shows_a_counter():
    from rnnbench.tasks.music import ParseProgress

    out = io.StringIO()
    progress = ParseProgress(5, every=2, stream=out)
    for i in range(5):
        progress.step(f"bwv{i}")
    progress.done()
    assert out.getvalue().splitlines() == ["chorales: parsed 2/5 (bwv1)",
                                           "chorales: parsed 4/5 (bwv3)",
                                           "chorales: parsed 5/5 (bwv4)"]

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    progress = ParseProgress(2, stream=tty)
    progress.step("a")
    progress.step("b")
    progress.done()
    assert tty.getvalue().count("\r") == 2 and "parsed 2/2 (b)" in tty.getvalue()


# ---- the real CLI -----------------------------------------------------------------------

def test_a_missing_csv_is_refused_before_the_store_exists(tmp_path):
    proc = run_cli(["task=timeseries_csv", "task.path=missing.csv", "task.column=v"],
                   tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "task.path=missing.csv: no such file (a CSV file is expected)" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "mlflow.db").exists()
    assert "oneDNN" not in proc.stderr  # TensorFlow was never loaded


def test_version_is_rnnbench_s_own(tmp_path):
    proc = run_cli(["--version"], tmp_path, timeout=60)
    assert proc.returncode == 0
    assert proc.stdout.startswith("rnnbench ") and "Python 3." in proc.stdout
    assert "TensorFlow" in proc.stdout and "Hydra" not in proc.stdout


def test_help_hides_the_tune_only_groups_which_rnnbench_tune_keeps(tmp_path):
    def groups(module: str) -> set[str]:
        proc = run_cli(["--help"], tmp_path, module=module, timeout=60)
        assert proc.returncode == 0, proc.stderr
        block = proc.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
        return {line.split(":")[0] for line in block.splitlines() if ": " in line}

    shown = groups("main")
    assert {"task", "cell", "backend"} <= shown
    assert not shown & {"tuner", "search_space", "schema", "schema/task"}
    assert {"tuner", "search_space"} <= groups("tune_main")


@pytest.mark.slow
def test_a_run_console_has_no_tensorflow_or_mlflow_start_up_lines(tmp_path):
    csv = _csv(tmp_path, "v\n" + "".join(f"{i % 7 + i // 10}\n" for i in range(120)))
    env = cli_env()
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    proc = run_cli(["task=timeseries_csv", f"task.path={csv}", "task.column=v",
                    "task.lookback=8", "task.horizon=2", "task.season=4", "task.limit=8",
                    "train.epochs=1", "model.units=4"], tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    console = proc.stdout + proc.stderr
    for line in ("absl::InitializeLog", "oneDNN custom operations",
                 "Could not find cuda drivers", "Creating initial MLflow database tables",
                 "Updating database tables"):
        assert line not in console, line
    assert "FINISHED" in console


@pytest.mark.slow
def test_a_benchmark_prints_its_table_without_tensorflow_start_up_lines(tmp_path):
    import subprocess
    import sys

    from helpers import ROOT
    from rnnbench.cli.startup import is_noise

    env = cli_env()
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "mlstm_chunks.py"),
                           "--time", "8", "--chunks", "4", "--batch", "2", "--d", "3",
                           "--n", "4", "--lstm-n", "4", "--steps", "1", "--rounds", "1"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mlstm chunk=4" in proc.stdout and "keras LSTM" in proc.stdout
    noise = [line for line in proc.stderr.splitlines() if is_noise(line)]
    assert noise == [] and "absl::InitializeLog" not in proc.stderr
