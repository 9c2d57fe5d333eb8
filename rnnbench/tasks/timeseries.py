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
        if cfg.normalize == "window":
            offset = 0.0
            scale = float(np.std(np.diff(train_vals)) * np.sqrt(hz)) or 1.0
        else:
            offset = float(train_vals.mean())
            scale = float(train_vals.std()) or 1.0
        # MASE scale: in-sample MAE of the seasonal-naive forecast on the train split.
        m = cfg.season
        mase_scale = float(np.mean(np.abs(train_vals[m:] - train_vals[:-m]))) or 1.0

        bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val),
                  "test": (n_train + n_val, n)}
        arrays, anchors_by_split, targets = {}, {}, {}
        for split, (lo, hi) in bounds.items():
            # a window's targets lie inside the split; its inputs may reach back before it
            first = max(lo, lb)
            starts = np.arange(first, hi - hz + 1, cfg.stride)
            if cfg.limit is not None:
                starts = starts[-cfg.limit:]
            anchors = starts - 1
            x = np.stack([values[s - lb:s] for s in starts])
            y = np.stack([values[s:s + hz] for s in starts])
            base = values[anchors][:, None] if cfg.normalize == "window" else offset
            xs = ((x - base) / scale)[..., None].astype(np.float32)
            ys = ((y - base) / scale).astype(np.float32)
            arrays[split] = (xs, ys)
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
            meta={"values": values, "scale": scale, "offset": offset,
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

    def _to_units(self, pred: np.ndarray, data: TaskData, split: str) -> np.ndarray:
        meta = data.meta
        if self.cfg.normalize == "window":
            base = meta["values"][meta["anchors"][split]][:, None]
        else:
            base = meta["offset"]
        return pred.astype(np.float64) * meta["scale"] + base

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
