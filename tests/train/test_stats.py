"""mm.stats (mmoe_annotated.train.stats) against SciPy's reference functions and hand-computed cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import roc_auc_score

import mmoe_annotated as mm
from mmoe_annotated.train import stats


def test_mm_stats_is_the_module():
    assert mm.stats is stats


def test_paired_matches_scipy_and_the_t_quantile():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.01, 0.02, 5), rng.normal(0.0, 0.02, 5)
    r = stats.paired(a, b)
    ref = sps.ttest_rel(a, b)
    d = a - b
    assert r.n == 5 and r.mean == pytest.approx(d.mean()) and r.sd == pytest.approx(d.std(ddof=1))
    assert r.p == pytest.approx(ref.pvalue)
    half = sps.t.ppf(0.975, 4) * d.std(ddof=1) / math.sqrt(5)
    assert (r.low, r.high) == pytest.approx((d.mean() - half, d.mean() + half))
    assert sps.t.ppf(0.975, 4) == pytest.approx(2.776, abs=1e-3)  # not 2: the n = 5 quantile
    assert r.correlation == pytest.approx(sps.pearsonr(a, b).statistic)


def test_mean_interval_is_the_t_interval():
    x = np.array([0.70, 0.72, 0.71, 0.69, 0.74, 0.73])
    mean, low, high = stats.mean_interval(x)
    half = sps.t.ppf(0.975, 5) * x.std(ddof=1) / math.sqrt(6)
    assert (mean, low, high) == pytest.approx((x.mean(), x.mean() - half, x.mean() + half))
    assert stats.mean_interval([0.5, 0.5, 0.5]) == (0.5, 0.5, 0.5)


def test_unpaired_is_welchs_t():
    rng = np.random.default_rng(6)
    a, b = rng.normal(0.02, 0.01, 12), rng.normal(0.0, 0.03, 7)
    r = stats.unpaired(a, b)
    ref = sps.ttest_ind(a, b, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert (r.mean, r.p, r.low, r.high) == pytest.approx((a.mean() - b.mean(), ref.pvalue, ci.low, ci.high))
    assert r.wins + r.losses == 12 * 7 and np.isnan(r.correlation)
    family = stats.Family(["x"])
    assert family.add("x", a, b, pair=False).p == pytest.approx(ref.pvalue)


def test_five_wins_of_five_is_not_significant_by_the_sign_test():
    """The hand-computed case: 5 of 5 seeds better has a two-sided sign-test p of 2 / 2**5."""
    a = np.array([0.70, 0.71, 0.72, 0.73, 0.74])
    r = stats.paired(a, a - np.array([0.001, 0.002, 0.001, 0.003, 0.002]))
    assert (r.wins, r.losses) == (5, 0)
    assert r.sign_p == pytest.approx(0.0625)


def test_a_two_sem_bar_can_exclude_zero_where_the_t_interval_does_not():
    """Chapter 7's case: mean / sem = 2.41 at n = 5 (t quantile 2.78)."""
    d = np.array([0.010, 0.001, 0.008, 0.000, 0.009])
    r = stats.paired(d, np.zeros(5))
    ratio = r.mean / r.sem
    assert 2 < ratio < sps.t.ppf(0.975, 4)  # a "two standard errors" bar excludes zero ...
    assert not r.excludes_zero() and r.p > 0.05  # ... the t interval and the t-test do not


@pytest.mark.parametrize("p, expected", [
    ([0.01, 0.04, 0.03, 0.2], [0.04, 0.09, 0.09, 0.2]),  # by hand: 4*0.01, 3*0.03, max(2*0.04, 0.09), 0.2
    ([0.5], [0.5]),
    ([0.3, 0.3], [0.6, 0.6]),
    ([0.01, 0.5, 0.9], [0.03, 1.0, 1.0]),
])
def test_holm_by_hand(p, expected):
    assert stats.holm(p) == pytest.approx(expected)


def test_holm_never_lowers_a_p_value_and_keeps_the_order_given():
    p = np.random.default_rng(1).random(12)
    adj = stats.holm(p)
    assert (adj >= p).all() and (adj <= 1).all()
    order = np.argsort(p)
    assert (np.diff(adj[order]) >= 0).all()  # monotone in the sorted order


def test_holm_refuses_what_is_not_a_p_value():
    with pytest.raises(ValueError, match="p-values"):
        stats.holm([0.1, 1.5])


def test_a_family_decides_only_declared_comparisons_after_holm():
    rng = np.random.default_rng(2)
    base = rng.normal(0, 0.001, 30)
    family = stats.Family(["big", "none"])
    family.add("big", base + 0.01, base + rng.normal(0, 0.001, 30))
    family.add("none", base + rng.normal(0, 0.001, 30), base + rng.normal(0, 0.001, 30))
    with pytest.raises(KeyError, match="exploratory"):
        family.add("chosen later", base, base)
    table = family.table()
    assert list(table.index) == ["big", "none"]
    assert table.loc["big", "decision"] == "a > b"
    assert table.loc["big", "p_holm"] == pytest.approx(min(1.0, 2 * min(table["p"])))
    assert table["p_holm"].ge(table["p"]).all()


def test_a_family_with_a_missing_comparison_cannot_report():
    family = stats.Family(["x", "y"])
    family.add("x", [1.0, 2.0, 3.0], [0.0, 1.0, 1.5])
    with pytest.raises(ValueError, match="declared but not added"):
        family.table()


def test_auc_interval_holds_sklearns_auc():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 2000)
    p = np.round(rng.random(2000) + 0.3 * y, 2)  # rounded: ties count one half, as in sklearn
    auc, low, high = stats.auc_interval(y, p, resamples=300)
    assert auc == pytest.approx(roc_auc_score(y, p))
    assert low < auc < high and high - low < 0.1


def test_auc_interval_of_a_difference_on_the_same_rows():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 2000)
    p = rng.random(2000) + 0.3 * y
    diff, low, high = stats.auc_interval(y, p, p, resamples=200)
    assert diff == 0 and low == 0 and high == 0  # the same model against itself


def test_seeds_needed_matches_the_textbook_and_a_simulation():
    # standardised effect 1 at power 0.8, alpha 0.05, two-sided paired t: 10 pairs (e.g. G*Power)
    assert stats.seeds_needed(0.001, 0.001) == 10
    n = stats.seeds_needed(0.5, 1.0)
    rng = np.random.default_rng(5)
    hits = np.mean([sps.ttest_1samp(rng.normal(0.5, 1.0, n), 0).pvalue < 0.05 for _ in range(4000)])
    assert 0.78 <= hits <= 0.86  # n achieves the power; n - 1 falls short
    assert stats.seeds_needed(0.5, 1.0, family_size=4) > n  # a larger family asks for more runs


def test_auc_interval_is_defined_with_two_positives():
    """Positives and negatives are resampled apart: every resample has both classes."""
    y = np.array([1, 1] + [0] * 38)
    p = np.random.default_rng(7).random(40)
    auc, low, high = stats.auc_interval(y, p, resamples=500)
    assert auc == pytest.approx(roc_auc_score(y, p))
    assert 0 <= low < auc < high <= 1
