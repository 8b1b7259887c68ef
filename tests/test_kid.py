"""KID: the unbiased MMD² against a direct double loop, and its behaviour on equal and shifted sets."""

from __future__ import annotations

import numpy as np
import pytest

from synthaug.metrics.kid import kernel_inception_distance, mmd2_unbiased


def _direct(x: np.ndarray, y: np.ndarray) -> float:
    k = lambda a, b: (float(a @ b) / len(a) + 1.0) ** 3  # noqa: E731
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_mmd2_matches_the_double_loop_definition():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(5, 3)), rng.normal(0.5, 1.0, size=(4, 3))
    assert mmd2_unbiased(x, y) == pytest.approx(_direct(x, y), rel=1e-12)


def test_kid_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(400, 16)), rng.normal(size=(400, 16))
    same, spread = kernel_inception_distance(a, b, subsets=20, subset_size=200)
    shifted, _ = kernel_inception_distance(a, b + 0.5, subsets=20, subset_size=200)
    assert abs(same) < 3 * spread + 1e-3 and spread > 0
    assert shifted > 10 * abs(same) and shifted > 0


def test_subset_size_is_capped_by_the_smaller_set_and_bad_shapes_are_refused():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(30, 4)), rng.normal(size=(10, 4))
    mean, std = kernel_inception_distance(x, y, subsets=5, subset_size=1000, seed=3)
    assert np.isfinite(mean) and std >= 0
    with pytest.raises(ValueError, match="one d"):
        kernel_inception_distance(x, rng.normal(size=(10, 5)))
    with pytest.raises(ValueError, match="at least 2"):
        mmd2_unbiased(x[:1], y)
