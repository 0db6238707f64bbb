"""Tests for the control-aware statistics in editscope.stats.

Covers :func:`clopper_pearson`, :func:`cluster_bootstrap_mean` and
:func:`excess_rate` (excess of a method's changed rate over a placebo /
unrelated-edit control, with a two-level bootstrap interval).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from editscope import stats as es
from editscope.stats import (
    ExcessResult,
    Interval,
    bootstrap_interval,
    clopper_pearson,
    cluster_bootstrap_mean,
    excess_rate,
    paired_bootstrap,
)


def _width(r: Interval | ExcessResult) -> float:
    return r.high - r.low


# --------------------------------------------------------------------------- #
# Clopper-Pearson
# --------------------------------------------------------------------------- #

CP_CASES = [(k, n) for n in (1, 2, 3, 7, 10, 38, 100, 1000) for k in sorted({0, 1, n // 3, n // 2, n - 1, n})]


@pytest.mark.parametrize("confidence", [0.8, 0.9, 0.95, 0.99])
def test_clopper_pearson_matches_scipy_binomtest(confidence: float) -> None:
    for k, n in CP_CASES:
        iv = clopper_pearson(k, n, confidence)
        ref = sps.binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
        assert iv.low == pytest.approx(ref.low, abs=1e-10), (k, n)
        assert iv.high == pytest.approx(ref.high, abs=1e-10), (k, n)
        assert iv.value == k / n
        assert iv.n == n and iv.confidence == confidence and iv.method == "clopper-pearson"
        assert 0.0 <= iv.low <= iv.value <= iv.high <= 1.0


def test_clopper_pearson_extremes_exact() -> None:
    assert clopper_pearson(0, 20).low == 0.0
    assert clopper_pearson(0, 20).high > 0.0
    assert clopper_pearson(20, 20).high == 1.0
    assert clopper_pearson(20, 20).low < 1.0
    # k == 0: the upper bound has the closed form 1 - (alpha/2)**(1/n).
    assert clopper_pearson(0, 20).high == pytest.approx(1 - 0.025 ** (1 / 20), abs=1e-12)


def test_clopper_pearson_published_example() -> None:
    # scipy.stats.binomtest docs / textbook example: 33 successes in 38 trials.
    iv = clopper_pearson(33, 38)
    assert (round(iv.low, 3), round(iv.high, 3)) == (0.719, 0.956)


def test_clopper_pearson_wider_than_wilson() -> None:
    for k, n in [(1, 10), (5, 10), (33, 38), (50, 1000)]:
        cp = clopper_pearson(k, n)
        wi = es.wilson_interval(k, n)
        assert _width(cp) > _width(wi)


def test_clopper_pearson_n0() -> None:
    iv = clopper_pearson(0, 0)
    assert math.isnan(iv.value)
    assert iv.low == 0.0 and iv.high == 1.0 and iv.n == 0
    assert iv.method == "clopper-pearson"


@pytest.mark.parametrize(
    ("k", "n", "confidence", "word"),
    [
        (5, 4, 0.95, "successes"),
        (-1, 4, 0.95, "successes"),
        (0, -1, 0.95, "n"),
        (1, 4, 0.0, "confidence"),
        (1, 4, 1.0, "confidence"),
        (1, 4, 1.5, "confidence"),
        (1, 4, -0.1, "confidence"),
    ],
)
def test_clopper_pearson_bad_input(k: int, n: int, confidence: float, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        clopper_pearson(k, n, confidence)


def test_clopper_pearson_non_integer() -> None:
    with pytest.raises(TypeError, match="successes"):
        clopper_pearson(1.5, 4)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- #
# cluster_bootstrap_mean
# --------------------------------------------------------------------------- #


def test_cluster_bootstrap_value_is_plain_mean() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=137)
    labels = rng.integers(0, 9, size=137)
    for clusters in (None, labels):
        iv = cluster_bootstrap_mean(x, clusters, n_resamples=300)
        assert iv.value == pytest.approx(float(np.mean(x)), abs=1e-15)
        assert iv.n == 137
        assert iv.low <= iv.value <= iv.high


def test_cluster_bootstrap_iid_matches_bootstrap_interval() -> None:
    rng = np.random.default_rng(1)
    x = rng.random(250)
    a = cluster_bootstrap_mean(x, n_resamples=500, seed=3)
    b = bootstrap_interval(x, np.mean, n_resamples=500, seed=3)
    assert a.method == "bootstrap-percentile"
    assert (a.low, a.high) == pytest.approx((b.low, b.high), abs=1e-15)
    # A single cluster label means no clustering.
    c = cluster_bootstrap_mean(x, ["same"] * 250, n_resamples=500, seed=3)
    assert c.method == "bootstrap-percentile"
    assert (c.low, c.high) == (a.low, a.high)


def test_cluster_bootstrap_wider_when_clusters_differ() -> None:
    rng = np.random.default_rng(2)
    n_clusters, size = 12, 25
    cluster_means = rng.choice([0.1, 0.9], size=n_clusters)
    labels = np.repeat(np.arange(n_clusters), size)
    x = (rng.random(n_clusters * size) < cluster_means[labels]).astype(float)
    iid = cluster_bootstrap_mean(x, n_resamples=2000)
    clu = cluster_bootstrap_mean(x, labels, n_resamples=2000)
    assert clu.method == "cluster-bootstrap"
    assert iid.value == clu.value
    assert _width(clu) > 2.0 * _width(iid)


def test_cluster_bootstrap_two_constant_clusters() -> None:
    # Two equal-size clusters, all 0s and all 1s: every resample mean is one of
    # 0 (both draws the 0-cluster), 0.5 (one of each) or 1 (both the 1-cluster).
    x = [0.0] * 5 + [1.0] * 5
    labels = ["a"] * 5 + ["b"] * 5
    iv = cluster_bootstrap_mean(x, labels, n_resamples=2000, seed=0)
    assert iv.value == 0.5
    assert iv.low in {0.0, 0.5, 1.0} and iv.high in {0.0, 0.5, 1.0}
    # P(0) = P(1) = 1/4, so the 2.5% / 97.5% quantiles are 0 and 1.
    assert (iv.low, iv.high) == (0.0, 1.0)
    # P(0.5) = 1/2 covers the 30% and 70% quantiles.
    mid = cluster_bootstrap_mean(x, labels, n_resamples=2000, confidence=0.4, seed=0)
    assert (mid.low, mid.high) == (0.5, 0.5)


def test_cluster_bootstrap_weights_by_cluster_size() -> None:
    # Cluster A = [1] (size 1), cluster B = [0, 0, 0] (size 3).  A resample
    # with one of each has mean 1/4 (pooled over observations), not 1/2
    # (the mean of the cluster means).
    x = [1.0, 0.0, 0.0, 0.0]
    labels = [7, 9, 9, 9]
    iv = cluster_bootstrap_mean(x, labels, n_resamples=2000, confidence=0.4, seed=5)
    assert (iv.low, iv.high) == (0.25, 0.25)
    assert iv.value == 0.25


def test_cluster_bootstrap_deterministic() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=300)
    labels = rng.integers(0, 15, size=300)
    a = cluster_bootstrap_mean(x, labels, n_resamples=400, seed=11)
    b = cluster_bootstrap_mean(x, labels, n_resamples=400, seed=11)
    c = cluster_bootstrap_mean(x, labels, n_resamples=400, seed=12)
    assert a == b
    assert (a.low, a.high) != (c.low, c.high)


def test_cluster_bootstrap_chunked(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(6)
    x = rng.random(60)
    labels = np.repeat(np.arange(6), 10)
    monkeypatch.setattr(es, "_CHUNK_ELEMENTS", 7)  # 1 resample per chunk
    iv = cluster_bootstrap_mean(x, labels, n_resamples=300, seed=0)
    cluster_means = x.reshape(6, 10).mean(axis=1)
    assert cluster_means.min() <= iv.low <= iv.value <= iv.high <= cluster_means.max()


def test_cluster_bootstrap_bad_input() -> None:
    with pytest.raises(ValueError, match="clusters"):
        cluster_bootstrap_mean([1.0, 2.0, 3.0], [0, 1])
    with pytest.raises(ValueError, match="clusters"):
        cluster_bootstrap_mean([1.0, 2.0], [[0, 1]])
    with pytest.raises(ValueError, match="clusters"):
        cluster_bootstrap_mean([1.0, 2.0], [0.0, float("nan")])
    with pytest.raises(ValueError, match="values"):
        cluster_bootstrap_mean([])
    with pytest.raises(ValueError, match="values"):
        cluster_bootstrap_mean([1.0, float("inf")])
    with pytest.raises(ValueError, match="n_resamples"):
        cluster_bootstrap_mean([1.0, 2.0], n_resamples=0)
    with pytest.raises(ValueError, match="confidence"):
        cluster_bootstrap_mean([1.0, 2.0], confidence=1.0)


# --------------------------------------------------------------------------- #
# excess_rate
# --------------------------------------------------------------------------- #


def test_excess_rate_hand_computed() -> None:
    r = excess_rate([1, 1, 1, 0], [[1, 0, 0, 0], [0, 1, 0, 0]], n_resamples=200)
    assert isinstance(r, ExcessResult)
    assert r.method_rate == 0.75
    assert r.control_rate == 0.25
    assert r.value == 0.5
    assert (r.n, r.n_clusters, r.draws) == (4, 1, 2)
    assert r.method == "two-level-bootstrap" and r.confidence == 0.95
    assert r.low <= r.value <= r.high
    d = r.to_dict()
    assert d["value"] == 0.5 and d["draws"] == 2 and d["n_clusters"] == 1
    assert set(d) == {
        "value", "low", "high", "method_rate", "control_rate",
        "n", "n_clusters", "draws", "confidence", "method", "pvalue", "p_equivalence", "margin",
    }  # fmt: skip
    iv = r.interval()
    assert (iv.value, iv.low, iv.high, iv.n) == (r.value, r.low, r.high, 4)


def test_excess_rate_zero_when_method_equals_every_draw() -> None:
    rng = np.random.default_rng(7)
    m = rng.random(300) < 0.3
    ctrl = np.stack([m] * 4)
    r = excess_rate(m, ctrl, n_resamples=500)
    assert r.value == 0.0
    assert r.low <= 0.0 <= r.high
    # Paired on probes: every resample has excess exactly 0 (up to rounding).
    assert abs(r.low) < 1e-12 and abs(r.high) < 1e-12


def test_excess_rate_clear_effect_excludes_zero() -> None:
    rng = np.random.default_rng(8)
    m = rng.random(500) < 0.6
    ctrl = rng.random((5, 500)) < 0.1
    r = excess_rate(m, ctrl, n_resamples=1000)
    assert r.low > 0.0
    assert r.value == pytest.approx(np.mean(m) - np.mean(ctrl), abs=1e-15)


def test_excess_rate_draw_level_variance_counted() -> None:
    rng = np.random.default_rng(9)
    n, n_draws = 200, 10
    m = rng.random(n) < 0.5

    def row(k: int) -> np.ndarray:
        out = np.zeros(n, dtype=bool)
        out[rng.choice(n, size=k, replace=False)] = True
        return out

    # Varying draws: rates alternate 0.1 / 0.5 (mean 0.3).  Identical draws:
    # every draw is the same row with rate 0.3.  Same overall control rate.
    varying = np.stack([row(20) if d % 2 else row(100) for d in range(n_draws)])
    same = np.stack([row(60)] * n_draws)
    rv = excess_rate(m, varying, n_resamples=2000)
    rs = excess_rate(m, same, n_resamples=2000)
    assert rv.control_rate == rs.control_rate == 0.3
    assert rv.value == rs.value
    assert _width(rv) > 1.5 * _width(rs)


def test_excess_rate_draws_resampled_hand_case() -> None:
    # Control draws constant over probes: draw 0 changes everything, draw 1
    # nothing.  Probe resampling has no effect; the resampled control rate is
    # 0, 0.5 or 1 (both draws 1 / one of each / both draws 0), so the excess
    # (method never changes anything) is 0, -0.5 or -1.
    m = np.zeros(6, dtype=bool)
    ctrl = np.stack([np.ones(6, dtype=bool), np.zeros(6, dtype=bool)])
    r = excess_rate(m, ctrl, n_resamples=2000)
    assert r.value == -0.5
    assert (r.low, r.high) == (-1.0, 0.0)
    mid = excess_rate(m, ctrl, n_resamples=2000, confidence=0.4)
    assert (mid.low, mid.high) == (-0.5, -0.5)


def test_excess_rate_single_draw_is_paired_probe_bootstrap() -> None:
    # With D == 1 the draw level is fixed: the interval is the paired
    # bootstrap of method - control over probes (same index stream).
    rng = np.random.default_rng(10)
    m = rng.random(400) < 0.4
    c = rng.random(400) < 0.2
    r = excess_rate(m, [c], n_resamples=700, seed=2)
    ref = paired_bootstrap(c.astype(float), m.astype(float), np.mean, n_resamples=700, seed=2)
    assert r.draws == 1
    assert r.value == pytest.approx(ref.value, abs=1e-15)
    assert (r.low, r.high) == pytest.approx((ref.low, ref.high), abs=1e-12)


def test_excess_rate_single_draw_clustered_matches_cluster_bootstrap() -> None:
    rng = np.random.default_rng(11)
    labels = rng.integers(0, 20, size=300)
    m = rng.random(300) < 0.4
    c = rng.random(300) < 0.2
    r = excess_rate(m, [c], labels, n_resamples=700, seed=4)
    ref = cluster_bootstrap_mean(m.astype(float) - c.astype(float), labels, n_resamples=700, seed=4)
    assert r.n_clusters == 20
    assert (r.low, r.high) == pytest.approx((ref.low, ref.high), abs=1e-12)


def test_excess_rate_clustering_widens_when_edits_differ() -> None:
    rng = np.random.default_rng(12)
    n_edits, per_edit, n_draws = 10, 20, 5
    edit = np.repeat([f"edit{e}" for e in range(n_edits)], per_edit)
    # Some edits change almost all their probes, others almost none.
    edit_rate = np.repeat(rng.choice([0.05, 0.95], size=n_edits), per_edit)
    m = rng.random(n_edits * per_edit) < edit_rate
    ctrl = rng.random((n_draws, n_edits * per_edit)) < 0.1
    flat = excess_rate(m, ctrl, n_resamples=2000)
    clu = excess_rate(m, ctrl, edit, n_resamples=2000)
    assert flat.n_clusters == 1 and clu.n_clusters == n_edits
    assert clu.value == flat.value
    assert _width(clu) > 2.0 * _width(flat)


def test_excess_rate_deterministic_and_seeded() -> None:
    rng = np.random.default_rng(13)
    m = rng.random(100) < 0.5
    ctrl = rng.random((3, 100)) < 0.3
    a = excess_rate(m, ctrl, n_resamples=300, seed=1)
    b = excess_rate(m, ctrl, n_resamples=300, seed=1)
    c = excess_rate(m, ctrl, n_resamples=300, seed=2)
    assert a == b
    assert (a.low, a.high) != (c.low, c.high)


def test_excess_rate_chunked(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tiny chunks (one resample each) must give the same answer as the
    # paired bootstrap under the same chunking, i.e. every slot is filled.
    monkeypatch.setattr(es, "_CHUNK_ELEMENTS", 5)
    rng = np.random.default_rng(14)
    m = rng.random(50) < 0.5
    c = rng.random(50) < 0.2
    r = excess_rate(m, [c], n_resamples=250, seed=0)
    ref = paired_bootstrap(c.astype(float), m.astype(float), np.mean, n_resamples=250, seed=0)
    assert (r.low, r.high) == pytest.approx((ref.low, ref.high), abs=1e-12)
    r2 = excess_rate(m, np.stack([c, ~c, c]), n_resamples=250, seed=0)
    assert -1.0 <= r2.low <= r2.value <= r2.high <= 1.0


def test_excess_rate_large_n_runs() -> None:
    rng = np.random.default_rng(15)
    n = 30_000
    m = rng.random(n) < 0.3
    ctrl = rng.random((4, n)) < 0.2
    r = excess_rate(m, ctrl, n_resamples=2000)
    assert r.n == n and r.draws == 4
    assert r.low < r.value < r.high
    assert r.high - r.low < 0.05


@pytest.mark.parametrize(
    ("method", "control", "clusters", "word"),
    [
        ([1, 0, 1], [1, 0, 1], None, "control_changed"),  # 1-D control
        ([1, 0, 1], [[1, 0]], None, "control_changed"),  # wrong n
        ([1, 0, 1], np.zeros((0, 3), dtype=bool), None, "draw"),  # D == 0
        ([1, 0, 1], np.zeros((2, 3, 1), dtype=bool), None, "control_changed"),
        ([[1, 0, 1]], [[1, 0, 1]], None, "method_changed"),  # 2-D method
        ([], np.zeros((1, 0), dtype=bool), None, "method_changed"),  # n == 0
        ([1, 2, 0], [[1, 0, 1]], None, "method_changed"),  # not 0/1
        ([1, 0, 1], [[1, 0, 0.5]], None, "control_changed"),  # not 0/1
        ([1, 0, 1], [["a", "b", "c"]], None, "control_changed"),  # dtype
        ([1, 0, 1], [[1, 0, 1]], [0, 1], "clusters"),  # wrong length
        ([1, 0, 1], [[1, 0, 1]], [[0, 1, 1]], "clusters"),  # 2-D labels
    ],
)
def test_excess_rate_shape_errors(method, control, clusters, word) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=word):
        excess_rate(method, control, clusters, n_resamples=10)


def test_excess_rate_bad_options() -> None:
    with pytest.raises(ValueError, match="n_resamples"):
        excess_rate([1, 0], [[0, 0]], n_resamples=0)
    with pytest.raises(ValueError, match="confidence"):
        excess_rate([1, 0], [[0, 0]], confidence=0.0)


def test_excess_rate_absent_draws_hand_computed() -> None:
    # Two edits (clusters a, b) of two probes each; edit b's second control draw did not take.
    m = [1, 0, 1, 1]
    ctrl = [[1, 0, 0, 0], [1, 1, 1, 1]]
    present = [[1, 1, 1, 1], [1, 1, 0, 0]]
    r = excess_rate(m, ctrl, clusters=["a", "a", "b", "b"], control_present=present, n_resamples=400)
    # per-probe control rates: a: (1+1)/2, (0+1)/2; b: 0/1, 0/1 -> mean 0.375
    assert r.control_rate == pytest.approx(0.375)
    assert r.value == pytest.approx(0.75 - 0.375)
    assert r.low <= r.value <= r.high


def test_excess_rate_absent_draws_change_nothing_when_all_present() -> None:
    rng = np.random.default_rng(11)
    m = rng.random(120) < 0.4
    ctrl = rng.random((3, 120)) < 0.2
    clusters = np.repeat(np.arange(12), 10)
    full = excess_rate(m, ctrl, clusters, n_resamples=300, seed=3)
    masked = excess_rate(m, ctrl, clusters, n_resamples=300, seed=3, control_present=np.ones((3, 120), bool))
    assert (masked.value, masked.low, masked.high) == (full.value, full.low, full.high)


def test_excess_rate_absent_draw_is_not_read_as_unchanged() -> None:
    # The absent draw's entries would say "changed" = False; counting them would halve the control rate.
    m = np.ones(40, bool)
    ctrl = np.ones((2, 40), bool)
    present = np.ones((2, 40), bool)
    present[1, 20:] = False
    ctrl[1, 20:] = False
    r = excess_rate(m, ctrl, np.repeat([0, 1], 20), control_present=present, n_resamples=300)
    assert r.control_rate == 1.0 and r.value == 0.0
    assert abs(r.low) < 1e-12 and abs(r.high) < 1e-12


def test_excess_rate_refuses_a_probe_without_any_draw() -> None:
    with pytest.raises(ValueError, match=r"control_present\[:, 1\] is all False"):
        excess_rate([1, 0], [[1, 0]], control_present=[[1, 0]])
    with pytest.raises(ValueError, match="shape"):
        excess_rate([1, 0], [[1, 0]], control_present=[[1, 0, 1]])
