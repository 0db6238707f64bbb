"""Statistics for reporting edit results honestly.

Every rate an editscope report prints (edit success, locality, generalisation,
...) is a proportion or a mean over a finite probe set, and every comparison
between two editing methods is a paired comparison on the *same* probes.  This
module holds the small, dependency-light (numpy + scipy) tools used for that:

* :func:`wilson_interval` -- confidence interval for a binomial proportion.
* :func:`mean_interval` -- Student-t confidence interval for a mean.
* :func:`bootstrap_interval` -- percentile bootstrap interval for one sample.
* :func:`mcnemar_exact` -- exact McNemar test for paired binary outcomes.
* :func:`paired_bootstrap` -- paired bootstrap interval and p-value for the
  difference of a statistic between two paired samples.
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

__all__ = [
    "BootstrapResult",
    "Interval",
    "McNemarResult",
    "bonferroni",
    "bootstrap_interval",
    "holm",
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


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval.

    Attributes:
        value: Point estimate, in the units of the data (a fraction in
            ``[0, 1]`` for proportions).  ``nan`` when undefined (e.g. no data).
        low: Lower bound of the interval, same units as ``value``.
        high: Upper bound of the interval, same units as ``value``.
        n: Number of observations (trials for a proportion) behind the estimate.
        confidence: Nominal two-sided coverage, a fraction in ``(0, 1)``.
        method: Short name of the method that produced the interval
            (``"wilson"``, ``"t"``, ``"bootstrap-percentile"``).
    """

    value: float
    low: float
    high: float
    n: int
    confidence: float
    method: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a plain ``dict`` (floats may be ``nan``)."""
        return asdict(self)


@dataclass(frozen=True)
class McNemarResult:
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

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a plain ``dict``."""
        return asdict(self)


@dataclass(frozen=True)
class BootstrapResult:
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

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a plain ``dict``."""
        return asdict(self)

    def interval(self) -> Interval:
        """The difference and its bounds as an :class:`Interval`."""
        return Interval(
            value=self.value,
            low=self.low,
            high=self.high,
            n=self.n,
            confidence=self.confidence,
            method="paired-bootstrap-percentile",
        )


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


def _as_bool_array(values: Sequence[bool], name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of booleans, got shape {arr.shape}")
    if arr.dtype == bool:
        return arr
    if arr.size == 0:
        return arr.astype(bool)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must contain booleans (or 0/1), got dtype {arr.dtype}")
    ok = (arr == 0) | (arr == 1)
    if not np.all(ok):
        bad = int(np.flatnonzero(~ok)[0])
        raise ValueError(f"{name} must contain booleans (or 0/1); {name}[{bad}] = {arr[bad]!r}")
    return arr.astype(bool)


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


def _check_alpha(alpha: float) -> float:
    a = float(alpha)
    if not (0.0 < a < 1.0):
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    return a


# --------------------------------------------------------------------------- #
# Intervals
# --------------------------------------------------------------------------- #


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
    k = _check_count(successes, "successes")
    m = _check_count(n, "n")
    c = _check_confidence(confidence)
    if k > m:
        raise ValueError(f"successes must be <= n, got successes={k}, n={m}")
    if m == 0:
        return Interval(value=math.nan, low=0.0, high=1.0, n=0, confidence=c, method="wilson")
    p = k / m
    z = float(_sps.norm.isf((1.0 - c) / 2.0))
    z2 = z * z
    denom = 1.0 + z2 / m
    center = (p + z2 / (2.0 * m)) / denom
    half = z * math.sqrt(p * (1.0 - p) / m + z2 / (4.0 * m * m)) / denom
    low = 0.0 if k == 0 else min(max(center - half, 0.0), 1.0)
    high = 1.0 if k == m else min(max(center + half, 0.0), 1.0)
    return Interval(value=p, low=low, high=high, n=m, confidence=c, method="wilson")


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
    aa = _as_bool_array(a, "a")
    bb = _as_bool_array(b, "b")
    if aa.size != bb.size:
        raise ValueError(f"a and b must have the same length, got len(a)={aa.size}, len(b)={bb.size}")
    n01 = int(np.count_nonzero(~aa & bb))
    n10 = int(np.count_nonzero(aa & ~bb))
    stat = min(n01, n10)
    discordant = n01 + n10
    if discordant == 0:
        pvalue = 1.0
    else:
        pvalue = min(1.0, 2.0 * float(_sps.binom.cdf(stat, discordant, 0.5)))
    return McNemarResult(n=int(aa.size), n01=n01, n10=n10, statistic=stat, pvalue=pvalue)


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
    order = np.argsort(p, kind="stable")
    scaled = (m - np.arange(m)) * p[order]
    adjusted_sorted = np.minimum(np.maximum.accumulate(scaled), 1.0)
    adjusted = np.empty(m, dtype=float)
    adjusted[order] = adjusted_sorted
    return [float(v) for v in adjusted]


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
