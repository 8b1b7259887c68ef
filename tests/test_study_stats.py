"""The study's statistics against hand computations: t-intervals, paired gains, sample efficiency, Spearman."""

from __future__ import annotations

import math

import numpy as np
import pytest

from synthaug.study.study_stats import (bonferroni_level, mean_ci, paired_gain, real_images_equivalent, significant,
                                  spearman, welch_difference)

T_975_DF2 = 4.302652729911275  # Student t, 97.5% quantile, 2 degrees of freedom (tables)
T_975_DF1 = 12.706204736174705


def test_mean_ci_known_values():
    m, h = mean_ci([1.0, 2.0, 3.0])  # sd 1
    assert m == 2.0 and h == pytest.approx(T_975_DF2 / math.sqrt(3), rel=1e-9)
    m, h = mean_ci([0.5, 0.7])  # sd = 0.1 * sqrt(2)
    assert m == pytest.approx(0.6) and h == pytest.approx(T_975_DF1 * 0.1 * math.sqrt(2) / math.sqrt(2), rel=1e-9)
    m, h = mean_ci([0.9])
    assert m == 0.9 and math.isnan(h)
    assert mean_ci([0.4, 0.4, 0.4]) == (pytest.approx(0.4), pytest.approx(0.0, abs=1e-12))


def test_paired_gain_uses_only_shared_seeds():
    arm = {0: 0.85, 1: 0.83, 2: 0.88, 3: 0.99}  # seed 3 has no baseline: not paired
    base = {0: 0.80, 1: 0.82, 2: 0.84}
    mean, ci, n = paired_gain(arm, base)
    # differences 0.05, 0.01, 0.04: mean 0.1/3, sd sqrt(((0.05-m)^2 + (0.01-m)^2 + (0.04-m)^2) / 2)
    m = 0.1 / 3
    sd = math.sqrt(((0.05 - m) ** 2 + (0.01 - m) ** 2 + (0.04 - m) ** 2) / 2)
    assert n == 3 and mean == pytest.approx(m) and ci == pytest.approx(T_975_DF2 * sd / math.sqrt(3))
    assert paired_gain({5: 0.1}, base) is None


def test_welch_difference_agrees_with_scipys_welch_test():

    from scipy import stats
    a, b = [0.51, 0.47, 0.49, 0.53, 0.50], [0.46, 0.47, 0.45, 0.48, 0.44, 0.47, 0.46]
    ma, sa, mb, sb = np.mean(a), np.std(a, ddof=1), np.mean(b), np.std(b, ddof=1)
    diff, half = welch_difference(ma, sa, len(a), mb, sb, len(b))
    assert diff == pytest.approx(ma - mb)
    # the interval's edge is where Welch's test of "difference = edge" sits exactly at p = 0.05
    for edge in (diff - half, diff + half):
        p = stats.ttest_ind(np.array(a) - edge, b, equal_var=False).pvalue
        assert p == pytest.approx(0.05, rel=1e-6)
    # equal sizes and sds: df = 2n - 2, the pooled interval
    diff, half = welch_difference(1.0, 0.2, 5, 0.5, 0.2, 5)
    assert half == pytest.approx(stats.t.ppf(0.975, 8) * 0.2 * math.sqrt(2 / 5))
    assert welch_difference(0.3, 0.0, 5, 0.1, 0.0, 5) == (pytest.approx(0.2), 0.0)


def test_significance_needs_an_interval_excluding_zero():
    assert significant(0.02, 0.01) and significant(-0.02, 0.01)
    assert not significant(0.01, 0.02) and not significant(0.05, math.nan)


def test_real_images_equivalent_interpolates_on_log_count():
    counts, accs = [100, 1000, 10000], [0.60, 0.70, 0.90]
    # 0.65 is halfway from 0.60 to 0.70: halfway between log 100 and log 1000 -> 10^2.5
    n, status = real_images_equivalent(counts, accs, 0.65)
    assert status == "interpolated" and n == pytest.approx(10 ** 2.5)
    # 0.85 is 3/4 of the way from 0.70 to 0.90: 10^(3 + 0.75)
    assert real_images_equivalent(counts, accs, 0.85)[0] == pytest.approx(10 ** 3.75)
    assert real_images_equivalent(counts, accs, 0.70) == (pytest.approx(1000), "interpolated")
    assert real_images_equivalent(counts, accs, 0.60) == (pytest.approx(100), "interpolated")
    assert real_images_equivalent(counts, accs, 0.95) == (None, "above")
    assert real_images_equivalent(counts, accs, 0.50) == (None, "below")
    # unsorted input, and a curve with a dip: the first segment that reaches the target counts
    assert real_images_equivalent([1000, 100, 10000], [0.70, 0.60, 0.90], 0.65)[0] == pytest.approx(10 ** 2.5)
    assert real_images_equivalent([10, 100, 1000], [0.5, 0.7, 0.6], 0.6)[0] == pytest.approx(10 ** 1.5)


def test_spearman_against_hand_ranks():
    rho, p, n = spearman([1.0, 2.0, 3.0, 4.0], [10.0, 30.0, 20.0, 40.0])
    # ranks (1,2,3,4) vs (1,3,2,4): d^2 = 0+1+1+0 = 2; rho = 1 - 6*2 / (4*15) = 0.8
    assert n == 4 and rho == pytest.approx(0.8) and 0 < p < 1
    assert spearman([1.0, 2.0, 3.0], [3.0, 2.0, 1.0])[0] == pytest.approx(-1.0)
    assert math.isnan(spearman([1.0, 2.0], [1.0, 2.0])[0])


def test_spearman_p_is_exact_for_few_pairs():
    # 4 pairs in the same order: 1 of the 24 pairings reaches rho = 1 (and 1 reaches -1): two-sided p = 2/24
    rho, p, _ = spearman([1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 9.0])
    assert rho == pytest.approx(1.0) and p == pytest.approx(2 / 24)
    # rho 0.8 over 4 pairs: pairings with |rho| >= 0.8 are 4 of 24 (rho 1, two of 0.8; and -1, two of -0.8 ...)
    _, p, _ = spearman([1.0, 2.0, 3.0, 4.0], [10.0, 30.0, 20.0, 40.0])
    assert p == pytest.approx(8 / 24)


def test_interval_at_another_level_and_the_bonferroni_level():
    mean, half = mean_ci([1.0, 2.0, 3.0], level=0.99)  # sd 1, n 3: t(0.995, 2) = 9.924843
    assert mean == 2.0 and half == pytest.approx(9.924843 / 3 ** 0.5, rel=1e-6)
    assert bonferroni_level(16) == pytest.approx(0.996875) and bonferroni_level(1) == pytest.approx(0.95)
    gain = paired_gain({0: 0.5, 1: 0.7, 2: 0.6}, {0: 0.4, 1: 0.5, 2: 0.6}, level=0.99)  # diffs .1 .2 0
    assert gain[0] == pytest.approx(0.1) and gain[1] == pytest.approx(9.924843 * 0.1 / 3 ** 0.5, rel=1e-6)


def test_detectable_gain_matches_the_known_power_of_a_paired_t_test():
    from synthaug.study.study_stats import detectable_gain, seeds_for_halfwidth

    # G*Power: a two-sided one-sample (paired) t-test, alpha 0.05, power 0.8, n = 10 needs effect size d = 0.996
    assert detectable_gain(1.0, 10, 0.95) == pytest.approx(0.996, abs=2e-3)
    # many pairs: the normal approximation (z_0.975 + z_0.8) * sd / sqrt(n)
    assert detectable_gain(2.0, 2000, 0.95) == pytest.approx((1.959964 + 0.841621) * 2.0 / 2000 ** 0.5, rel=2e-3)
    assert detectable_gain(1.0, 3, 0.99) > detectable_gain(1.0, 3, 0.95) > detectable_gain(1.0, 10, 0.95)
    assert math.isnan(detectable_gain(1.0, 1, 0.95)) and detectable_gain(0.0, 3, 0.95) == 0.0
    # t(0.975, n-1) * 1 / sqrt(n) <= 0.5 first at n = 18 (2.110 / 4.243 = 0.497; n = 17: 2.120 / 4.123 = 0.514)
    assert seeds_for_halfwidth(1.0, 0.5) == 18 and seeds_for_halfwidth(math.nan, 0.5) is None
