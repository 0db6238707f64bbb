"""Statistics for reporting edit results honestly.

Every rate an editscope report prints (edit success, locality, generalisation,
...) is a proportion or a mean over a finite probe set, and every comparison
between two editing methods is a paired comparison on the *same* probes.  This
module holds the tools used for that, on statsmodels and SciPy where they have them (Wilson,
Clopper-Pearson, exact McNemar, Holm, Cochran-Mantel-Haenszel, t-tests) with the checks and edge
cases editscope needs around them:

* :func:`wilson_interval` -- confidence interval for a binomial proportion.
* :func:`clopper_pearson` -- exact (Clopper-Pearson) binomial interval.
* :func:`mean_interval` -- Student-t confidence interval for a mean.
* :func:`bootstrap_interval` -- percentile bootstrap interval for one sample.
* :func:`cluster_bootstrap_mean` -- bootstrap interval for a mean, resampling
  whole clusters (e.g. all probes of one edit) when labels are given.
* :func:`excess_rate` -- excess of a method's changed rate over a control's
  (placebo / unrelated edits), with a two-level bootstrap interval.
* :func:`symmetric_excess` -- the same, unpaired: each edit on its own
  neighbourhood against each unrelated edit on *its* own neighbourhood,
  bootstrapped over edits, control draws and probes.
* :func:`mcnemar_exact` -- exact McNemar test for paired binary outcomes.
* :func:`paired_bootstrap` -- paired bootstrap interval and p-value for the
  difference of a statistic between two paired samples.
* :func:`cmh_paired` -- two methods' binary outcomes compared within each
  edit and combined across edits (Cochran-Mantel-Haenszel).
* :func:`tost` -- equivalence of a mean difference to zero within a stated
  margin (two one-sided t-tests, over edits when clusters are given), and
  :func:`verdict`: equivalent / different / inconclusive.
* :func:`holm`, :func:`bonferroni`, :func:`reject` -- multiple-comparison
  adjustment of p-values.

Units: proportions, p-values and confidence levels are plain fractions in
``[0, 1]`` (not percent).  Interval bounds are in the units of the input
values (fractions for proportions).  Counts are numbers of probes.
"""

from __future__ import annotations

import inspect
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats as _sps
from statsmodels.stats.contingency_tables import StratifiedTable
from statsmodels.stats.contingency_tables import mcnemar as _sm_mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint
from statsmodels.stats.weightstats import DescrStatsW

__all__ = [
    "BootstrapResult",
    "EquivalenceResult",
    "StratifiedResult",
    "cmh_paired",
    "tost",
    "verdict",
    "ExcessResult",
    "Interval",
    "McNemarResult",
    "bonferroni",
    "bootstrap_interval",
    "clopper_pearson",
    "cluster_bootstrap_mean",
    "excess_rate",
    "holm",
    "symmetric_excess",
    "mcnemar_exact",
    "mean_interval",
    "paired_bootstrap",
    "reject",
    "wilson_interval",
]

#: Statistic callable: maps a 1-D float array to a scalar.  If it accepts an
#: ``axis`` keyword (like ``np.mean``/``np.median``) it is applied to a whole
#: block of resamples at once (``statistic(block, axis=-1)``); otherwise it is
#: called once per resample.
Statistic = Callable[..., Any]

# Upper bound on the number of elements in one block of resampled indices
# (int64) in the bootstrap routines: 2**22 elements = 32 MiB of indices, plus
# the same again per gathered float sample.  Keeps memory bounded for large n.
_CHUNK_ELEMENTS = 1 << 22


# --------------------------------------------------------------------------- #
# Result types
# --------------------------------------------------------------------------- #


class _Fields:
    """``to_dict`` for the frozen result dataclasses below."""

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a plain ``dict`` (floats may be ``nan``)."""
        return asdict(self)  # type: ignore[call-overload]


class _Estimate(_Fields):
    """A result with ``value``, ``low``, ``high``, ``n`` and ``confidence`` fields, viewed as an
    :class:`Interval` whose method name is ``interval_method``."""

    interval_method: str = ""

    def interval(self) -> Interval:
        """The estimate and its bounds as an :class:`Interval`."""
        return Interval(value=self.value, low=self.low, high=self.high, n=self.n,  # type: ignore[attr-defined]
                        confidence=self.confidence, method=self.interval_method)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Interval(_Fields):
    """A point estimate with a two-sided confidence interval.

    Attributes:
        value: Point estimate, in the units of the data (a fraction in
            ``[0, 1]`` for proportions).  ``nan`` when undefined (e.g. no data).
        low: Lower bound of the interval, same units as ``value``.
        high: Upper bound of the interval, same units as ``value``.
        n: Number of observations (trials for a proportion) behind the estimate.
        confidence: Nominal two-sided coverage, a fraction in ``(0, 1)``.
        method: Short name of the method that produced the interval
            (``"wilson"``, ``"clopper-pearson"``, ``"t"``,
            ``"bootstrap-percentile"``, ``"cluster-bootstrap"``).
    """

    value: float
    low: float
    high: float
    n: int
    confidence: float
    method: str = ""


@dataclass(frozen=True)
class McNemarResult(_Fields):
    """Outcome of :func:`mcnemar_exact`.

    Attributes:
        n: Number of paired observations (probes).
        n01: Pairs where ``a`` is false and ``b`` is true.
        n10: Pairs where ``a`` is true and ``b`` is false.
        statistic: ``min(n01, n10)``, the exact-test statistic.
        pvalue: Two-sided exact p-value in ``[0, 1]``.
    """

    n: int
    n01: int
    n10: int
    statistic: int
    pvalue: float


@dataclass(frozen=True)
class BootstrapResult(_Estimate):
    """Outcome of :func:`paired_bootstrap`.

    Attributes:
        value: Observed difference ``statistic(y) - statistic(x)`` on the
            original (not resampled) data, in the units of the data.
        low: Lower percentile-bootstrap bound of the difference.
        high: Upper percentile-bootstrap bound of the difference.
        pvalue: Two-sided bootstrap p-value for "difference == 0", in
            ``[0, 1]``; resolution is ``2 / n_resamples``.
        x_value: ``statistic(x)`` on the original data.
        y_value: ``statistic(y)`` on the original data.
        n: Number of pairs.
        n_resamples: Number of bootstrap resamples drawn.
        confidence: Nominal two-sided coverage of ``[low, high]``.
        seed: Seed of the numpy ``Generator`` used.
    """

    value: float
    low: float
    high: float
    pvalue: float
    x_value: float
    y_value: float
    n: int
    n_resamples: int
    confidence: float
    seed: int

    interval_method = "paired-bootstrap-percentile"  # class attribute, not a field


@dataclass(frozen=True)
class ExcessResult(_Estimate):
    """Outcome of :func:`excess_rate`.

    Attributes:
        value: Observed excess ``method_rate - control_rate``, a difference of
            fractions in ``[-1, 1]``.
        low: Lower bound of the two-level percentile-bootstrap interval.
        high: Upper bound of the two-level percentile-bootstrap interval.
        method_rate: Fraction of probes changed under the method, in ``[0, 1]``.
        control_rate: Fraction of (draw, probe) pairs changed under the
            control, averaged over all ``draws`` control draws, in ``[0, 1]``.
        n: Number of probes.
        n_clusters: Number of resampling units that are clusters (distinct
            labels); ``1`` when probes are resampled individually.
        draws: Number of control draws ``D``.
        confidence: Nominal two-sided coverage of ``[low, high]``.
        method: Name of the interval method (``"two-level-bootstrap"``).
        pvalue: two-sided bootstrap p-value of ``excess == 0`` (the share of resamples on the
            other side of 0, doubled; ``(k + 1) / (B + 1)`` so it is never 0).
        p_equivalence: bootstrap TOST p-value of ``|excess| < margin`` (the larger share of
            resamples beyond ``-margin`` or ``+margin``).
        margin: the equivalence margin (a difference of fractions).
    """

    value: float
    low: float
    high: float
    method_rate: float
    control_rate: float
    n: int
    n_clusters: int
    draws: int
    confidence: float
    method: str = "two-level-bootstrap"
    pvalue: float = math.nan
    p_equivalence: float = math.nan
    margin: float = 0.02

    @property
    def interval_method(self) -> str:  # type: ignore[override]
        return self.method


# --------------------------------------------------------------------------- #
# Validation helpers
# --------------------------------------------------------------------------- #


def _check_confidence(confidence: float) -> float:
    try:
        c = float(confidence)
    except (TypeError, ValueError):
        raise ValueError(f"confidence must be a number in (0, 1), got {confidence!r}") from None
    if not (0.0 < c < 1.0):
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    return c


def _check_count(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer count, got bool {value!r}")
    try:
        k = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer count, got {value!r}") from None
    if k < 0:
        raise ValueError(f"{name} must be >= 0, got {k}")
    return k


def _as_float_array(values: Sequence[float], name: str, *, allow_empty: bool) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a 1-D sequence of numbers") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if not allow_empty and arr.size == 0:
        raise ValueError(f"{name} must not be empty")
    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise ValueError(f"{name} must be finite; {name}[{bad}] = {arr[bad]!r}")
    return arr


def _as_bools(values: Any, name: str, ndim: int = 1) -> np.ndarray:
    """Validate a 1-D (``ndim=1``) or 2-D (draws x probes) array of booleans or 0/1 numbers; returns
    dtype bool. The error names the first bad element by its index."""
    arr = np.asarray(values)
    if arr.ndim != ndim:
        what = "a 1-D sequence of booleans" if ndim == 1 else "2-D (draws x probes)"
        raise ValueError(f"{name} must be {what}, got shape {arr.shape}")
    if arr.dtype == bool:
        return arr
    if arr.size == 0:
        return arr.astype(bool)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must contain booleans (or 0/1), got dtype {arr.dtype}")
    ok = (arr == 0) | (arr == 1)
    if not np.all(ok):
        at = tuple(int(v) for v in np.argwhere(~ok)[0])
        raise ValueError(f"{name} must contain booleans (or 0/1); {name}[{', '.join(map(str, at))}] = {arr[at]!r}")
    return arr.astype(bool)


def _cluster_codes(clusters: Any, n: int, name: str = "clusters") -> tuple[np.ndarray, int]:
    """Map cluster labels (any hashable values) to codes ``0..G-1``.

    Returns ``(codes, G)`` with ``codes`` of shape ``(n,)`` (int64).
    """
    arr = np.asarray(clusters)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of labels, got shape {arr.shape}")
    if arr.size != n:
        raise ValueError(f"{name} must have one label per probe/observation: got len({name})={arr.size}, expected {n}")
    if arr.dtype.kind == "f" and np.any(np.isnan(arr)):
        bad = int(np.flatnonzero(np.isnan(arr))[0])
        raise ValueError(f"{name} must not contain nan labels; {name}[{bad}] is nan")
    try:
        uniq, codes = np.unique(arr, return_inverse=True)
        return codes.reshape(-1).astype(np.int64), int(uniq.size)
    except TypeError:  # unorderable mixed labels: fall back to first-seen order
        mapping: dict[Any, int] = {}
        codes = np.fromiter((mapping.setdefault(v, len(mapping)) for v in arr.tolist()), dtype=np.int64, count=n)
        return codes, len(mapping)


def _check_pvalues(pvalues: Sequence[float], name: str = "pvalues") -> np.ndarray:
    try:
        p = np.asarray(pvalues, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a 1-D sequence of numbers") from None
    if p.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {p.shape}")
    ok = (p >= 0.0) & (p <= 1.0)  # False for nan
    if not np.all(ok):
        bad = int(np.flatnonzero(~ok)[0])
        raise ValueError(f"{name}[{bad}] = {p[bad]!r} is not a p-value in [0, 1]")
    return p


def _check_margin(margin: float) -> float:
    if isinstance(margin, bool) or not (isinstance(margin, (int, float)) and margin > 0 and math.isfinite(margin)):
        raise ValueError(f"equivalence margin={margin!r} must be a positive number (the largest difference that "
                         "counts as no effect, e.g. 0.02)")
    return float(margin)


def _check_alpha(alpha: float) -> float:
    a = float(alpha)
    if not (0.0 < a < 1.0):
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    return a


# --------------------------------------------------------------------------- #
# Intervals
# --------------------------------------------------------------------------- #


def _check_binomial(successes: int, n: int, confidence: float) -> tuple[int, int, float]:
    """``(k, n, confidence)`` of a binomial interval's arguments, checked (see the callers' Raises)."""
    k = _check_count(successes, "successes")
    m = _check_count(n, "n")
    c = _check_confidence(confidence)
    if k > m:
        raise ValueError(f"successes must be <= n, got successes={k}, n={m}")
    return k, m, c


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> Interval:
    """Wilson score interval for a binomial proportion.

    Args:
        successes: Number of successes ``k`` (an integer, ``0 <= k <= n``).
        n: Number of trials (an integer ``>= 0``).
        confidence: Two-sided coverage as a fraction in ``(0, 1)``.

    Returns:
        :class:`Interval` with ``value = k / n`` and Wilson bounds, all
        fractions in ``[0, 1]``.  ``low`` is exactly ``0.0`` when ``k == 0`` and
        ``high`` exactly ``1.0`` when ``k == n``.

        When ``n == 0`` nothing is known: ``value`` is ``nan`` and the interval
        is the whole range, ``low = 0.0``, ``high = 1.0`` (no exception).

    Raises:
        ValueError: ``successes`` or ``n`` negative, ``successes > n``, or
            ``confidence`` outside ``(0, 1)``.  The message names the argument.
        TypeError: ``successes`` or ``n`` is not an integer.
    """
    k, m, c = _check_binomial(successes, n, confidence)
    if m == 0:
        return Interval(value=math.nan, low=0.0, high=1.0, n=0, confidence=c, method="wilson")
    lo, hi = proportion_confint(k, m, alpha=1.0 - c, method="wilson")
    low = 0.0 if k == 0 else min(max(float(lo), 0.0), 1.0)
    high = 1.0 if k == m else min(max(float(hi), 0.0), 1.0)
    return Interval(value=k / m, low=low, high=high, n=m, confidence=c, method="wilson")


def clopper_pearson(successes: int, n: int, confidence: float = 0.95) -> Interval:
    """Exact (Clopper-Pearson) interval for a binomial proportion.

    With ``alpha = 1 - confidence`` the bounds are beta quantiles::

        low  = Beta(k, n - k + 1).ppf(alpha / 2)       (0 when k == 0)
        high = Beta(k + 1, n - k).ppf(1 - alpha / 2)   (1 when k == n)

    The interval is conservative: its coverage is at least ``confidence`` for
    every true proportion (it is wider than :func:`wilson_interval`).

    Args:
        successes: Number of successes ``k`` (an integer, ``0 <= k <= n``).
        n: Number of trials (an integer ``>= 0``).
        confidence: Two-sided coverage as a fraction in ``(0, 1)``.

    Returns:
        :class:`Interval` with ``value = k / n`` and the exact bounds, all
        fractions in ``[0, 1]``, ``method = "clopper-pearson"``.

        When ``n == 0`` nothing is known: as in :func:`wilson_interval`,
        ``value`` is ``nan`` and the interval is the whole range, ``low = 0.0``,
        ``high = 1.0`` (no exception).

    Raises:
        ValueError: ``successes`` or ``n`` negative, ``successes > n``, or
            ``confidence`` outside ``(0, 1)``.  The message names the argument.
        TypeError: ``successes`` or ``n`` is not an integer.
    """
    k, m, c = _check_binomial(successes, n, confidence)
    if m == 0:
        return Interval(value=math.nan, low=0.0, high=1.0, n=0, confidence=c, method="clopper-pearson")
    lo, hi = proportion_confint(k, m, alpha=1.0 - c, method="beta")
    low = 0.0 if k == 0 else float(lo)
    high = 1.0 if k == m else float(hi)
    return Interval(value=k / m, low=low, high=high, n=m, confidence=c, method="clopper-pearson")


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Student-t confidence interval for the mean of continuous values.

    Uses ``mean +/- t_{(1+confidence)/2, n-1} * s / sqrt(n)`` with the sample
    standard deviation ``s`` (``ddof=1``).

    Args:
        values: Observations (finite numbers), any units.
        confidence: Two-sided coverage as a fraction in ``(0, 1)``.

    Returns:
        :class:`Interval` in the units of ``values``.  With ``n < 2`` the
        spread cannot be estimated: ``low`` and ``high`` are ``nan`` (``value``
        is the single value for ``n == 1`` and ``nan`` for ``n == 0``).  With
        zero variance the interval collapses to ``[mean, mean]``.

    Raises:
        ValueError: ``values`` not 1-D or not finite, or ``confidence``
            outside ``(0, 1)``.
    """
    c = _check_confidence(confidence)
    x = _as_float_array(values, "values", allow_empty=True)
    n = int(x.size)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, c, "t")
    mean = float(np.mean(x))
    if n < 2:
        return Interval(mean, math.nan, math.nan, n, c, "t")
    sem = float(np.std(x, ddof=1)) / math.sqrt(n)
    t = float(_sps.t.ppf((1.0 + c) / 2.0, n - 1))
    return Interval(mean, mean - t * sem, mean + t * sem, n, c, "t")


# --------------------------------------------------------------------------- #
# Bootstrap
# --------------------------------------------------------------------------- #


def _is_vectorized(statistic: Statistic) -> bool:
    try:
        params = inspect.signature(statistic).parameters
    except (TypeError, ValueError):
        return False
    return "axis" in params


def _scalar(value: Any, what: str) -> float:
    arr = np.asarray(value, dtype=float)
    if arr.ndim != 0 and arr.size != 1:
        raise ValueError(f"statistic must return a scalar, got shape {arr.shape} for {what}")
    return float(arr.reshape(()))


def _apply_rows(statistic: Statistic, block: np.ndarray, vectorized: bool) -> np.ndarray:
    """Apply ``statistic`` to each row of a 2-D ``block``; returns shape (rows,)."""
    if vectorized:
        out = np.asarray(statistic(block, axis=-1), dtype=float)
        if out.shape != (block.shape[0],):
            raise ValueError(
                "statistic(block, axis=-1) must return one value per row; "
                f"got shape {out.shape} for block shape {block.shape}"
            )
        return out
    return np.fromiter(
        (_scalar(statistic(row), "a resample") for row in block),
        dtype=float,
        count=block.shape[0],
    )


def _resample_stats(
    samples: Sequence[np.ndarray],
    statistic: Statistic,
    n_resamples: int,
    seed: int,
) -> list[np.ndarray]:
    """Bootstrap distribution of ``statistic`` for each of ``samples``.

    All samples have the same length and are resampled with the *same* index
    rows (paired bootstrap).  Index rows are generated in blocks of at most
    ``_CHUNK_ELEMENTS`` elements so memory stays bounded.
    """
    n = int(samples[0].size)
    rng = np.random.default_rng(seed)
    vectorized = _is_vectorized(statistic)
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // n)
    out = [np.empty(n_resamples, dtype=float) for _ in samples]
    start = 0
    while start < n_resamples:
        rows = min(rows_per_chunk, n_resamples - start)
        idx = rng.integers(0, n, size=(rows, n))
        for sample, dist in zip(samples, out):
            dist[start : start + rows] = _apply_rows(statistic, sample[idx], vectorized)
        start += rows
    return out


def _check_resamples(n_resamples: int) -> int:
    b = _check_count(n_resamples, "n_resamples")
    if b < 1:
        raise ValueError(f"n_resamples must be >= 1, got {b}")
    return b


def paired_bootstrap(
    x: Sequence[float],
    y: Sequence[float],
    statistic: Statistic = np.mean,
    n_resamples: int = 10000,
    confidence: float = 0.95,
    seed: int = 0,
) -> BootstrapResult:
    """Paired bootstrap for the difference ``statistic(y) - statistic(x)``.

    ``x[i]`` and ``y[i]`` must be measurements of the same probe (e.g. a
    per-probe score before/after an edit, or of method A and method B).  Each
    resample draws ``n`` probe indices with replacement and applies the *same*
    indices to ``x`` and ``y``, which keeps the pairing.  Index matrices are
    generated in blocks so memory stays bounded (tens of MiB) even for
    ``n`` around 100k.  Cost is O(n * n_resamples): with the default
    ``np.mean``, roughly 1.5 ms per resample at ``n = 100_000`` on one CPU core
    (about 15 s for 10,000 resamples).

    Args:
        x: Baseline values, finite numbers (bools are accepted as 0/1).
        y: Comparison values, same length as ``x``.
        statistic: Maps a 1-D array to a scalar (default ``np.mean``).  If it
            accepts an ``axis`` keyword it is called on whole blocks of
            resamples (``statistic(block, axis=-1)``); otherwise once per
            resample (slower).
        n_resamples: Number of bootstrap resamples (``>= 1``).
        confidence: Two-sided coverage of the percentile interval, in ``(0, 1)``.
        seed: Seed for ``numpy.random.default_rng``; the result is a
            deterministic function of the inputs and the seed.

    Returns:
        :class:`BootstrapResult` whose ``value`` is the observed difference,
        ``[low, high]`` the percentile interval of the resampled differences
        (quantiles ``(1 -/+ confidence) / 2``), and ``pvalue`` the two-sided
        bootstrap p-value for "difference == 0": twice the fraction of
        resampled differences on the other side of 0 from the observed one
        (ties at 0 count as the other side), capped at 1.  An observed
        difference of exactly 0 gives ``pvalue = 1``.  A ``pvalue`` of 0 means
        below the resolution, i.e. ``< 2 / n_resamples``.

    Raises:
        ValueError: Lengths differ (message names both), empty or non-finite
            input, ``n_resamples < 1``, ``confidence`` outside ``(0, 1)``, or
            ``statistic`` not returning a scalar.
    """
    xa = _as_float_array(x, "x", allow_empty=True)
    ya = _as_float_array(y, "y", allow_empty=True)
    if xa.size != ya.size:
        raise ValueError(f"x and y must have the same length, got len(x)={xa.size}, len(y)={ya.size}")
    if xa.size == 0:
        raise ValueError("x and y must not be empty")
    b = _check_resamples(n_resamples)
    c = _check_confidence(confidence)
    seed = operator.index(seed)

    x_value = _scalar(statistic(xa), "x")
    y_value = _scalar(statistic(ya), "y")
    observed = y_value - x_value

    dist_x, dist_y = _resample_stats([xa, ya], statistic, b, seed)
    diffs = dist_y - dist_x
    low, high = np.quantile(diffs, [(1.0 - c) / 2.0, (1.0 + c) / 2.0])

    if observed > 0:
        other = np.count_nonzero(diffs <= 0)
    elif observed < 0:
        other = np.count_nonzero(diffs >= 0)
    else:
        other = b  # observed difference exactly 0: no evidence against H0
    pvalue = min(1.0, 2.0 * other / b)

    return BootstrapResult(
        value=observed,
        low=float(low),
        high=float(high),
        pvalue=float(pvalue),
        x_value=x_value,
        y_value=y_value,
        n=int(xa.size),
        n_resamples=b,
        confidence=c,
        seed=seed,
    )


def bootstrap_interval(
    x: Sequence[float],
    statistic: Statistic = np.mean,
    n_resamples: int = 10000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap confidence interval for ``statistic`` of one sample.

    Args:
        x: Observations, finite numbers (bools accepted as 0/1), any units.
        statistic: Maps a 1-D array to a scalar (default ``np.mean``); see
            :func:`paired_bootstrap` for the ``axis`` convention.
        n_resamples: Number of bootstrap resamples (``>= 1``).
        confidence: Two-sided coverage, a fraction in ``(0, 1)``.
        seed: Seed for ``numpy.random.default_rng`` (deterministic).

    Returns:
        :class:`Interval` with ``value = statistic(x)`` and the
        ``(1 -/+ confidence) / 2`` quantiles of the bootstrap distribution as
        bounds, in the units of ``x``.  With ``n == 1`` the interval has zero
        width (the bootstrap cannot estimate spread from one value).

    Raises:
        ValueError: Empty or non-finite ``x``, ``n_resamples < 1``,
            ``confidence`` outside ``(0, 1)``, or a non-scalar statistic.
    """
    xa = _as_float_array(x, "x", allow_empty=False)
    b = _check_resamples(n_resamples)
    c = _check_confidence(confidence)
    seed = operator.index(seed)
    value = _scalar(statistic(xa), "x")
    (dist,) = _resample_stats([xa], statistic, b, seed)
    low, high = np.quantile(dist, [(1.0 - c) / 2.0, (1.0 + c) / 2.0])
    return Interval(value, float(low), float(high), int(xa.size), c, "bootstrap-percentile")


def cluster_bootstrap_mean(
    values: Sequence[float],
    clusters: Sequence[Any] | None = None,
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Mean with a percentile bootstrap interval, resampling clusters if given.

    Probes are rarely independent: all probes of one edit share the edit, so
    their outcomes are correlated and an i.i.d. bootstrap over probes gives a
    too-narrow interval.  With ``clusters`` (one label per observation, e.g.
    the edit each probe belongs to) having at least 2 distinct labels, each
    resample draws ``G`` whole clusters with replacement (``G`` = number of
    distinct labels) and its statistic is the mean over all observations of
    the drawn clusters, i.e. ``sum of drawn cluster sums / sum of drawn
    cluster sizes`` (clusters may differ in size).  Otherwise (no labels, or a
    single label) observations are resampled individually, exactly as
    :func:`bootstrap_interval` with ``np.mean`` does (same result for the
    same seed).

    Args:
        values: Observations, shape ``(n,)``, finite numbers (bools accepted
            as 0/1), any units.
        clusters: Optional labels, shape ``(n,)``, any hashable values
            (ints, strings, ...); ``nan`` labels are rejected.
        n_resamples: Number of bootstrap resamples (``>= 1``).
        confidence: Two-sided coverage, a fraction in ``(0, 1)``.
        seed: Seed for ``numpy.random.default_rng`` (deterministic).

    Returns:
        :class:`Interval` in the units of ``values``: ``value`` is the plain
        mean of ``values``, ``[low, high]`` the ``(1 -/+ confidence) / 2``
        quantiles of the bootstrap distribution, ``n`` the number of
        observations, ``method`` ``"cluster-bootstrap"`` (clusters resampled)
        or ``"bootstrap-percentile"`` (observations resampled).

    Raises:
        ValueError: ``values`` empty, not 1-D or not finite; ``clusters`` not
            1-D, of a different length or containing ``nan``;
            ``n_resamples < 1``; ``confidence`` outside ``(0, 1)``.
    """
    x = _as_float_array(values, "values", allow_empty=False)
    b = _check_resamples(n_resamples)
    c = _check_confidence(confidence)
    seed = operator.index(seed)
    n = int(x.size)
    value = float(np.mean(x))
    qs = [(1.0 - c) / 2.0, (1.0 + c) / 2.0]

    n_groups = 1
    if clusters is not None:
        codes, n_groups = _cluster_codes(clusters, n)
    if n_groups < 2:
        (dist,) = _resample_stats([x], np.mean, b, seed)
        low, high = np.quantile(dist, qs)
        return Interval(value, float(low), float(high), n, c, "bootstrap-percentile")

    sums = np.bincount(codes, weights=x, minlength=n_groups)
    sizes = np.bincount(codes, minlength=n_groups).astype(float)
    rng = np.random.default_rng(seed)
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // n_groups)
    dist = np.empty(b, dtype=float)
    start = 0
    while start < b:
        rows = min(rows_per_chunk, b - start)
        idx = rng.integers(0, n_groups, size=(rows, n_groups))
        dist[start : start + rows] = sums[idx].sum(axis=1) / sizes[idx].sum(axis=1)
        start += rows
    low, high = np.quantile(dist, qs)
    return Interval(value, float(low), float(high), n, c, "cluster-bootstrap")


# --------------------------------------------------------------------------- #
# Excess over a control
# --------------------------------------------------------------------------- #


def _row_counts(idx: np.ndarray, size: int) -> np.ndarray:
    """Per-row multiplicities: ``out[r, j] = count of j in idx[r]``, as float."""
    rows = idx.shape[0]
    flat = (idx + (np.arange(rows, dtype=np.int64) * size)[:, None]).ravel()
    return np.bincount(flat, minlength=rows * size).reshape(rows, size).astype(float)


def excess_rate(
    method_changed: Sequence[bool],
    control_changed: Any,
    clusters: Sequence[Any] | None = None,
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    margin: float = 0.02,
    control_present: Any = None,
) -> ExcessResult:
    """Excess of a method's changed rate over a control's, with a 2-level bootstrap.

    A method "changes" some probes it should not touch (or should touch); a
    control -- a placebo edit, or unrelated edits -- tells how often probes
    change anyway.  The quantity of interest is the excess::

        value = mean_i method_changed[i] - mean_{d,i} control_changed[d, i]
              = method_rate - control_rate

    i.e. the control rate is averaged over all ``D`` draws and all ``n``
    probes (each probe has weight 1, also when clustered).

    Interval (two-level percentile bootstrap).  Two independent sources of
    randomness make ``value`` uncertain: which probes were sampled, and which
    control draws were taken (a placebo is itself random, so its own
    variability must widen the interval; a single lucky placebo draw must not
    make the method look better or worse than it is).  Each of the
    ``n_resamples`` resamples therefore

    1. draws ``D`` control draws with replacement from the ``D`` observed ones
       (when ``D >= 2``; with ``D == 1`` the draw level is fixed -- the
       variability of the control draw cannot be estimated from one draw and
       is *not* in the interval, so use several draws when possible);
    2. draws units with replacement: the ``n`` probes, or -- when ``clusters``
       has at least 2 distinct labels -- the ``G`` clusters as whole blocks
       (e.g. all probes of one edit, whose outcomes are correlated);
    3. recomputes the excess on the resample: the method rate over the drawn
       units' probes (with multiplicity) minus the mean over the drawn control
       draws of each draw's rate over the *same* drawn probes.  Method and
       control are paired on probes, so probe-level effects common to both
       cancel.

    ``[low, high]`` are the ``(1 -/+ confidence) / 2`` quantiles of the
    resampled excesses.  Resampling both factors of this crossed (draws x
    probes) design is slightly conservative (the probe x draw interaction is
    counted in both levels); it does not under-cover from ignoring the
    control's variability.  Resamples are processed in chunks of at most
    ``_CHUNK_ELEMENTS`` (about 4M) elements per array, so ``n = 30_000`` with
    ``n_resamples = 2000`` stays within tens of MiB.

    Args:
        method_changed: Shape ``(n,)`` booleans (or 0/1): probe ``i`` changed
            under the method.
        control_changed: Shape ``(D, n)`` booleans (or 0/1): probe ``i``
            changed under control draw ``d``; ``D >= 1``.  A single draw must
            still be 2-D (``[row]``).
        clusters: Optional labels of shape ``(n,)`` (any hashable values, e.g.
            the edit each probe belongs to).  Used as resampling units when
            they have at least 2 distinct labels.
        n_resamples: Number of bootstrap resamples (``>= 1``).
        confidence: Two-sided coverage, a fraction in ``(0, 1)``.
        seed: Seed for ``numpy.random.default_rng`` (deterministic).
        control_present: Optional ``(D, n)`` booleans: False where draw ``d`` has no outcome for
            probe ``i`` (e.g. that edit's control did not take, so it was left out). A probe's
            control rate is then the mean over its present draws (each probe needs one), and in a
            resample over the present draws among those drawn (the probe's observed mean when none
            of them is present). None: every draw present.

    Returns:
        :class:`ExcessResult` (``method = "two-level-bootstrap"``;
        ``n_clusters = 1`` when probes are resampled individually).

    Raises:
        ValueError: ``method_changed`` not 1-D or empty; ``control_changed``
            not 2-D, with no draws, or with a probe count different from
            ``len(method_changed)``; values other than booleans / 0 / 1;
            ``clusters`` not 1-D, of the wrong length or containing ``nan``;
            ``n_resamples < 1``; ``confidence`` outside ``(0, 1)``.
    """
    m = _as_bools(method_changed, "method_changed")
    ctrl = _as_bools(control_changed, "control_changed", ndim=2)
    n = int(m.size)
    if n < 1:
        raise ValueError("method_changed must not be empty (need n >= 1 probes)")
    n_draws, n_ctrl = ctrl.shape
    if n_draws < 1:
        raise ValueError(f"control_changed must have at least one draw (D >= 1), got shape {ctrl.shape}")
    if n_ctrl != n:
        raise ValueError(
            "control_changed must have shape (D, n) with n = len(method_changed): "
            f"got control_changed.shape={ctrl.shape}, len(method_changed)={n}"
        )
    b = _check_resamples(n_resamples)
    c = _check_confidence(confidence)
    margin = _check_margin(margin)
    seed = operator.index(seed)

    present = None
    if control_present is not None:
        present = _as_bools(control_present, "control_present", ndim=2)
        if present.shape != ctrl.shape:
            raise ValueError(f"control_present must have the shape of control_changed {ctrl.shape}, got "
                             f"{present.shape}")
        if not present.any(axis=0).all():
            i = int(np.argmin(present.any(axis=0)))
            raise ValueError(f"control_present[:, {i}] is all False: every probe needs at least one present draw")
        if present.all():
            present = None

    method_rate = float(np.mean(m))
    if present is None:
        control_rate = float(np.mean(ctrl))
    else:
        control_rate = float(np.mean((ctrl & present).sum(axis=0) / present.sum(axis=0)))
    value = method_rate - control_rate

    n_groups = 1
    if clusters is not None:
        codes, n_groups = _cluster_codes(clusters, n)
    changed = ctrl if present is None else ctrl & present
    dist = _excess_resamples(m, changed.astype(float), None if present is None else present.astype(float),
                             codes if n_groups >= 2 else None, n_groups, b, seed)
    low, high = np.quantile(dist, [(1.0 - c) / 2.0, (1.0 + c) / 2.0])
    pvalue, p_equivalence = _bootstrap_p(dist, margin)

    return ExcessResult(
        value=value,
        low=float(low),
        high=float(high),
        method_rate=method_rate,
        control_rate=control_rate,
        n=n,
        n_clusters=n_groups,
        draws=int(n_draws),
        confidence=c,
        method="two-level-bootstrap",
        pvalue=pvalue,
        p_equivalence=p_equivalence,
        margin=float(margin),
    )


def _excess_resamples(m: np.ndarray, changed: np.ndarray, present: np.ndarray | None, codes: np.ndarray | None,
                      n_groups: int, b: int, seed: int) -> np.ndarray:
    """``b`` bootstrap resamples of the excess (see :func:`excess_rate`): units (probes, or the
    ``n_groups`` clusters of ``codes``) and control draws resampled together. ``changed``: ``(D, n)``
    0/1 (0 where absent); ``present``: ``(D, n)`` 0/1 or None (all present). Returns shape ``(b,)``."""
    n_draws, n = changed.shape
    if codes is not None:
        n_units = n_groups
        unit_m = np.bincount(codes, weights=m.astype(float), minlength=n_units)
        unit_size = np.bincount(codes, minlength=n_units).astype(float)
        unit_c = np.stack([np.bincount(codes, weights=row, minlength=n_units) for row in changed])  # (D, G)
        unit_p = (None if present is None
                  else np.stack([np.bincount(codes, weights=row, minlength=n_units) for row in present]))
    else:
        n_units = n
        unit_m = m.astype(float)
        unit_size = np.ones(n, dtype=float)
        unit_c = changed  # (D, n)
        unit_p = present
    if unit_p is not None:
        # a unit's changed rate over its present draws: what stands in when a resample draws none of them
        observed = unit_c.sum(axis=0) / np.maximum(unit_p.sum(axis=0), 1.0)

    rng = np.random.default_rng(seed)
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // max(n_units, n_draws))
    dist = np.empty(b, dtype=float)
    start = 0
    while start < b:
        rows = min(rows_per_chunk, b - start)
        # Unit level: multiplicity of each unit in each resample, (rows, units).
        w = _row_counts(rng.integers(0, n_units, size=(rows, n_units)), n_units)
        total = w @ unit_size  # probes in each resample, (rows,)
        m_rate = (w @ unit_m) / total
        if unit_p is not None:
            # Draw level, then each unit's rate over the present draws drawn (its observed rate if none).
            v = _row_counts(rng.integers(0, n_draws, size=(rows, n_draws)), n_draws) if n_draws >= 2 \
                else np.ones((rows, 1))
            num, den = v @ unit_c, v @ unit_p  # (rows, units)
            rate = np.where(den > 0, num / np.maximum(den, 1e-300), observed)
            c_rate = np.einsum("ru,ru->r", w, rate * unit_size) / total
        else:
            per_draw = w @ unit_c.T  # changed count of each draw on the resample, (rows, D)
            if n_draws >= 2:
                # Draw level: multiplicity of each control draw, (rows, D).
                v = _row_counts(rng.integers(0, n_draws, size=(rows, n_draws)), n_draws)
                c_rate = np.einsum("rd,rd->r", v, per_draw) / (n_draws * total)
            else:
                c_rate = per_draw[:, 0] / total
        dist[start : start + rows] = m_rate - c_rate
        start += rows
    return dist


def _bootstrap_p(dist: np.ndarray, margin: float) -> tuple[float, float]:
    """Two-sided bootstrap p of "excess = 0" and the equivalence p of "|excess| >= margin" from a
    resampled distribution (the share on the far side, +1 smoothed)."""
    b = dist.size
    below, above = int(np.count_nonzero(dist <= 0)), int(np.count_nonzero(dist >= 0))
    outside = max(int(np.count_nonzero(dist >= margin)), int(np.count_nonzero(dist <= -margin)))
    return min(1.0, 2.0 * (min(below, above) + 1) / (b + 1)), min(1.0, (outside + 1) / (b + 1))


def symmetric_excess(
    method_changed: Sequence[Sequence[bool]],
    control_changed: Sequence[Sequence[Sequence[bool]]],
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    margin: float = 0.02,
) -> ExcessResult:
    """Excess of an edit's changed rate on its own neighbourhood over unrelated edits' changed
    rates on *theirs* (unpaired: the probes differ).

    A paired excess (:func:`excess_rate`) measures unrelated edits on the studied edit's probes,
    where the studied edit's near neighbourhood is, by construction, far from theirs. Here each
    unrelated edit is judged on its own neighbourhood of the same category::

        value = mean_e m_e - mean_e mean_d c_{e,d}

    with ``m_e`` the method's changed rate over edit ``e``'s probes and ``c_{e,d}`` control draw
    ``d``'s changed rate over its own probes (edits weighted equally, draws equally within an
    edit; with one edit this is the pooled rate difference).

    Interval: percentile bootstrap over ``n_resamples``. With at least two edits, edits are
    resampled (their probe-level noise is inside the between-edit spread) and within each drawn
    edit its draws; with one edit, the method's probes and each draw's probes are resampled
    (a resampled rate of ``k`` of ``n`` is ``Binomial(n, k/n) / n``) together with the draws.
    p-values as :func:`excess_rate`'s.

    Args:
        method_changed: per edit, shape ``(n_e,)`` booleans: the edit's probes that changed.
        control_changed: per edit, per control draw, shape ``(n_{e,d},)`` booleans.

    Returns:
        :class:`ExcessResult` (``method = "unpaired-bootstrap"``; ``n`` the method's probes,
        ``n_clusters`` the edits, ``draws`` the control draws per edit, at least).

    Raises:
        ValueError: no edits, an edit with no probes or no draws, edit counts that differ.
    """
    m = [_as_bools(x, f"method_changed[{i}]") for i, x in enumerate(method_changed)]
    if not m:
        raise ValueError("method_changed must hold at least one edit")
    if len(control_changed) != len(m):
        raise ValueError(f"control_changed has {len(control_changed)} edits, method_changed {len(m)}: one entry per edit")
    c = [[_as_bools(d, f"control_changed[{i}][{j}]") for j, d in enumerate(draws)]
         for i, draws in enumerate(control_changed)]
    for i, (mi, ci) in enumerate(zip(m, c)):
        if mi.size == 0:
            raise ValueError(f"method_changed[{i}] is empty: each edit needs at least one probe")
        if not ci or any(d.size == 0 for d in ci):
            raise ValueError(f"control_changed[{i}] needs at least one draw, each with at least one probe")
    b = _check_resamples(n_resamples)
    conf = _check_confidence(confidence)
    margin = _check_margin(margin)
    rng = np.random.default_rng(operator.index(seed))
    m_rate = np.array([mi.mean() for mi in m])
    c_rates = [np.array([d.mean() for d in ci]) for ci in c]
    method_rate, control_rate = float(m_rate.mean()), float(np.mean([r.mean() for r in c_rates]))
    n_edits = len(m)
    if n_edits >= 2:
        pick = rng.integers(0, n_edits, size=(b, n_edits))
        ctl_mean = np.empty((b, n_edits))
        for e in range(n_edits):  # each edit's resampled mean over its draws, (b,)
            r = c_rates[e]
            ctl_mean[:, e] = r[rng.integers(0, r.size, size=(b, r.size))].mean(axis=1)
        dist = m_rate[pick].mean(axis=1) - np.take_along_axis(ctl_mean, pick, axis=1).mean(axis=1)
    else:
        n0 = m[0].size
        m_res = rng.binomial(n0, m_rate[0], size=b) / n0
        sizes = np.array([d.size for d in c[0]])
        rates = c_rates[0]
        draw_pick = rng.integers(0, rates.size, size=(b, rates.size)) if rates.size >= 2 else \
            np.zeros((b, 1), dtype=int)
        c_res = rng.binomial(sizes[draw_pick], rates[draw_pick]) / sizes[draw_pick]
        dist = m_res - c_res.mean(axis=1)
    low, high = np.quantile(dist, [(1.0 - conf) / 2.0, (1.0 + conf) / 2.0])
    pvalue, p_equivalence = _bootstrap_p(dist, margin)
    return ExcessResult(value=method_rate - control_rate, low=float(low), high=float(high), method_rate=method_rate,
                        control_rate=control_rate, n=int(sum(mi.size for mi in m)), n_clusters=n_edits,
                        draws=int(min(len(ci) for ci in c)), confidence=conf, method="unpaired-bootstrap",
                        pvalue=pvalue, p_equivalence=p_equivalence, margin=float(margin))


# --------------------------------------------------------------------------- #
# Paired binary test
# --------------------------------------------------------------------------- #


def mcnemar_exact(a: Sequence[bool], b: Sequence[bool]) -> McNemarResult:
    """Exact (binomial) McNemar test for paired binary outcomes.

    ``a[i]`` and ``b[i]`` are the outcomes (e.g. "edit succeeded on probe i")
    of two models or methods on the same probe.  Only discordant pairs carry
    information: ``n01`` (a false, b true) and ``n10`` (a true, b false).
    Under H0 each discordant pair is equally likely to go either way, so the
    two-sided p-value is ``min(1, 2 * binom.cdf(min(n01, n10), n01 + n10, 0.5))``.

    Args:
        a: Outcomes of the first model/method (bools, or 0/1 numbers).
        b: Outcomes of the second, same length and probe order as ``a``.

    Returns:
        :class:`McNemarResult`.  With no discordant pairs (including empty
        input) ``pvalue`` is ``1.0``.

    Raises:
        ValueError: Lengths differ (message names both lengths), or an input
            is not 1-D or contains values other than booleans / 0 / 1.
    """
    aa = _as_bools(a, "a")
    bb = _as_bools(b, "b")
    if aa.size != bb.size:
        raise ValueError(f"a and b must have the same length, got len(a)={aa.size}, len(b)={bb.size}")
    n01 = int(np.count_nonzero(~aa & bb))
    n10 = int(np.count_nonzero(aa & ~bb))
    stat = min(n01, n10)
    if n01 + n10 == 0:
        pvalue = 1.0
    else:
        table = [[int(np.count_nonzero(aa & bb)), n10], [n01, int(np.count_nonzero(~aa & ~bb))]]
        pvalue = min(1.0, float(_sm_mcnemar(table, exact=True).pvalue))
    return McNemarResult(n=int(aa.size), n01=n01, n10=n10, statistic=stat, pvalue=pvalue)


# --------------------------------------------------------------------------- #
# Stratified and equivalence tests
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class StratifiedResult(_Fields):
    """Outcome of :func:`cmh_paired`.

    Attributes:
        n: paired observations (probes) over all strata.
        n_strata: strata (edits) with observations.
        diff: mean of ``b - a`` (fraction).
        statistic: the Cochran-Mantel-Haenszel chi-square (continuity-corrected).
        pvalue: its two-sided p-value in ``[0, 1]``.
    """

    n: int
    n_strata: int
    diff: float
    statistic: float
    pvalue: float


def cmh_paired(a: Sequence[bool], b: Sequence[bool], strata: Sequence[Any]) -> StratifiedResult:
    """Two methods' binary outcomes on the same probes, compared within each stratum (an edit) and
    combined across strata by the Cochran-Mantel-Haenszel test of a common odds ratio of 1.

    Each stratum contributes the 2x2 table (method a, method b) x (true, false) of its probes, so
    a probe set that is large for one edit does not stand in for many edits, and no edit's probes
    are pooled with another's. Strata where every outcome is the same carry no information.

    Raises:
        ValueError: lengths differ, or a value is not boolean / 0 / 1.
    """
    aa, bb = _as_bools(a, "a"), _as_bools(b, "b")
    if aa.size != bb.size:
        raise ValueError(f"a and b must have the same length, got len(a)={aa.size}, len(b)={bb.size}")
    codes, k = _cluster_codes(strata, aa.size, "strata")
    tables = []
    for s in range(k):
        m = codes == s
        ya, yb = int(aa[m].sum()), int(bb[m].sum())
        n = int(m.sum())
        if 0 < ya + yb < 2 * n:
            tables.append(np.array([[ya, n - ya], [yb, n - yb]], dtype=float))
    diff = float(bb.mean() - aa.mean()) if aa.size else math.nan
    if not tables:
        return StratifiedResult(int(aa.size), k, diff, 0.0, 1.0)
    res = StratifiedTable(tables).test_null_odds(correction=True)
    p = float(res.pvalue)
    return StratifiedResult(int(aa.size), k, diff, float(res.statistic), 1.0 if math.isnan(p) else min(p, 1.0))


@dataclass(frozen=True)
class EquivalenceResult(_Fields):
    """Outcome of :func:`tost`.

    Attributes:
        diff: the mean difference (over clusters' means when clustered).
        low, high: its ``1 - 2 * alpha`` interval (90% for alpha 0.05): inside ``[-margin, margin]``
            exactly when the equivalence test rejects.
        margin: the equivalence margin (same units as ``diff``).
        p_equivalence: the TOST p-value (the larger of the two one-sided p-values).
        p_difference: the two-sided t-test p-value of ``diff == 0``.
        n: observations (clusters when clustered).
        method: ``"tost-t"`` (over observations) or ``"tost-t-clusters"``.
    """

    diff: float
    low: float
    high: float
    margin: float
    p_equivalence: float
    p_difference: float
    n: int
    method: str


def tost(diffs: Sequence[float], margin: float = 0.02, *, clusters: Sequence[Any] | None = None,
         alpha: float = 0.05) -> EquivalenceResult:
    """Two one-sided t-tests of ``|mean(diffs)| < margin`` (statsmodels ``ttost_mean``), with the
    two-sided test of ``mean(diffs) == 0`` beside it. With ``clusters`` (e.g. the edit of each probe)
    the test runs over the clusters' mean differences, each cluster weighted equally: the claim is
    then about edits, not about these probes.

    Raises:
        ValueError: ``margin <= 0`` (names the margin and the fix), ``alpha`` outside (0, 1),
            non-finite values, or clusters of another length.
    """
    _check_margin(margin)
    _check_alpha(alpha)
    x = _as_float_array(diffs, "diffs", allow_empty=False)
    method = "tost-t"
    if clusters is not None:
        codes, k = _cluster_codes(clusters, x.size, "clusters")
        x = np.bincount(codes, weights=x, minlength=k) / np.bincount(codes, minlength=k)
        method = "tost-t-clusters"
    mean, n = float(x.mean()), int(x.size)
    if n < 2 or float(np.var(x)) == 0.0:  # no spread to test against: the observed difference is all there is
        inside = abs(mean) < margin
        return EquivalenceResult(mean, mean, mean, float(margin), 0.0 if inside and n >= 2 else 1.0,
                                 1.0 if mean == 0 or n < 2 else 0.0, n, method)
    d = DescrStatsW(x)
    p_eq = float(d.ttost_mean(-margin, margin)[0])
    p_diff = float(d.ttest_mean(0.0)[1])
    low, high = (float(v) for v in d.tconfint_mean(alpha=2 * alpha))
    return EquivalenceResult(mean, low, high, float(margin), p_eq, p_diff, n, method)


def verdict(p_difference: float, p_equivalence: float, alpha: float = 0.05) -> str:
    """``"equivalent"`` (the difference is inside the margin), ``"different"`` (the difference is
    not zero and not shown to be inside the margin), ``"different, within margin"`` (both), or
    ``"inconclusive"`` (neither: too few observations to say "no effect" or "an effect")."""
    _check_alpha(alpha)
    diff, eq = p_difference < alpha, p_equivalence < alpha
    if eq:
        return "different, within margin" if diff else "equivalent"
    return "different" if diff else "inconclusive"


# --------------------------------------------------------------------------- #
# Multiple comparisons
# --------------------------------------------------------------------------- #


def holm(pvalues: Sequence[float], alpha: float = 0.05) -> list[float]:
    """Holm step-down adjusted p-values (family-wise error control).

    With ``m`` p-values sorted ascending, ``p_(1) <= ... <= p_(m)``, the
    adjusted value of ``p_(i)`` is ``max_{j <= i} min(1, (m - j + 1) * p_(j))``.
    Reject hypothesis ``i`` at level ``alpha`` iff ``adjusted[i] <= alpha``
    (see :func:`reject`).

    Args:
        pvalues: Raw p-values, each in ``[0, 1]``.
        alpha: Family-wise significance level in ``(0, 1)``.  Only validated:
            adjusted p-values do not depend on it (kept so call sites can pass
            the level they will later use with :func:`reject`).

    Returns:
        Adjusted p-values in the input order, each in ``[0, 1]``, monotone in
        the raw p-values.  Empty input gives an empty list.

    Raises:
        ValueError: A p-value outside ``[0, 1]`` or ``nan`` (message names the
            index), or ``alpha`` outside ``(0, 1)``.
    """
    _check_alpha(alpha)
    p = _check_pvalues(pvalues)
    m = p.size
    if m == 0:
        return []
    return [float(v) for v in multipletests(p, method="holm")[1]]


def bonferroni(pvalues: Sequence[float]) -> list[float]:
    """Bonferroni adjusted p-values: ``min(1, m * p)`` for ``m`` p-values.

    Args:
        pvalues: Raw p-values, each in ``[0, 1]``.

    Returns:
        Adjusted p-values in the input order, each in ``[0, 1]``.

    Raises:
        ValueError: A p-value outside ``[0, 1]`` or ``nan`` (message names the
            index).
    """
    p = _check_pvalues(pvalues)
    return [float(v) for v in np.minimum(p * p.size, 1.0)]


def reject(adjusted: Sequence[float], alpha: float = 0.05) -> list[bool]:
    """Which hypotheses to reject given *adjusted* p-values.

    Args:
        adjusted: Adjusted p-values (e.g. from :func:`holm`), each in ``[0, 1]``.
        alpha: Family-wise significance level in ``(0, 1)``.

    Returns:
        ``adjusted[i] <= alpha`` for each ``i``, in input order.

    Raises:
        ValueError: A value outside ``[0, 1]`` (message names ``adjusted`` and
            the index) or ``alpha`` outside ``(0, 1)``.
    """
    a = _check_alpha(alpha)
    p = _check_pvalues(adjusted, "adjusted")
    return [bool(v) for v in p <= a]
