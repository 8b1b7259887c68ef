"""The "follows its group" figure (synthaug.metrics.group_following) on crafted features: samples at their group
score a positive margin, samples at another group a negative one, and the arithmetic by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from synthaug.metrics.group_following import group_distances, group_following


def _groups(rng, n_groups=6, dims=4):
    centres = rng.normal(scale=10.0, size=(n_groups, dims))
    real = [c + rng.normal(size=(5, dims)) for c in centres]
    near = [c + rng.normal(size=(8, dims)) for c in centres]
    class_mean = np.full(dims, centres.mean())
    far = [class_mean + rng.normal(size=(8, dims)) for _ in centres]  # the class's prototype, not the group
    return real, near, far


def test_samples_at_their_group_follow_it_and_the_class_prototype_does_not():
    real, near, far = _groups(np.random.default_rng(0))
    follows = group_following(real, near, far)
    assert follows["share"] == 1.0 and follows["margin"] > 0.5 and follows["margin_ci95"] < follows["margin"]
    assert follows["distance_own"] < follows["distance_class"] and follows["groups"] == 6
    swapped = group_following(real, far, near)  # learned vectors that land on the prototype: no better
    assert swapped["share"] == 0.0 and swapped["margin"] < 0


def test_group_following_by_hand():
    real = [np.array([[0.0, 0.0], [2.0, 0.0]])]  # centroid (1, 0)
    own = [np.array([[1.0, 1.0], [1.0, -1.0]])]  # distance 1 each
    cls = [np.array([[1.0, 4.0], [5.0, 0.0]])]  # distances 4 and 4
    assert group_distances(real[0], own[0]) == 1.0
    f = group_following(real, own, cls)
    assert f["margin"] == pytest.approx(0.75) and math.isnan(f["margin_ci95"])  # one group: no interval
    assert (f["distance_own"], f["distance_class"], f["share"]) == (1.0, 4.0, 1.0)
    with pytest.raises(ValueError, match="same positive number of groups"):
        group_following(real, own, [])
