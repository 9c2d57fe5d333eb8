"""Time series: the packaged series, CSV input and its errors, metrics against baselines."""

from __future__ import annotations

import numpy as np
import pytest

from rnnbench.errors import DataError
from rnnbench.tasks import get_task, timeseries
from rnnbench.tasks.configs import TimeSeriesConfig


def ts_cfg(name, **kw):
    return TimeSeriesConfig(name=name, **kw)


def test_sunspots_monthly_from_the_statsmodels_wheel():
    values, info = timeseries.SunspotsTask(ts_cfg("sunspots")).load_series()
    assert len(values) == 3126
    np.testing.assert_allclose(values[:3], [58.0, 62.6, 70.0])
    np.testing.assert_allclose(values[-6:], [1.5, 1.4, 0.7, 1.2, 2.9, 2.6])
    assert values.min() >= 0 and "public domain" in info.license


def test_electricity_half_hourly_demand():
    values, info = timeseries.ElectricityTask(ts_cfg("electricity")).load_series()
    assert len(values) == 4032 and values[0] == 22262.0
    assert 4032 == 12 * 7 * 48  # twelve weeks of half-hours
    data = get_task(ts_cfg("electricity", lookback=336, horizon=48, season=336,
                           normalize="global", limit=16)).prepare(8, 0)
    assert data.arrays["train"][0].shape == (16, 336, 1)
    base = get_task(ts_cfg("electricity", lookback=336, horizon=48, season=336,
                           normalize="global")).baselines(data)
    assert base["mase"] < 1.5  # last week's same half-hour is a decent forecast


def write_csv(path, rows, header="date,load,note"):
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def test_csv_series_sorted_by_date_and_scaled_on_train_only(tmp_path):
    n = 200
    dates = np.datetime64("2020-01-01") + np.arange(n)
    vals = 10 + np.sin(np.arange(n) / 5.0) + np.arange(n) * 0.01
    order = np.random.default_rng(0).permutation(n)  # rows shuffled in the file
    rows = [f"{dates[i]},{vals[i]:.6f},x" for i in order]
    path = write_csv(tmp_path / "s.csv", rows)
    cfg = ts_cfg("timeseries_csv", path=str(path), column="load", date_column="date",
                 lookback=12, horizon=3, season=1, normalize="global")
    task = get_task(cfg)
    values, info = task.load_series()
    np.testing.assert_allclose(values, np.round(vals, 6))
    data = task.prepare(16, 0)
    n_train = data.meta["split_sizes"]["train"]
    assert data.meta["offset"] == pytest.approx(np.round(vals, 6)[:n_train].mean())
    assert info.extra["column"] == "load"


@pytest.mark.parametrize("case, pattern", [
    ("missing_file", "no such file"),
    ("no_column", r"task.column='demand' is not a column .* date, load, note"),
    ("text_value", r"line 4 .* 'n/a' is not a number"),
    ("empty_value", r"line 3 .* is empty"),
    ("bad_date", r"'yesterday' is not a date"),
    ("too_short", r"too short for task.lookback=12, task.horizon=3"),
    ("no_path", "task.path"),
])
def test_csv_bad_input_names_what_is_wrong(tmp_path, case, pattern):
    good = [f"2020-01-{d:02d},{d}.5,x" for d in range(1, 29)]
    path = tmp_path / "s.csv"
    column, date_column = "load", None
    if case == "missing_file":
        path = tmp_path / "nope.csv"
    elif case == "no_column":
        write_csv(path, good)
        column = "demand"
    elif case == "text_value":
        write_csv(path, good[:2] + ["2020-02-01,n/a,x"] + good[2:])
    elif case == "empty_value":
        write_csv(path, good[:1] + ["2020-02-01,,x"] + good[1:])
    elif case == "bad_date":
        write_csv(path, good + ["yesterday,3,x"])
        date_column = "date"
    elif case == "too_short":
        write_csv(path, good[:12])  # 12 values < lookback + horizon
    else:
        write_csv(path, good)
    cfg = ts_cfg("timeseries_csv", path=None if case == "no_path" else str(path),
                 column=column, date_column=date_column, lookback=12, horizon=3, season=1)
    with pytest.raises(DataError, match=pattern):
        get_task(cfg).prepare(8, 0)


def test_forecast_metrics_and_seasonal_naive():
    values = np.arange(30, dtype=float) % 5  # a period-5 pattern
    anchors = np.array([10, 14])
    pred = timeseries.seasonal_naive(values, anchors, horizon=3, season=5)
    np.testing.assert_array_equal(pred, [[values[11], values[12], values[13]],
                                         [values[15], values[16], values[17]]])
    m = timeseries.forecast_metrics(np.array([[2.0, 4.0]]), np.array([[1.0, 5.0]]), 0.5)
    assert m["mse"] == 1.0 and m["mae"] == 1.0 and m["mase"] == 2.0
    assert m["smape"] == pytest.approx(100 * np.mean([2 / 3, 2 / 9]))


def test_seasonal_differencing_forecasts_the_change_from_last_season(tmp_path):
    # a weekly pattern plus a slow trend plus noise; season 7, horizon 3
    rng = np.random.default_rng(0)
    n = 400
    vals = 50 + 5 * np.sin(2 * np.pi * np.arange(n) / 7) + 0.02 * np.arange(n) + rng.normal(0, 0.3, n)
    path = write_csv(tmp_path / "s.csv", [f"{i},{v}" for i, v in enumerate(vals)],
                     header="t,load")
    cfg = ts_cfg("timeseries_csv", path=str(path), column="load", lookback=14, horizon=3,
                 season=7, normalize="seasonal")
    task = get_task(cfg)
    data = task.prepare(16, 0)
    x, y = data.arrays["test"]
    anchors = data.meta["anchors"]["test"]
    scale, offset = data.meta["scale"], data.meta["offset"]
    s = anchors[0] + 1
    np.testing.assert_allclose(x[0, :, 0] * scale + offset, vals[s - 14:s] - vals[s - 21:s - 7],
                               rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(y[0] * scale + offset, vals[s:s + 3] - vals[s - 7:s - 4],
                               rtol=1e-5, atol=1e-4)
    n_train = data.meta["split_sizes"]["train"]
    change = vals[7:n_train] - vals[:n_train - 7]  # fitted on train only
    assert offset == pytest.approx(change.mean()) and scale == pytest.approx(change.std())
    np.testing.assert_allclose(data.meta["targets"]["test"][0], vals[s:s + 3])

    # a model that predicts "no change" (the standardised offset) IS the seasonal naive
    import keras

    inputs = keras.Input((14, 1))
    out = keras.layers.Dense(3, kernel_initializer="zeros",
                             bias_initializer=keras.initializers.Constant(-offset / scale))(
        keras.layers.Flatten()(inputs))
    got = task.evaluate(keras.Model(inputs, out), data, "test")
    base = task.baselines(data)
    for k in ("mse", "mae", "smape", "mase"):
        assert got[k] == pytest.approx(base[k], rel=1e-5), k


def test_seasonal_differencing_needs_horizon_within_a_season():
    from rnnbench.errors import ConfigError

    with pytest.raises(ConfigError, match="task.horizon <= task.season"):
        ts_cfg("electricity", lookback=336, horizon=48, season=24, normalize="seasonal")
