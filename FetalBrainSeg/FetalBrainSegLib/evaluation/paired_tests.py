"""Paired tests of per-slice scores (RFBSNet against each comparison network), numpy only.

- Paired t-test: t = mean(d) / (sd(d) / sqrt(n)), two-sided p from Student's t with n - 1
  degrees of freedom, through the regularized incomplete beta function.
- Wilcoxon signed-rank: zero differences dropped, average ranks for ties; the exact null
  distribution for up to 25 untied differences, else the normal approximation with the tie
  correction and a continuity correction. Two-sided p.
- Bootstrap confidence interval of a mean: percentiles of the means of resamples (with
  replacement) of the per-slice scores, seeded so a table is reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

EXACT_WILCOXON_MAX_N = 25


@dataclass(frozen=True)
class TestResult:
    statistic: float
    p_value: float
    n: int


def _incomplete_beta(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b), by Lentz's continued fraction."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast on this side only
        return 1.0 - _incomplete_beta(b, a, 1.0 - x)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)) / a
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 500):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < 1e-14:
            break
    return front * result


def student_t_two_sided(t: float, dof: float) -> float:
    return _incomplete_beta(dof / 2, 0.5, dof / (dof + t * t))


def paired_t_test(a, b) -> TestResult:
    d = np.asarray(a, float) - np.asarray(b, float)
    n = len(d)
    if n < 2:
        raise ValueError("a paired t-test needs at least two pairs")
    sd = d.std(ddof=1)
    if sd == 0:
        return TestResult(0.0 if d.mean() == 0 else math.copysign(math.inf, d.mean()), 1.0 if d.mean() == 0 else 0.0, n)
    t = d.mean() / (sd / math.sqrt(n))
    return TestResult(float(t), float(student_t_two_sided(t, n - 1)), n)


def _ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    start = 0
    for end in range(1, len(values) + 1):
        if end == len(values) or sorted_values[end] != sorted_values[start]:
            ranks[order[start:end]] = (start + end + 1) / 2
            start = end
    return ranks


def _exact_signed_rank_counts(n: int) -> np.ndarray:
    """How many of the 2^n sign patterns give each rank sum 0..n(n+1)/2."""
    counts = np.zeros(n * (n + 1) // 2 + 1)
    counts[0] = 1
    for rank in range(1, n + 1):
        counts[rank:] = counts[rank:] + counts[:-rank].copy()
    return counts


def wilcoxon_signed_rank(a, b) -> TestResult:
    d = np.asarray(a, float) - np.asarray(b, float)
    d = d[d != 0]
    n = len(d)
    if n == 0:
        return TestResult(0.0, 1.0, 0)
    ranks = _ranks(np.abs(d))
    w_plus = ranks[d > 0].sum()
    statistic = min(w_plus, n * (n + 1) / 2 - w_plus)
    tied = len(np.unique(np.abs(d))) < n
    if n <= EXACT_WILCOXON_MAX_N and not tied:
        counts = _exact_signed_rank_counts(n)
        p = 2 * counts[: int(statistic) + 1].sum() / 2**n
        return TestResult(float(statistic), float(min(1.0, p)), n)
    mean = n * (n + 1) / 4
    _, tie_sizes = np.unique(ranks, return_counts=True)
    variance = n * (n + 1) * (2 * n + 1) / 24 - (tie_sizes**3 - tie_sizes).sum() / 48
    z = (abs(w_plus - mean) - 0.5) / math.sqrt(variance)
    return TestResult(float(statistic), float(min(1.0, math.erfc(max(z, 0.0) / math.sqrt(2)))), n)


def bootstrap_interval(values, level: float = 0.95, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (e.g. per-slice Dice)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)
