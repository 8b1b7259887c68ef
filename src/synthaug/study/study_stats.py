"""The study's statistics: intervals over seeds, paired gains, sample efficiency and rank correlation.

Pure functions of numbers, so each can be checked against a hand computation (tests/test_study_stats.py).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as st
from scipy.optimize import brentq


def mean_ci(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of the Student-t confidence interval at `level` (nan for a single value)."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()), math.nan
    return float(v.mean()), t_halfwidth(float(v.std(ddof=1)), len(v), level)


def t_halfwidth(sd: float, n: int, level: float = 0.95) -> float:
    """Half-width of the Student-t interval at `level` of a mean of `n` values of sample sd `sd`."""
    return float(st.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n))


def welch_difference(mean_a: float, sd_a: float, n_a: int, mean_b: float, sd_b: float, n_b: int,
                     level: float = 0.95) -> tuple[float, float]:
    """Difference of two means (a - b) of independent samples and its Welch t half-width at `level`."""
    va, vb = sd_a ** 2 / n_a, sd_b ** 2 / n_b
    se = math.sqrt(va + vb)
    if se == 0:
        return mean_a - mean_b, 0.0
    df = (va + vb) ** 2 / (va ** 2 / (n_a - 1) + vb ** 2 / (n_b - 1))
    return mean_a - mean_b, float(st.t.ppf(0.5 + level / 2, df) * se)


def paired_gain(arm: dict[int, float], base: dict[int, float],
                level: float = 0.95) -> tuple[float, float, int] | None:
    """Mean and t half-width (at `level`) of (arm - base) over the seeds both have, and how many; None if none."""
    shared = sorted(set(arm) & set(base))
    if not shared:
        return None
    mean, ci = mean_ci([arm[s] - base[s] for s in shared], level)
    return mean, ci, len(shared)


def bonferroni_level(comparisons: int, level: float = 0.95) -> float:
    """The interval level that keeps the chance of any false "significant" among `comparisons` at 1 - level."""
    return 1 - (1 - level) / max(1, comparisons)


def significant(mean: float, ci: float) -> bool:
    """A gain or loss is called significant only when its 95% interval excludes 0 (needs >= 2 seeds)."""
    return math.isfinite(ci) and abs(mean) > ci


def real_images_equivalent(counts: list[int], accuracies: list[float], target: float) -> tuple[float | None, str]:
    """How many real images the real-only curve needs to reach `target` accuracy.

    The curve is interpolated linearly in log(image count) between measured points, taking the first
    segment that reaches the target. Returns (images, "interpolated"), or (None, "above") when the target
    exceeds every measured accuracy, or (None, "below") when it is under the smallest measured point.
    """
    if len(counts) != len(accuracies) or not counts:
        raise ValueError("need one accuracy per image count, and at least one point")
    order = np.argsort(counts)
    n = np.asarray(counts, dtype=float)[order]
    a = np.asarray(accuracies, dtype=float)[order]
    if target > a.max():
        return None, "above"
    if target < a[0]:
        return None, "below"
    if target == a[0]:
        return float(n[0]), "interpolated"
    for i in range(len(n) - 1):
        lo, hi = a[i], a[i + 1]
        if lo < target <= hi:
            t = (target - lo) / (hi - lo)
            return float(math.exp(math.log(n[i]) + t * (math.log(n[i + 1]) - math.log(n[i])))), "interpolated"
    # reached only at a point after a dip (e.g. an exact tie with a later, lower-to-higher segment's start)
    return float(n[int(np.flatnonzero(a >= target)[0])]), "interpolated"


EXACT_UP_TO = 8  # pairs: up to 8! = 40,320 pairings, the p-value comes from all of them


def spearman(x: list[float], y: list[float]) -> tuple[float, float, int]:
    """Spearman rank correlation, its two-sided p-value and n (nan with fewer than 3 pairs or no spread).

    The study has a handful of sources, where the t approximation is far off (4 perfectly ranked pairs get
    p = 0): up to EXACT_UP_TO pairs the p-value is the exact permutation one over every pairing."""
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return math.nan, math.nan, len(x)
    rho = float(st.spearmanr(x, y).statistic)
    if len(x) > EXACT_UP_TO:
        return rho, float(st.spearmanr(x, y).pvalue), len(x)
    # One sample, permuted against fixed x: exactly n! orderings, all of them enumerated.
    res = st.permutation_test((y,), lambda b: st.spearmanr(x, b).statistic, permutation_type="pairings",
                              n_resamples=math.factorial(len(x)), alternative="two-sided")
    return rho, float(res.pvalue), len(x)


def detectable_gain(sd: float, n: int, level: float, power: float = 0.8) -> float:
    """The smallest true mean paired difference that a two-sided paired t-test with intervals at `level` (e.g. the
    Bonferroni-corrected one) detects with probability `power`, for n pairs whose differences spread with standard
    deviation sd: from the noncentral t distribution. nan for n < 2 or an unknown spread."""
    if n < 2 or not math.isfinite(sd):
        return math.nan
    if sd == 0:
        return 0.0
    df = n - 1
    crit = st.t.ppf(0.5 + level / 2, df)

    def detected(delta: float) -> float:  # the chance that |T| > crit when the true difference is delta
        ncp = delta * math.sqrt(n) / sd
        p = float(st.nct.sf(crit, df, ncp) + st.nct.cdf(-crit, df, ncp))
        # scipy's noncentral t gives nan far in its tails at many degrees of freedom, where it is normal anyway
        return p if math.isfinite(p) else float(st.norm.sf(crit - ncp) + st.norm.cdf(-crit - ncp))

    high = sd
    while detected(high) < power:
        high *= 2
    return float(brentq(lambda d: detected(d) - power, 0.0, high))


def seeds_for_halfwidth(sd: float, halfwidth: float, level: float = 0.95, limit: int = 100_000) -> int | None:
    """How many seeds make the t-interval of a mean (or paired gain) at most +-halfwidth, if its values spread with
    standard deviation sd as measured; None beyond `limit` or for an unknown spread."""
    if not math.isfinite(sd):
        return None
    n = 2
    while st.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n) > halfwidth:
        n += 1
        if n > limit:
            return None
    return n
