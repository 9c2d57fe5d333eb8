"""Verdicts of a report: the expected best of k trials (Dodge et al. 2019), comparisons at
equal search budgets, equivalence (TOST) instead of silence, and what a few pairs allow
(the exact sign-flip test, the Wilcoxon test's floor).

The statistics are checked in-process on small arrays against exact enumeration and
SciPy; one store, built with MLflow's client, checks `rnnbench-report` end to end.
"""

from __future__ import annotations

import csv
import itertools
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from rnnbench.errors import ConfigError
from rnnbench.report import verdicts


# ---- expected best of k trials ------------------------------------------------------

def _enumerate_best(obj, vals, k, mode):
    """E[value of the best-by-objective of k iid draws], over all n^k ordered draws."""
    n = len(obj)
    total = 0.0
    for draw in itertools.product(range(n), repeat=k):
        pick = (min if mode == "min" else max)(draw, key=lambda i: obj[i])
        total += vals[pick]
    return total / n ** k


@pytest.mark.parametrize("mode", ["min", "max"])
def test_expected_best_matches_exact_enumeration(mode):
    obj = [0.7, 0.2, 0.9, 0.4, 0.55]
    test = [7.0, 2.5, 9.1, 3.9, 6.0]
    ks = [1, 2, 3, 4]
    got_obj = verdicts.expected_best(obj, ks, mode)
    got_test = verdicts.expected_best(obj, ks, mode, test)
    for j, k in enumerate(ks):
        assert got_obj[j] == pytest.approx(_enumerate_best(obj, obj, k, mode), rel=1e-12)
        assert got_test[j] == pytest.approx(_enumerate_best(obj, test, k, mode), rel=1e-12)
    assert got_obj[0] == pytest.approx(np.mean(obj))  # k = 1: the mean
    # more trials never make the expected best worse
    assert all(np.diff(got_obj) <= 1e-12) if mode == "min" else all(np.diff(got_obj) >= -1e-12)


def test_expected_best_matches_monte_carlo_at_larger_k():
    rng = np.random.default_rng(1)
    obj = rng.normal(size=12)
    k = 7
    draws = rng.integers(0, 12, size=(200_000, k))
    mc = obj[draws].min(axis=1).mean()
    assert verdicts.expected_best(obj, [k], "min")[0] == pytest.approx(mc, abs=0.01)


def test_max_weights_are_a_distribution():
    w = verdicts.max_weights(20, 5)
    assert w.sum() == pytest.approx(1.0)
    assert (w >= 0).all() and w[-1] == pytest.approx(1 - (19 / 20) ** 5)


def test_bootstrap_interval_brackets_the_estimate_and_is_reproducible():
    obj = [0.3, 0.1, 0.8, 0.5, 0.45, 0.2, 0.9, 0.65]
    b1 = verdicts.bootstrap_best(obj, [1, 4, 8], "min", n_boot=500, seed=3)
    b2 = verdicts.bootstrap_best(obj, [1, 4, 8], "min", n_boot=500, seed=3)
    assert np.array_equal(b1, b2) and b1.shape == (500, 3)
    est = verdicts.expected_best(obj, [1, 4, 8], "min")
    lo, hi = np.quantile(b1, [0.025, 0.975], axis=0)
    assert (lo <= est).all() and (est <= hi).all() and (hi - lo > 0).all()


# ---- equivalence ----------------------------------------------------------------------

def test_tost_paired_equals_two_one_sided_scipy_tests():
    d = np.array([0.03, -0.02, 0.01, 0.04, -0.01, 0.02, 0.0, 0.015])
    delta = 0.05
    se = d.std(ddof=1) / math.sqrt(len(d))
    got = verdicts.tost_t(d.mean(), se, len(d) - 1, delta)
    p_low = sps.ttest_1samp(d, -delta, alternative="greater").pvalue
    p_high = sps.ttest_1samp(d, delta, alternative="less").pvalue
    assert got == pytest.approx(max(p_low, p_high), rel=1e-10)
    assert got < 0.05  # equivalent within ±0.05


def test_tost_welch_equals_two_one_sided_scipy_tests():
    a = np.array([1.00, 1.03, 0.98, 1.01, 1.02, 0.99])
    b = np.array([1.01, 0.97, 1.04, 1.00, 0.99])
    delta = 0.04
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    got = verdicts.tost_t(a.mean() - b.mean(), math.sqrt(va + vb), df, delta)
    p_low = sps.ttest_ind(a + delta, b, equal_var=False, alternative="greater").pvalue
    p_high = sps.ttest_ind(a - delta, b, equal_var=False, alternative="less").pvalue
    assert got == pytest.approx(max(p_low, p_high), rel=1e-10)


@pytest.mark.parametrize("mean", [0.0, 0.01, 0.02, 0.025, 0.03, -0.028])
def test_tost_at_alpha_is_the_90_percent_interval_inside_the_margin(mean):
    # what the report's note says: TOST at 0.05 equivalent <=> the 90% t interval lies
    # inside ±margin, so a 95% interval may reach past it
    se, df, margin, alpha = 0.012, 4.3, 0.05, 0.05
    half90 = sps.t.ppf(1 - alpha, df) * se
    inside = -margin < mean - half90 and mean + half90 < margin
    assert (verdicts.tost_t(mean, se, df, margin) < alpha) == inside


def test_verdict_without_margin_is_inconclusive_never_no_difference():
    v = verdicts.equivalence_verdict(False, math.nan, 0.05, None, "test_nll", -0.1, 0.2)
    assert v.startswith("inconclusive") and "no --equivalence-margin" in v
    assert "no difference" not in v and "not significant" not in v
    eq = verdicts.equivalence_verdict(False, 0.01, 0.05, 0.1, "test_nll", -0.05, 0.04)
    assert eq.startswith("equivalent within ±0.1")
    inc = verdicts.equivalence_verdict(False, 0.2, 0.05, 0.1, "test_nll", -0.05, 0.3)
    assert inc.startswith("inconclusive (CI") and "±0.1" in inc


@pytest.mark.parametrize("item, words", [
    ("test_mse=-0.05", "positive number"), ("test_mse=abc", "positive number"),
    ("test_mse=0", "positive number"), ("test_mse=nan", "positive number"),
    ("test_mse", "METRIC=VALUE"), ("=0.1", "METRIC=VALUE")])
def test_bad_margins_are_refused_with_the_fix(item, words):
    with pytest.raises(ConfigError, match="--equivalence-margin") as info:
        verdicts.parse_margins([item])
    assert words in str(info.value)


def test_margins_parse_per_metric():
    assert verdicts.parse_margins(["test_mse=0.05", "nll=0.1"]) == {"test_mse": 0.05,
                                                                    "test_nll": 0.1}


# ---- a few pairs ------------------------------------------------------------------------

def test_wilcoxon_floor_at_five_pairs():
    assert verdicts.wilcoxon_floor(5) == 0.0625
    # the most extreme sample SciPy can be given reaches exactly that floor
    assert sps.wilcoxon([0.1, 0.2, 0.3, 0.4, 0.5]).pvalue == pytest.approx(0.0625)


@pytest.mark.parametrize("d", [[0.3, -0.1, 0.25, 0.4, 0.2], [1.0, 2.0, 3.0, 4.0, 5.0],
                               [0.5, -0.5, 0.1, -0.2], [0.2, 0.2, -0.2]])
def test_sign_flip_p_is_the_exact_permutation_p(d):
    got = verdicts.sign_flip_p(d)
    arr = np.array(d)
    signs = np.array(list(itertools.product([1, -1], repeat=len(d))))
    sums = np.abs(signs @ arr)
    assert got == pytest.approx(np.mean(sums >= abs(arr.sum()) - 1e-12))
    ref = sps.permutation_test((arr,), np.mean, permutation_type="samples",
                               n_resamples=np.inf, alternative="two-sided").pvalue
    assert got == pytest.approx(ref)


def test_sign_flip_all_one_sign_reaches_below_the_wilcoxon_floor_only_with_more_pairs():
    assert verdicts.sign_flip_p([1, 2, 3, 4, 5]) == pytest.approx(2 / 32)
    assert verdicts.sign_flip_p([1, 2, 3, 4, 5, 6]) == pytest.approx(2 / 64)


# ---- end to end ----------------------------------------------------------------------

T0 = 1_790_000_000_000


def _tags(cell, sweep_id, parent, i):
    return {"task": "chorales", "task_family": "music", "cell": cell, "impl": "builtin",
            "seed": "0", "run_kind": "trial", "primary_metric": "nll", "primary_mode": "min",
            "git_commit": "0123456789abcdef0123456789abcdef01234567",
            "command": f"rnnbench-tune cell={cell}", "sweep_id": sweep_id,
            "mlflow.parentRunId": parent, "trial_id": str(i)}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Two sweeps on one oracle seed of different sizes: peephole 12 trials, cifg 5 (the
    first 5 points of the same sequence, each 0.01 worse), so equal k = 5."""
    import mlflow
    from mlflow.entities import Metric, Param, RunTag

    shm = Path("/dev/shm")
    home = (Path(tempfile.mkdtemp(prefix="rnnbench-verdicts-", dir=shm))
            if shm.is_dir() and os.access(shm, os.W_OK) else tmp_path_factory.mktemp("v"))
    uri = f"sqlite:///{home / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("greffmini")
    clock = [T0]

    def run(name, tags, params, metrics, history):
        clock[0] += 60_000
        rid = client.create_run(exp, start_time=clock[0], tags=tags, run_name=name).info.run_id
        items = [Metric(k, float(v), clock[0], 0) for k, v in metrics.items()]
        for key, values in history.items():
            items += [Metric(key, float(v), clock[0] + j, j + 1) for j, v in enumerate(values)]
        client.log_batch(rid, metrics=items, params=[Param(k, str(v)) for k, v in params.items()],
                         tags=[RunTag("mlflow.runName", name)])
        client.set_terminated(rid, "FINISHED", end_time=clock[0] + 1000)
        return rid

    vals = [9.5, 9.1, 9.8, 9.3, 9.2, 9.6, 9.05, 9.4, 9.7, 9.15, 9.9, 9.35]
    data = {}
    for cell, n, shift in (("peephole", 12, 0.0), ("cifg", 5, 0.01)):
        sweep_id = f"greff-chorales-{cell}-random-0001"
        parent = run(f"sweep-{sweep_id}", {"run_kind": "sweep", "sweep_id": sweep_id,
                                            "task": "chorales", "cell": cell,
                                            "objective": "val_loss", "direction": "min"},
                     {"tuner.objective": "val_loss"}, {}, {})
        obj, test = [], []
        for i in range(n):
            v = vals[i] + shift
            t = v + 0.1
            run(f"trial-{i}", _tags(cell, sweep_id, parent, i),
                {"cell.name": cell, "seed": "0", "hp/lr": f"{0.001 * (i + 1):g}",
                 "optimizer.lr": f"{0.001 * (i + 1):g}"},
                {"test_nll": t}, {"val_loss": [v + 0.5, v, v + 0.02]})
            obj.append(v)
            test.append(t)
        data[cell] = (obj, test)
    # several searches (oracle seeds) per cell in another experiment: peephole 3 searches
    # of 6 trials, cifg 3 of 4; the replicates are the best of each search's first 4
    exp = client.create_experiment("seeds")
    searches: dict = {}
    for cell, n, shift in (("peephole", 6, 0.0), ("cifg", 4, 0.3)):
        for seed in range(3):
            sweep_id = f"chorales-{cell}-random-seed{seed}"
            parent = run(f"sweep-{sweep_id}", {"run_kind": "sweep", "sweep_id": sweep_id,
                                                "task": "chorales", "cell": cell,
                                                "objective": "val_loss", "direction": "min"},
                         {"tuner.objective": "val_loss"}, {}, {})
            trials = []
            for i in range(n):
                v = vals[(i + 3 * seed) % len(vals)] + shift + 0.01 * seed
                t = v + 0.2
                run(f"trial-{i}", _tags(cell, sweep_id, parent, i),
                    {"cell.name": cell, "seed": str(seed), "hp/lr": f"{0.002 * (i + seed):g}"},
                    {"test_nll": t}, {"val_loss": [v + 0.5, v]})
                trials.append((v, t))
            searches.setdefault(cell, []).append(trials)
    data["searches"] = searches
    yield uri, data
    if str(home).startswith("/dev/shm/"):
        shutil.rmtree(home, ignore_errors=True)


def _csv(path):
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_report_compares_at_equal_budget_with_an_equivalence_verdict(store, tmp_path, capsys):
    from rnnbench.report.cli import main

    uri, data = store
    out = tmp_path / "r"
    assert main(["--tracking-uri", uri, "--experiment", "greffmini", "--baseline", "peephole",
                 "--equivalence-margin", "test_nll=0.5", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    tables = out / "tables"
    curves = _csv(tables / "chorales-sweep-trials-expected-best.csv")
    assert {(r["row"], r["n_trials"]) for r in curves} == {("peephole", "12"), ("cifg", "5")}
    assert len([r for r in curves if r["row"] == "peephole"]) == 12
    for cell in ("peephole", "cifg"):
        obj, test = data[cell]
        exp = verdicts.expected_best(obj, range(1, len(obj) + 1), "min", test)
        got = [float(r["test_nll_expected"]) for r in curves if r["row"] == cell]
        assert got == pytest.approx(exp.tolist(), rel=1e-9)
        assert float(next(r for r in curves if r["row"] == cell and r["k"] == "1")
                     ["objective_expected"]) == pytest.approx(np.mean(obj))
    equal = _csv(tables / "chorales-sweep-trials-equal-budget.csv")
    assert len(equal) == 1 and equal[0]["k"] == "5"  # the smallest search, not 12 vs 5
    at5 = verdicts.expected_best(data["peephole"][0], [5], "min", data["peephole"][1])[0]
    assert float(equal[0]["baseline_value"]) == pytest.approx(at5)
    assert equal[0]["verdict"].startswith("equivalent within ±0.5")
    assert equal[0]["margin"] == "0.5"
    md = (out / "report.md").read_text()
    assert "at equal budgets" in md and "Caveat: this test is pseudo-replicated" in md
    assert "is the 90% interval inside ±δ" in md
    assert "figures/chorales-sweep-trials-expected-best.png" in md
    assert "at equal budgets" in printed and "k=5" in printed


@pytest.mark.slow
def test_report_without_margin_says_inconclusive_and_why(store, tmp_path, capsys):
    from rnnbench.report.cli import main

    uri, _ = store
    out = tmp_path / "r"
    assert main(["--tracking-uri", uri, "--experiment", "greffmini", "--baseline", "peephole",
                 "--out", str(out)]) == 0
    equal = _csv(out / "tables" / "chorales-sweep-trials-equal-budget.csv")
    assert equal[0]["verdict"] == "inconclusive (no --equivalence-margin given for test_nll)"
    paired = _csv(out / "tables" / "chorales-sweep-trials-paired.csv")
    # 5 shared points: the exact sign-flip test is added and the Wilcoxon floor said
    assert float(paired[0]["p_sign_flip"]) == pytest.approx(2 / 32)
    md = (out / "report.md").read_text()
    assert "1/2^(n−1) (n=5: 0.0625)" in md
    assert "no difference" not in md.replace("never 'no difference'", "")


@pytest.mark.slow
def test_several_searches_are_the_replicates_at_equal_budget(store, tmp_path):
    from rnnbench.report.cli import main

    uri, data = store
    out = tmp_path / "r"
    assert main(["--tracking-uri", uri, "--experiment", "seeds", "--baseline", "peephole",
                 "--out", str(out)]) == 0
    equal = _csv(out / "tables" / "chorales-sweep-trials-equal-budget.csv")
    assert len(equal) == 1
    row = equal[0]
    assert row["k"] == "4" and row["replicates"] == "searches (3 and 3)"
    best = {cell: [min(trials[:4])[1] for trials in data["searches"][cell]]
            for cell in ("peephole", "cifg")}
    assert float(row["value"]) == pytest.approx(np.mean(best["cifg"]))
    assert float(row["baseline_value"]) == pytest.approx(np.mean(best["peephole"]))
    assert float(row["p"]) == pytest.approx(
        sps.ttest_ind(best["cifg"], best["peephole"], equal_var=False).pvalue)
    assert row["verdict"] == "worse (significant)"
    # the text beside the table names the k the table used (4 trials a search), not the
    # size of the smaller pooled row (cifg: 3 searches of 4 = 12)
    md = (out / "report.md").read_text()
    assert "each search's first k trials (k = 4: the smallest search of the two)" in md
    assert "at the same k = 12" not in md
    # the figure marks that k too, and the expected-best table shows its column
    assert "bootstrap bands; dotted: k = 4, the comparison's" in md
    assert "| k=4 |" in md


@pytest.mark.slow
def test_negative_margin_is_a_clear_error(store, tmp_path, capsys):
    from rnnbench.report.cli import main

    uri, _ = store
    assert main(["--tracking-uri", uri, "--equivalence-margin", "test_nll=-1",
                 "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "--equivalence-margin 'test_nll=-1'" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_inconclusive_does_not_claim_the_interval_includes_zero_when_it_does_not():
    v = verdicts.equivalence_verdict(False, 0.3, 0.05, 0.1, "test_nll", 0.01, 0.12)
    assert "includes 0" not in v and "not significant after Holm" in v


def test_bootstrap_p_values_are_never_zero():
    diffs = np.full(1999, 0.5)
    assert verdicts.bootstrap_p(diffs) == pytest.approx(2 / 2000)
    assert verdicts.tost_bootstrap(np.zeros(1999), 0.1) == pytest.approx(1 / 2000)


@pytest.mark.slow
def test_budget_k_sets_the_equal_budget_and_cannot_extrapolate(store, tmp_path, capsys):
    from rnnbench.report.cli import main

    uri, data = store
    out = tmp_path / "r"
    assert main(["--tracking-uri", uri, "--experiment", "greffmini", "--baseline", "peephole",
                 "--budget-k", "3", "--out", str(out)]) == 0
    equal = _csv(out / "tables" / "chorales-sweep-trials-equal-budget.csv")
    assert equal[0]["k"] == "3"
    at3 = verdicts.expected_best(data["cifg"][0], [3], "min", data["cifg"][1])[0]
    assert float(equal[0]["value"]) == pytest.approx(at3)
    capsys.readouterr()
    for k, words in (("6", "a search of only 5 finished trials"), ("0", "1 or more")):
        assert main(["--tracking-uri", uri, "--experiment", "greffmini", "--baseline",
                     "peephole", "--budget-k", k, "--out", str(tmp_path / f"x{k}")]) == 2
        err = capsys.readouterr().err
        assert f"--budget-k {k}" in err and words in err and "Traceback" not in err
        assert not (tmp_path / f"x{k}").exists()


def test_the_console_keeps_the_mde_beside_a_verdict_that_is_not_significant():
    from rnnbench.report.cli import console_verdict

    assert console_verdict("inconclusive (no --equivalence-margin given for test_mse)", 0.4712) \
        == "inconclusive (MDE 0.47; no --equivalence-margin given for test_mse)"
    assert console_verdict("not significant", 1.14) == "not significant (MDE 1.1)"
    assert console_verdict("better (significant)", 0.2) == "better (significant)"
    assert console_verdict("inconclusive (CI [-1, 1] includes 0 and reaches ±0.1)",
                           float("nan")).startswith("inconclusive (CI")


# ---- ratio margins: a metric compared on the log scale -------------------------------

ADDING_LSTM = [0.10, 0.02, 0.05, 0.15, 0.008]
ADDING_FACTORS = {"indrnn": [0.5, 0.4, 0.45, 0.55, 0.5],   # about half: better
                  "gru": [1.1, 0.95, 1.05, 0.9, 1.02],     # within a factor of 2
                  "rnn": [4.0, 0.3, 2.5, 0.6, 1.8]}        # all over the place


@pytest.fixture(scope="module")
def adding_store(tmp_path_factory):
    """Five seeds of four cells on the adding problem, MSEs spanning orders of magnitude
    (as they do between seeds of one cell), and a sixth gru seed with an MSE of 0."""
    import mlflow
    from mlflow.entities import Metric, RunTag

    home = tmp_path_factory.mktemp("adding")
    uri = f"sqlite:///{home / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("addingmini")
    values = {"lstm": ADDING_LSTM} | {c: [a * f for a, f in zip(ADDING_LSTM, fs)]
                                      for c, fs in ADDING_FACTORS.items()}
    clock = T0
    for cell, vals in values.items():
        for seed, v in enumerate(vals + ([0.0] if cell == "gru" else [])):
            clock += 60_000
            tags = {"task": "adding", "cell": cell, "impl": "builtin", "seed": str(seed),
                    "run_kind": "run", "primary_metric": "mse", "primary_mode": "min",
                    "git_commit": "0123456789abcdef0123456789abcdef01234567",
                    "sweep_id": "adding-mini"}
            rid = client.create_run(exp, start_time=clock, tags=tags,
                                    run_name=f"{cell}-{seed}").info.run_id
            client.log_batch(rid, metrics=[Metric("test_mse", v, clock, 0)],
                             tags=[RunTag("mlflow.runName", f"{cell}-{seed}")])
            client.set_terminated(rid, "FINISHED", end_time=clock + 1000)
    return uri, values


@pytest.mark.slow
def test_a_ratio_margin_compares_on_the_log_scale(adding_store, tmp_path, capsys):
    from scipy import stats as sps

    from rnnbench.report.cli import main

    uri, values = adding_store
    out = tmp_path / "r"
    assert main(["--tracking-uri", uri, "--experiment", "addingmini",
                 "--equivalence-margin", "test_mse=x2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    tables = out / "tables"
    results = {r["row"]: r for r in _csv(tables / "adding-results.csv")}
    for cell, vals in values.items():  # the mean of the logs, the 0 not averaged in
        assert float(results[cell]["test_ln_mse_mean"]) == pytest.approx(
            np.mean(np.log(vals)), rel=1e-12)
        assert results[cell]["n"] == "5"
        assert float(results[cell]["geomean"]) == pytest.approx(
            math.exp(np.mean(np.log(vals))), rel=1e-12)
    paired = {r["row"]: r for r in _csv(tables / "adding-paired.csv")}
    base = np.log(values["lstm"])
    for cell in ADDING_FACTORS:
        d = np.log(values[cell]) - base
        row = paired[cell]
        assert float(row["diff_mean"]) == pytest.approx(d.mean(), rel=1e-12)
        assert float(row["p_t"]) == pytest.approx(sps.ttest_1samp(d, 0).pvalue, rel=1e-9)
        assert float(row["ratio"]) == pytest.approx(np.exp(d.mean()), rel=1e-12)
        half = float(row["diff_ci_half_width"])
        assert float(row["ratio_ci_low"]) == pytest.approx(np.exp(d.mean() - half))
        assert float(row["ratio_ci_high"]) == pytest.approx(np.exp(d.mean() + half))
        assert float(row["mde_factor"]) == pytest.approx(np.exp(float(row["mde"])))
        if row["significant"] == "false":  # the margin of an equivalence test
            assert float(row["margin"]) == pytest.approx(math.log(2))
    assert paired["indrnn"]["verdict"] == "better (significant)"
    assert paired["gru"]["verdict"].startswith("equivalent within a factor of 2 (TOST p")
    assert paired["rnn"]["verdict"].startswith("inconclusive (ratio CI [")
    assert "includes 1 and reaches a factor of 2" in paired["rnn"]["verdict"]
    # TOST on the logs against ±ln 2, as two one-sided scipy tests
    d = np.log(values["gru"]) - base
    p_tost = max(sps.ttest_1samp(d, -math.log(2), alternative="greater").pvalue,
                 sps.ttest_1samp(d, math.log(2), alternative="less").pvalue)
    assert float(paired["gru"]["p_tost"]) == pytest.approx(p_tost, rel=1e-9)
    md = (out / "report.md").read_text()
    assert "compared as `ln(test_mse)`" in md and "exp(Δ) is the ratio" in md
    assert "non-finite `test_ln_mse`" in md  # the MSE of 0, listed, not averaged in
    assert "adding" in printed


def test_ratio_margins_parse_to_the_log_scale():
    assert verdicts.parse_margins(["test_mse=x2", "nll=0.1", "mse=×1.5"]) == {
        "test_ln_mse": pytest.approx(math.log(1.5)), "test_nll": 0.1}
    assert verdicts.parse_margins(["ln_mse=x2"]) == {"test_ln_mse": pytest.approx(math.log(2))}
    for bad in ("test_mse=x1", "test_mse=x0.5", "test_mse=xx", "test_mse=x"):
        with pytest.raises(ConfigError, match="factor above 1"):
            verdicts.parse_margins([bad])
    inc = verdicts.equivalence_verdict(False, 0.3, 0.05, math.log(2), "test_ln_mse",
                                       math.log(0.4), math.log(1.2))
    assert inc == "inconclusive (ratio CI [0.4, 1.2] includes 1 and reaches a factor of 2)"
