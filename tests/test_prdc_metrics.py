"""Precision / recall / density / coverage (the `prdc` package) and the per-class KID / FID of `analyse`."""

from __future__ import annotations

import math

import numpy as np
import pytest

from synthaug.metrics.per_class import class_scores, fid_skip_reason, per_class_scores, summarise_classes
from synthaug.metrics.prdc_metrics import precision_recall_density_coverage


def _cloud(n: int, d: int = 8, shift: float = 0.0, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)) + shift


def test_a_set_against_itself_scores_one_everywhere():
    x = _cloud(60)
    assert precision_recall_density_coverage(x, x, nearest_k=5) == pytest.approx(
        {"precision": 1.0, "recall": 1.0, "density": 1.0, "coverage": 1.0})


def test_a_disjoint_far_set_scores_zero_everywhere():
    s = precision_recall_density_coverage(_cloud(60), _cloud(60, shift=100.0, seed=1), nearest_k=5)
    assert s == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_collapsed_samples_keep_precision_but_lose_recall_and_coverage():
    real = _cloud(200, d=2)
    collapsed = np.repeat(real[:1], 50, axis=0) + 1e-3 * _cloud(50, d=2, seed=2)  # one real point, 50 times
    s = precision_recall_density_coverage(real, collapsed, nearest_k=5)
    assert s["precision"] == 1.0 and s["recall"] < 0.1 and s["coverage"] < 0.1
    assert s["density"] > 0  # crowded into one ball


def test_two_draws_of_one_distribution_score_high_and_density_near_one():
    s = precision_recall_density_coverage(_cloud(400, d=4), _cloud(400, d=4, seed=3), nearest_k=5)
    assert min(s["precision"], s["recall"], s["coverage"]) > 0.8 and 0.7 < s["density"] < 1.3


@pytest.mark.parametrize("real, fake, match", [
    (np.zeros((6, 4)), np.zeros((20, 4)), "needs at least 7 features per set, got 6 real"),
    (np.zeros((20, 4)), np.zeros((20, 3)), "of one d"),
])
def test_bad_feature_sets_are_one_line_errors(real, fake, match):
    with pytest.raises(ValueError, match=match):
        precision_recall_density_coverage(real, fake, nearest_k=5)


def test_per_class_fid_is_only_computed_above_the_feature_dims():
    assert fid_skip_reason(250, 250, 2048) == "not computed: 250 images <= 2048 feature dims (singular covariance)"
    assert fid_skip_reason(20, 300, 64).startswith("not computed: 20 images <= 64")
    assert fid_skip_reason(65, 70, 64) == ""
    small = class_scores(_cloud(30, d=32), _cloud(30, d=32, seed=1), 5, 3, 10, 0)
    assert math.isnan(small["fid"]) and "singular covariance" in small["fid_note"]
    assert math.isfinite(small["kid"]) and small["kid_std"] >= 0
    large = class_scores(_cloud(40, d=4), _cloud(40, d=4, seed=1), 5, 3, 10, 0)
    assert math.isfinite(large["fid"]) and large["fid"] >= 0 and large["fid_note"] == ""


def test_per_class_kid_finds_the_one_bad_class():
    ref_labels = labels = np.repeat(np.arange(3), 40)
    ref = _cloud(120, d=4)
    fake = _cloud(120, d=4, seed=1)
    fake[labels == 2] += 5.0  # class 2 is off
    rows = per_class_scores(fake, labels, ref, ref_labels, nearest_k=5, kid_subsets=5, kid_subset_size=30, seed=0)
    assert [r["class"] for r in rows] == [0, 1, 2]
    kid = [r["kid"] for r in rows]
    assert kid[2] > 10 * max(abs(kid[0]), abs(kid[1]))
    assert rows[2]["precision"] < 0.2 and rows[0]["precision"] > 0.6
    summary = summarise_classes(rows)
    assert summary["kid_class_max"] == kid[2] and summary["fid_class_computed"] == 3
    assert summary["fid_class_mean"] == pytest.approx(np.mean([r["fid"] for r in rows]))


def test_a_class_the_source_lacks_scores_nan_and_drops_the_fid_mean():
    ref_labels = np.repeat(np.arange(2), 30)
    rows = per_class_scores(_cloud(30, d=4), np.zeros(30, np.int64), _cloud(60, d=4, seed=1), ref_labels, 5, 3, 10, 0)
    assert rows[1]["images"] == 0 and math.isnan(rows[1]["kid"]) and math.isnan(rows[1]["precision"])
    summary = summarise_classes(rows)
    assert summary["fid_class_computed"] == 1 and "fid_class_mean" not in summary  # a mean of some classes only
    assert summary["kid_class_mean"] == rows[0]["kid"]
