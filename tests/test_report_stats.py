"""Known-answer tests of the report's statistics, number formats and parsers (no store)."""

from __future__ import annotations

import math
import random

import pytest
from scipy import stats as sps

from rnnbench.report import stats
from rnnbench.report.document import fmt_ci, fmt_p
from rnnbench.report.gradient_flow import parse_gradient_flow
from rnnbench.report.runs import guess_mode, natural_key

# Welch (1947) worked examples as given in textbooks and on Wikipedia's "Welch's t-test":
# example 1: t = -2.46, nu = 25.0, p = 0.021; example 2: t = -1.57, nu = 9.9, p = 0.149.
A1 = [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4]
A2 = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4]
B1 = [17.2, 20.9, 22.6, 18.1, 21.7, 21.4, 23.5, 24.2, 14.7, 21.8]
B2 = [21.5, 22.8, 21.0, 23.0, 21.6, 23.6, 22.5, 20.7, 23.4, 21.8, 20.7, 21.7, 21.5, 22.5, 23.6,
      21.5, 22.5, 23.5, 21.5, 21.8]


def test_confidence_interval_of_a_known_sample():
    # mean 3, s = sqrt(2.5), t(0.975, 4) = 2.776445 (tables): 2.776445 * 1.581139 / sqrt(5)
    iv = stats.mean_ci([1, 2, 3, 4, 5])
    assert iv.mean == 3.0 and iv.n == 5
    assert iv.sd == pytest.approx(1.5811388, rel=1e-7)
    assert iv.half_width == pytest.approx(1.963243, abs=1e-6)
    assert (iv.low, iv.high) == pytest.approx((1.036757, 4.963243), abs=1e-6)


def test_confidence_interval_at_other_levels_and_small_samples():
    # 99%: t(0.995, 2) = 9.924843; sample 10, 12, 14: s = 2
    iv = stats.mean_ci([10.0, 12.0, 14.0], confidence=0.99)
    assert iv.half_width == pytest.approx(9.924843 * 2 / math.sqrt(3), rel=1e-6)
    one = stats.mean_ci([4.2])
    assert one.mean == 4.2 and one.n == 1 and math.isnan(one.half_width)
    assert stats.mean_ci([]).n == 0 and math.isnan(stats.mean_ci([]).mean)


@pytest.mark.parametrize("a, b, t, df, p", [(A1, A2, -2.46, 25.0, 0.021),
                                            (B1, B2, -1.57, 9.9, 0.149)])
def test_welch_matches_the_textbook_examples(a, b, t, df, p):
    res = stats.welch_t(a, b)
    assert round(res.t, 2) == t
    assert round(res.df, 1) == df
    assert round(res.p, 3) == p


def test_welch_matches_the_formula_by_hand():
    def var(xs):
        m = sum(xs) / len(xs)
        return sum((x - m) ** 2 for x in xs) / (len(xs) - 1)

    sa, sb = var(A1) / len(A1), var(A2) / len(A2)
    t = (sum(A1) / len(A1) - sum(A2) / len(A2)) / math.sqrt(sa + sb)
    df = (sa + sb) ** 2 / (sa**2 / (len(A1) - 1) + sb**2 / (len(A2) - 1))
    p = 2 * sps.t.sf(abs(t), df)
    res = stats.welch_t(A1, A2)
    assert (res.t, res.df, res.p) == pytest.approx((t, df, p), rel=1e-10)


def test_welch_is_undefined_without_two_values_or_spread():
    assert math.isnan(stats.welch_t([1.0], [1.0, 2.0]).p)
    assert math.isnan(stats.welch_t([2.0, 2.0], [2.0, 2.0]).p)
    # one sample without spread is still a valid test
    assert stats.welch_t([2.0, 2.0, 2.0], [1.0, 1.5, 1.2]).p < 0.05


def test_holm_on_known_p_values():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> monotone
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.2, 0.6]) == pytest.approx([0.4, 0.6])
    assert stats.holm([0.5, 0.9, 0.7]) == [1.0, 1.0, 1.0]  # capped at 1
    assert stats.holm([]) == []
    out = stats.holm([0.01, math.nan, 0.02])  # NaN: not a test, not in the family
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)


def test_holm_agrees_with_statsmodels():
    from statsmodels.stats.multitest import multipletests

    ps = [0.001, 0.2, 0.013, 0.04, 0.049, 0.0002, 0.7]
    assert stats.holm(ps) == pytest.approx(list(multipletests(ps, method="holm")[1]))


def test_best_fraction_picks_the_best_tenth():
    items = list(range(25))  # score = item; 25 items -> ceil(2.5) = 3
    assert stats.best_fraction(items, float, "min") == [0, 1, 2]
    assert stats.best_fraction(items, float, "max") == [24, 23, 22]
    assert stats.best_fraction([5.0, math.nan, 1.0], float, "min") == [1.0]  # NaN never best
    assert stats.best_fraction([3, 1, 1, 2] * 5, float, "min", fraction=0.1) == [1, 1]
    assert stats.best_fraction([math.nan], float, "min") == []


def test_fanova_ranks_the_hyperparameter_that_matters_first():
    from rnnbench.report.importance import fanova

    rng = random.Random(0)  # a random search: the hyperparameters are independent
    params, objective = [], []
    for _ in range(30):
        lr = 10 ** rng.uniform(-4, -1)
        units = rng.randint(16, 256)
        params.append({"optimizer.lr": repr(lr), "model.units": str(units),
                       "optimizer.name": rng.choice(["adam", "sgd"])})
        objective.append((math.log10(lr) + 2.5) ** 2 + 0.001 * units)
    keys = ["model.units", "optimizer.lr", "optimizer.name"]
    ranked = fanova(params, objective, keys, "min")
    assert [k for k, _ in ranked][0] == "optimizer.lr"
    assert ranked[0][1] > 0.8
    # main effects, not normalised: an additive objective leaves little to interactions
    assert 0.9 < sum(v for _, v in ranked) <= 1.0 + 1e-9
    assert fanova(params, objective, keys, "min") == ranked  # seeded: same answer


def test_fanova_leaves_a_pure_interaction_to_interactions():
    from rnnbench.report.importance import fanova

    rng = random.Random(1)  # objective x*y: no main effect on [-1, 1]^2, all interaction
    params, objective = [], []
    for _ in range(60):
        x, y = rng.uniform(-1, 1), rng.uniform(-1, 1)
        params.append({"x": repr(x), "y": repr(y)})
        objective.append(x * y)
    ranked = fanova(params, objective, ["x", "y"], "min")
    # normalising would have claimed 1.0; an additive objective gives > 0.9 (above)
    assert sum(v for _, v in ranked) < 0.7


def test_confounded_hyperparameters_are_flagged():
    from rnnbench.report.importance import confounded

    pts = [{"a": str(i), "b": str(2 * i + (i % 2)), "c": str((7 * i) % 10)} for i in range(10)]
    pairs = [(a, b) for a, b, _ in confounded(pts, ["a", "b", "c"])]
    assert pairs == [("a", "b")]


# Student's (1908) sleep data, Cushny & Peebles: extra hours of sleep with two drugs on
# the same 10 patients. R: t.test(x, y, paired=TRUE): t = -4.0621, df = 9,
# p-value = 0.002833, 95% CI -2.4598858 -0.7001142, mean difference -1.58.
SLEEP_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
SLEEP_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]


def test_paired_t_matches_the_textbook_example():
    res = stats.paired(SLEEP_1, SLEEP_2)
    assert res.n == 10 and res.mean == pytest.approx(-1.58)
    assert res.t == pytest.approx(-4.0621, abs=1e-4)
    assert res.p_t == pytest.approx(0.002833, abs=1e-6)
    assert (res.mean - res.half_width, res.mean + res.half_width) == pytest.approx(
        (-2.4598858, -0.7001142), abs=1e-6)
    assert res.dz == pytest.approx(-1.58 / res.sd) and res.negative == 9 and res.positive == 0


def test_wilcoxon_matches_the_exact_distribution_by_hand():
    # |d| ranks 1..6, the negative one has rank 6: W = min(15, 6) = 6. Subsets of {1..6}
    # with rank sum <= 6: 14 of 64, so the exact two-sided p is 2 * 14 / 64.
    a = [1.0, 2.0, 3.0, 4.0, 5.0, -6.0]
    res = stats.paired(a, [0.0] * 6)
    assert res.w == 6.0 and res.p_w == pytest.approx(2 * 14 / 64)


def test_paired_needs_three_pairs_for_an_interval_and_spread_for_a_test():
    two = stats.paired([1.0, 2.0], [0.0, 0.5])
    assert two.n == 2 and math.isnan(two.half_width) and math.isnan(two.p_t)
    flat = stats.paired([1.0, 2.0, 3.0], [0.0, 1.0, 2.0])  # every difference is 1
    assert flat.mean == 1.0 and math.isnan(flat.p_t) and math.isnan(flat.p_w)


@pytest.mark.parametrize("n, sd, alpha", [(10, 1.0, 0.05), (16, 0.157, 0.05 / 8),
                                          (5, 2.5, 0.01)])
def test_paired_mde_agrees_with_statsmodels_power(n, sd, alpha):
    from statsmodels.stats.power import TTestPower

    d = TTestPower().solve_power(nobs=n, alpha=alpha, power=0.8, alternative="two-sided")
    assert stats.mde_paired(sd, n, alpha) == pytest.approx(d * sd, rel=1e-4)
    assert math.isnan(stats.mde_paired(sd, 2, alpha))


def test_welch_mde_agrees_with_the_two_sample_power_at_equal_variances():
    from statsmodels.stats.power import TTestIndPower

    a = [1.0, 2.0, 3.0, 4.0, 5.0]
    b = [2.0, 3.0, 4.0, 5.0, 6.0]  # same variance and size: Welch's df is 2n - 2
    d = TTestIndPower().solve_power(nobs1=5, ratio=1.0, alpha=0.05, power=0.8)
    assert stats.mde_welch(a, b) == pytest.approx(d * math.sqrt(2.5), rel=1e-4)
    assert math.isnan(stats.mde_welch(a[:2], b))


def test_number_formats():
    assert fmt_ci(2.14494, 0.142354) == "2.14 ± 0.14"
    assert fmt_ci(0.912345, 0.0123) == "0.912 ± 0.012"
    assert fmt_ci(1234.5, 56.0) == "1234 ± 56"
    assert fmt_ci(1.5, math.nan) == "1.5"
    assert fmt_p(0.021378) == "0.0214" and fmt_p(1e-9) == "<0.0001" and fmt_p(math.nan) == "—"


def test_mode_guess_and_natural_order():
    assert guess_mode("accuracy") == "max" and guess_mode("val_accuracy") == "max"
    assert guess_mode("mse") == "min" and guess_mode("perplexity") == "min"
    assert sorted(["400", "50", "lstm", "100"], key=natural_key) == ["50", "100", "400", "lstm"]


def test_gradient_flow_document_of_the_diagnostics():
    doc = {"definition": "...", "horizon_fraction": 0.01,
           "epochs": [{"epoch": 0, "g": [1.0, 0.5, None], "examples": [8, 8, 8], "summary": {}},
                      {"epoch": 2, "g": [2.0, 1.0, 0.25], "examples": [8, 8, 8], "summary": {}}]}
    profiles = parse_gradient_flow(doc)
    assert [e for e, _, _ in profiles] == [0, 2]
    assert profiles[1][1] == [0.0, 1.0, 2.0] and profiles[1][2] == [2.0, 1.0, 0.25]
    assert math.isnan(profiles[0][2][2])
    assert parse_gradient_flow({"something": "else"}) == []
    assert parse_gradient_flow(None) == []


def test_mde_survives_the_far_tails_of_the_noncentral_t():
    # five seeds a side, a spread of a few hundredths: SciPy's nct.cdf is NaN at the
    # large non-centralities the search passes through (seen on a real chorales study)
    rnn = [9.454736, 9.434578, 9.477930, 9.468369, 9.475003]
    lstm = [9.521530, 9.280746, 9.474280, 9.380763, 9.388474]
    mde = stats.mde_welch(rnn, lstm, alpha=0.05 / 2)
    assert math.isfinite(mde) and 0 < mde < 1
    va = sps.tvar(rnn) / 5 + sps.tvar(lstm) / 5
    df = va**2 / ((sps.tvar(rnn) / 5) ** 2 / 4 + (sps.tvar(lstm) / 5) ** 2 / 4)
    crit = sps.t.ppf(1 - 0.05 / 4, df)
    power = sps.nct.sf(crit, df, mde / math.sqrt(va))  # the other tail is negligible
    assert power == pytest.approx(0.8, abs=1e-6)
    assert math.isfinite(stats.mde_paired(0.01, 20, alpha=0.05 / 8))
