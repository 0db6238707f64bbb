"""Tests for editscope.stats, checked against scipy / statsmodels references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from editscope import stats as es
from editscope.stats import (
    Interval,
    bonferroni,
    bootstrap_interval,
    holm,
    mcnemar_exact,
    mean_interval,
    paired_bootstrap,
    reject,
    wilson_interval,
)

# --------------------------------------------------------------------------- #
# Wilson
# --------------------------------------------------------------------------- #

WILSON_CASES = [(k, n) for n in (1, 2, 3, 5, 10, 17, 50, 100, 1000, 12345) for k in sorted({0, 1, n // 3, n // 2, n - 1, n})]


@pytest.mark.parametrize("confidence", [0.8, 0.9, 0.95, 0.99])
def test_wilson_matches_statsmodels(confidence: float) -> None:
    for k, n in WILSON_CASES:
        iv = wilson_interval(k, n, confidence)
        lo, hi = proportion_confint(k, n, alpha=1 - confidence, method="wilson")
        assert iv.low == pytest.approx(lo, abs=1e-12), (k, n)
        assert iv.high == pytest.approx(hi, abs=1e-12), (k, n)
        assert iv.value == k / n
        assert iv.n == n and iv.confidence == confidence
        assert 0.0 <= iv.low <= iv.value <= iv.high <= 1.0


def test_wilson_extremes_exact() -> None:
    assert wilson_interval(0, 20).low == 0.0
    assert wilson_interval(20, 20).high == 1.0


def test_wilson_random_against_statsmodels() -> None:
    rng = np.random.default_rng(1)
    for _ in range(200):
        n = int(rng.integers(1, 5000))
        k = int(rng.integers(0, n + 1))
        iv = wilson_interval(k, n)
        lo, hi = proportion_confint(k, n, alpha=0.05, method="wilson")
        assert (iv.low, iv.high) == pytest.approx((lo, hi), abs=1e-12)


def test_wilson_accepts_numpy_ints() -> None:
    iv = wilson_interval(np.int64(3), np.int32(10))
    assert iv.value == pytest.approx(0.3)


def test_wilson_n_zero() -> None:
    iv = wilson_interval(0, 0)
    assert math.isnan(iv.value)
    assert iv.low == 0.0 and iv.high == 1.0 and iv.n == 0


def test_interval_frozen_and_to_dict() -> None:
    iv = wilson_interval(3, 10, 0.9)
    d = iv.to_dict()
    assert d["value"] == 0.3 and d["n"] == 10 and d["confidence"] == 0.9
    assert d["low"] == iv.low and d["high"] == iv.high
    with pytest.raises(AttributeError):
        iv.value = 0.5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("args", "name"),
    [
        ((-1, 10), "successes"),
        ((0, -1), "n"),
        ((11, 10), "successes"),
        ((1, 10, 1.0), "confidence"),
        ((1, 10, 0.0), "confidence"),
        ((1, 10, 95), "confidence"),
    ],
)
def test_wilson_bad_input(args: tuple, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        wilson_interval(*args)


def test_wilson_non_integer_counts() -> None:
    with pytest.raises(TypeError, match="successes"):
        wilson_interval(2.5, 10)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="n"):
        wilson_interval(2, 10.0)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- #
# McNemar
# --------------------------------------------------------------------------- #


def _sm_pvalue(a: np.ndarray, b: np.ndarray) -> float:
    table = np.array(
        [
            [np.sum(~a & ~b), np.sum(~a & b)],
            [np.sum(a & ~b), np.sum(a & b)],
        ]
    )
    return float(sm_mcnemar(table, exact=True).pvalue)


@pytest.mark.parametrize("seed", range(8))
def test_mcnemar_matches_statsmodels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 400))
    a = rng.random(n) < rng.uniform(0.2, 0.8)
    # b agrees with a most of the time, with a biased flip rate
    flip = rng.random(n) < rng.uniform(0.05, 0.4)
    b = np.where(flip, rng.random(n) < rng.uniform(0.2, 0.9), a)
    res = mcnemar_exact(list(a), list(b))
    assert res.n == n
    assert res.n01 == int(np.sum(~a & b))
    assert res.n10 == int(np.sum(a & ~b))
    assert res.statistic == min(res.n01, res.n10)
    assert res.pvalue == pytest.approx(_sm_pvalue(a, b), rel=1e-12, abs=1e-15)
    # symmetric in a/b
    assert mcnemar_exact(b, a).pvalue == pytest.approx(res.pvalue, rel=1e-12, abs=1e-15)


def test_mcnemar_strong_effect_small_p() -> None:
    a = [False] * 30 + [True] * 70
    b = [True] * 30 + [True] * 70  # 30 discordant, all one way
    res = mcnemar_exact(a, b)
    assert (res.n01, res.n10, res.statistic) == (30, 0, 0)
    assert res.pvalue == pytest.approx(2 * 0.5**30)


def test_mcnemar_no_discordant_pairs() -> None:
    a = [True, False, True, True]
    res = mcnemar_exact(a, list(a))
    assert res.pvalue == 1.0 and res.n01 == 0 and res.n10 == 0 and res.n == 4
    empty = mcnemar_exact([], [])
    assert empty.pvalue == 1.0 and empty.n == 0


def test_mcnemar_balanced_discordant_capped() -> None:
    res = mcnemar_exact([True, False], [False, True])
    assert res.pvalue == 1.0  # 2 * cdf(1, 2, .5) = 1.5 -> capped


def test_mcnemar_accepts_01_ints() -> None:
    assert mcnemar_exact([1, 0, 1], [0, 0, 1]) == mcnemar_exact([True, False, True], [False, False, True])


def test_mcnemar_length_mismatch_names_lengths() -> None:
    with pytest.raises(ValueError, match=r"len\(a\)=3.*len\(b\)=2"):
        mcnemar_exact([True, False, True], [True, False])


def test_mcnemar_non_binary_values() -> None:
    with pytest.raises(ValueError, match=r"b\[1\]"):
        mcnemar_exact([1, 0], [1, 2])


# --------------------------------------------------------------------------- #
# Holm / Bonferroni
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("seed", range(10))
def test_holm_bonferroni_match_statsmodels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    m = int(rng.integers(1, 30))
    p = rng.uniform(0, 1, m) ** rng.uniform(1, 6)  # skew towards small p
    if seed % 3 == 0:
        p[: m // 2] = p[0]  # ties
    for method, fn in (("holm", holm), ("bonferroni", bonferroni)):
        rej_ref, adj_ref, _, _ = multipletests(p, alpha=0.05, method=method)
        adj = fn(list(p))
        assert isinstance(adj, list)
        np.testing.assert_allclose(adj, adj_ref, rtol=1e-12, atol=1e-15)
        assert reject(adj, 0.05) == list(rej_ref)


def test_holm_monotone_and_capped() -> None:
    p = [0.01, 0.04, 0.03, 0.5, 0.9, 0.0]
    adj = holm(p)
    order = np.argsort(p)
    assert all(np.diff(np.asarray(adj)[order]) >= 0)
    assert max(adj) <= 1.0
    assert all(a >= r for a, r in zip(adj, p))


def test_holm_empty() -> None:
    assert holm([]) == [] and bonferroni([]) == []


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
@pytest.mark.parametrize("fn", [holm, bonferroni])
def test_pvalue_validation_names_index(fn, bad: float) -> None:
    with pytest.raises(ValueError, match=r"pvalues\[2\]"):
        fn([0.1, 0.2, bad, 0.3])


def test_reject_and_alpha_validation() -> None:
    assert reject([0.01, 0.05, 0.2], 0.05) == [True, True, False]
    with pytest.raises(ValueError, match="alpha"):
        reject([0.1], 0.0)
    with pytest.raises(ValueError, match="alpha"):
        holm([0.1], alpha=1.5)
    with pytest.raises(ValueError, match=r"adjusted\[0\]"):
        reject([2.0])


# --------------------------------------------------------------------------- #
# mean_interval
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_mean_interval_matches_scipy(seed: int, confidence: float) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 300))
    x = rng.normal(rng.normal(), rng.uniform(0.1, 5), n)
    iv = mean_interval(list(x), confidence)
    lo, hi = sps.t.interval(confidence, n - 1, loc=np.mean(x), scale=sps.sem(x))
    assert iv.value == pytest.approx(np.mean(x), rel=1e-12)
    assert (iv.low, iv.high) == pytest.approx((lo, hi), rel=1e-10, abs=1e-12)
    assert iv.n == n and iv.confidence == confidence


def test_mean_interval_small_n() -> None:
    one = mean_interval([3.0])
    assert one.value == 3.0 and math.isnan(one.low) and math.isnan(one.high) and one.n == 1
    zero = mean_interval([])
    assert math.isnan(zero.value) and math.isnan(zero.low) and math.isnan(zero.high)
    const = mean_interval([2.0, 2.0, 2.0])
    assert (const.low, const.value, const.high) == (2.0, 2.0, 2.0)


def test_mean_interval_bad_input() -> None:
    with pytest.raises(ValueError, match="values"):
        mean_interval([1.0, float("nan")])
    with pytest.raises(ValueError, match="confidence"):
        mean_interval([1.0, 2.0], confidence=1.2)


# --------------------------------------------------------------------------- #
# Bootstrap
# --------------------------------------------------------------------------- #


def test_paired_bootstrap_deterministic() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=300)
    y = x + rng.normal(0.1, 1, size=300)
    r1 = paired_bootstrap(x, y, n_resamples=2000, seed=7)
    r2 = paired_bootstrap(list(x), list(y), n_resamples=2000, seed=7)
    r3 = paired_bootstrap(x, y, n_resamples=2000, seed=8)
    assert r1 == r2
    assert r1 != r3
    assert r1.value == pytest.approx(np.mean(y) - np.mean(x))
    assert r1.x_value == pytest.approx(np.mean(x)) and r1.y_value == pytest.approx(np.mean(y))
    assert (r1.n, r1.n_resamples, r1.seed) == (300, 2000, 7)
    assert r1.to_dict()["pvalue"] == r1.pvalue
    iv = r1.interval()
    assert isinstance(iv, Interval) and (iv.low, iv.high) == (r1.low, r1.high)


def test_paired_bootstrap_known_shift() -> None:
    rng = np.random.default_rng(42)
    n = 2000
    x = rng.normal(size=n)
    y = x + 0.5 + rng.normal(0, 1, size=n)
    r = paired_bootstrap(x, y, n_resamples=4000, seed=0)
    assert r.low < 0.5 < r.high
    assert r.low > 0
    assert r.pvalue < 1e-3


def test_paired_bootstrap_null_large_p() -> None:
    rng = np.random.default_rng(3)
    n = 1000
    x = rng.normal(size=n)
    e = rng.normal(0, 1, size=n // 2)
    noise = rng.permutation(np.concatenate([e, -e]))  # symmetric, mean exactly ~0
    r = paired_bootstrap(x, x + noise, n_resamples=2000, seed=0)
    assert r.pvalue > 0.2
    assert r.low < 0 < r.high


def test_paired_bootstrap_pvalue_matches_normal_approx() -> None:
    # For a mean difference the bootstrap distribution is ~ N(d, s^2/n) with
    # s the ddof=0 SD of the differences; compare to the z-test p-value.
    rng = np.random.default_rng(11)
    n = 400
    x = rng.normal(size=n)
    d = rng.normal(0, 1, size=n)
    d = d - d.mean() + 0.1  # observed mean difference exactly 0.1
    r = paired_bootstrap(x, x + d, n_resamples=10000, seed=1)
    z = 0.1 / (np.std(d) / math.sqrt(n))
    assert r.pvalue == pytest.approx(2 * sps.norm.sf(z), abs=0.012)


def test_paired_bootstrap_matches_scipy_paired() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=300)
    y = x + rng.normal(0.2, 1, size=300)
    r = paired_bootstrap(x, y, n_resamples=5000, seed=0)

    def diff(a, b, axis=-1):
        return np.mean(b, axis=axis) - np.mean(a, axis=axis)

    ref = sps.bootstrap((x, y), diff, paired=True, method="percentile", n_resamples=5000, rng=np.random.default_rng(0))
    ci = ref.confidence_interval
    assert r.low == pytest.approx(ci.low, abs=0.02)
    assert r.high == pytest.approx(ci.high, abs=0.02)


def test_paired_bootstrap_non_vectorized_statistic_equivalent() -> None:
    rng = np.random.default_rng(9)
    x = rng.normal(size=60)
    y = x + rng.normal(0.3, 1, size=60)

    def median_no_axis(v):  # no ``axis`` parameter -> per-resample path
        return float(np.median(v))

    a = paired_bootstrap(x, y, statistic=np.median, n_resamples=300, seed=4)
    b = paired_bootstrap(x, y, statistic=median_no_axis, n_resamples=300, seed=4)
    assert a == b
    assert a.value == pytest.approx(np.median(y) - np.median(x))


def test_paired_bootstrap_chunked(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=500)
    y = x + rng.normal(0.5, 1, size=500)
    full = paired_bootstrap(x, y, n_resamples=3000, seed=0)
    # force many small blocks (with a ragged last block): 500 * 7 elements per block
    monkeypatch.setattr(es, "_CHUNK_ELEMENTS", 500 * 7)
    chunked = paired_bootstrap(x, y, n_resamples=3000, seed=0)
    assert chunked == paired_bootstrap(x, y, n_resamples=3000, seed=0)
    assert chunked.value == full.value
    assert chunked.low == pytest.approx(full.low, abs=0.02)
    assert chunked.high == pytest.approx(full.high, abs=0.02)


def test_paired_bootstrap_bad_input() -> None:
    with pytest.raises(ValueError, match=r"len\(x\)=3.*len\(y\)=2"):
        paired_bootstrap([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="x and y must not be empty"):
        paired_bootstrap([], [])
    with pytest.raises(ValueError, match=r"y\[1\]"):
        paired_bootstrap([1.0, 2.0], [1.0, float("inf")])
    with pytest.raises(ValueError, match="n_resamples"):
        paired_bootstrap([1.0, 2.0], [1.0, 2.0], n_resamples=0)
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap([1.0, 2.0], [1.0, 2.0], confidence=0.0)
    with pytest.raises(ValueError, match="statistic"):
        paired_bootstrap([1.0, 2.0], [1.0, 2.0], statistic=lambda v: np.asarray(v) * 2)


def test_bootstrap_interval_matches_scipy() -> None:
    x = np.random.default_rng(0).normal(size=500)
    iv = bootstrap_interval(x, n_resamples=5000, seed=1)
    ref = sps.bootstrap((x,), np.mean, method="percentile", n_resamples=5000, rng=np.random.default_rng(2))
    assert iv.value == pytest.approx(np.mean(x))
    assert iv.low == pytest.approx(ref.confidence_interval.low, abs=0.02)
    assert iv.high == pytest.approx(ref.confidence_interval.high, abs=0.02)
    assert iv.n == 500 and iv.confidence == 0.95
    assert bootstrap_interval(x, n_resamples=500, seed=3) == bootstrap_interval(x, n_resamples=500, seed=3)


def test_bootstrap_interval_bad_input() -> None:
    with pytest.raises(ValueError, match="x"):
        bootstrap_interval([])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_interval([1.0, 2.0], confidence=-0.5)


# ---- stratified and equivalence tests (issue: statistics over what varies)

def test_cmh_paired_matches_the_hand_computed_mantel_haenszel_statistic():
    from editscope.stats import cmh_paired

    # two strata (edits); per stratum the (method a, method b) x (true, false) table
    a = [1, 1, 1, 0, 0, 0, 1, 0] + [1, 1, 0, 0, 0, 0]
    b = [1, 1, 1, 1, 1, 0, 1, 1] + [1, 1, 1, 1, 0, 1]
    strata = [0] * 8 + [1] * 6
    got = cmh_paired(a, b, strata)
    num, var = 0.0, 0.0
    for s in (0, 1):
        aa = [x for x, k in zip(a, strata) if k == s]
        bb = [x for x, k in zip(b, strata) if k == s]
        n1 = n2 = len(aa)
        t, n = sum(aa) + sum(bb), 2 * len(aa)
        num += sum(aa) - n1 * t / n
        var += n1 * n2 * t * (n - t) / (n * n * (n - 1))
    chi2 = (abs(num) - 0.5) ** 2 / var
    from scipy import stats as sps

    assert got.statistic == pytest.approx(chi2) and got.pvalue == pytest.approx(sps.chi2.sf(chi2, 1))
    assert got.n_strata == 2 and got.diff == pytest.approx((sum(b) - sum(a)) / len(a))
    # strata where every outcome is the same carry nothing; none left: p = 1
    assert cmh_paired([1, 1], [1, 1], [0, 0]).pvalue == 1.0


def test_tost_against_a_reference_computation():
    from scipy import stats as sps

    from editscope.stats import tost, verdict

    rng = np.random.default_rng(0)
    x = rng.normal(0.005, 0.01, size=40)
    r = tost(x, 0.02)
    lo = sps.ttest_1samp(x, -0.02, alternative="greater").pvalue
    hi = sps.ttest_1samp(x, 0.02, alternative="less").pvalue
    assert r.p_equivalence == pytest.approx(max(lo, hi))
    assert r.p_difference == pytest.approx(sps.ttest_1samp(x, 0.0).pvalue)
    ci = sps.t.interval(0.90, len(x) - 1, loc=x.mean(), scale=sps.sem(x))
    assert (r.low, r.high) == pytest.approx(ci)
    assert (r.low > -0.02 and r.high < 0.02) == (r.p_equivalence < 0.05)
    # clustered: the test runs over the clusters' means, each cluster one observation
    cl = np.repeat(np.arange(8), 5)
    rc = tost(x, 0.02, clusters=cl)
    means = x.reshape(8, 5).mean(axis=1)
    assert rc.n == 8 and rc.diff == pytest.approx(means.mean())
    assert rc.p_difference == pytest.approx(sps.ttest_1samp(means, 0.0).pvalue)
    assert verdict(0.01, 0.5) == "different" and verdict(0.5, 0.01) == "equivalent"
    assert verdict(0.5, 0.5) == "inconclusive" and verdict(0.01, 0.01) == "different, within margin"
    for bad in (0, -0.1, float("nan"), True):
        with pytest.raises(ValueError, match="margin"):
            tost(x, bad)


def test_excess_rate_bootstrap_p_values():
    from editscope.stats import excess_rate

    far = excess_rate([True] * 40 + [False] * 60, [[False] * 100], n_resamples=999)
    assert far.pvalue < 0.01 and far.p_equivalence == 1.0  # 40% changed against none
    same = excess_rate([True] * 5 + [False] * 995, [[True] * 5 + [False] * 995], n_resamples=999)
    assert same.pvalue == 1.0 and same.p_equivalence < 0.01  # identical rates, many probes
    with pytest.raises(ValueError, match="margin"):
        excess_rate([True], [[True]], margin=0)
