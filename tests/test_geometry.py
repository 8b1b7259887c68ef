"""Line-segment geometry (LSD orientation and length histograms) and its distances."""

from __future__ import annotations

import math

import numpy as np
import pytest

from synthaug.metrics.geometry import (circular_wasserstein1, detect_segments, gray, line_distances, line_statistics,
                                       total_variation)


def stripes(n: int, seed: int, angle: float = 0.4, size: int = 32) -> np.ndarray:
    """n gray images [n, size, size, 1] of sine stripes whose normal points at `angle` (jittered), random phase
    and period: their edges run at angle + pi/2."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    out = []
    for _ in range(n):
        th, phase, period = angle + rng.normal(0, 0.05), rng.uniform(0, 2 * np.pi), rng.uniform(6, 10)
        out.append(127.5 + 120 * np.sin(2 * np.pi * (x * np.cos(th) + y * np.sin(th)) / period + phase))
    return np.rint(np.array(out)).astype(np.uint8)[..., None]


def test_striped_images_are_told_apart_from_a_rotated_copy_but_not_from_another_draw():
    first, second = stripes(20, seed=0), stripes(20, seed=1)
    rotated = np.rot90(first, axes=(1, 2)).copy()
    a, b, r = (line_statistics(images) for images in (first, second, rotated))
    assert a.segments > 20 and a.images == 20
    same, turned = line_distances(b, a), line_distances(r, a)
    assert same["line_orientation_tv"] < 0.15 and same["line_orientation_w1"] < 0.05
    assert turned["line_orientation_tv"] > 0.9 and turned["line_orientation_w1"] > 1.3  # about pi/2
    assert turned["line_orientation_w1"] > 20 * same["line_orientation_w1"]
    # the stripes' edges run at 0.4 + pi/2: most of the length-weighted mass sits in that 15-degree bin
    assert np.argmax(a.orientation) == round((0.4 + np.pi / 2) / (np.pi / 12))


def test_a_square_gives_horizontal_and_vertical_segments():
    img = np.zeros((32, 32), np.uint8)
    img[8:24, 10:22] = 200
    segments = detect_segments(img)
    assert len(segments) == 4
    stats = line_statistics(img[None, ..., None], orientation_bins=4)
    assert stats.orientation[0] + stats.orientation[2] == pytest.approx(1.0)  # about 0 (or 180) and 90 degrees


def test_circular_wasserstein_wraps_around_and_reaches_pi_over_2():
    p, q, r = np.eye(12)[0], np.eye(12)[11], np.eye(12)[6]
    assert circular_wasserstein1(p, q) == pytest.approx(np.pi / 12)  # 0 and 165 degrees are one bin apart
    assert circular_wasserstein1(p, r) == pytest.approx(np.pi / 2)
    assert circular_wasserstein1(p, p) == 0.0
    assert total_variation(p, q) == 1.0 and total_variation(p, p) == 0.0


def test_images_without_segments_give_nan_distances():
    flat = np.full((3, 32, 32, 1), 128, np.uint8)
    stats = line_statistics(flat)
    assert stats.segments == 0 and stats.per_image == 0.0 and not stats.orientation.any()
    assert all(math.isnan(v) for v in line_distances(stats, line_statistics(stripes(3, 0))).values())


def test_gray_accepts_rgb_and_refuses_other_arrays():
    rgb = np.zeros((2, 8, 8, 3), np.uint8)
    rgb[..., 1] = 255
    assert gray(rgb).shape == (2, 8, 8) and gray(rgb)[0, 0, 0] == 150  # 0.587 * 255
    with pytest.raises(ValueError, match="uint8 images"):
        gray(np.zeros((2, 8, 8), np.float32))


def _segments_towards(point: tuple[float, float], n: int, rng) -> np.ndarray:
    """n segments whose lines pass through `point` (2 to 8 % of their length off it, by noise), across a 256 image."""
    starts = rng.uniform(0, 256, (n, 2))
    towards = np.asarray(point) - starts
    ends = starts + towards * rng.uniform(0.2, 0.5, (n, 1))
    return np.hstack([starts, ends]) + rng.normal(0, 0.05, (n, 4))


def test_the_vanishing_point_estimator_recovers_a_known_point_despite_clutter():
    from synthaug.metrics.vanishing import estimate_vanishing_point

    rng = np.random.default_rng(0)
    clutter = rng.uniform(0, 256, (15, 4))
    segments = np.vstack([_segments_towards((300.0, -80.0), 30, rng), clutter])
    vp = estimate_vanishing_point(segments, seed=1)
    assert vp is not None
    assert abs(vp.x - 300.0) < 2.0 and abs(vp.y + 80.0) < 2.0, vp
    assert vp.residual < 3.0 and 0.5 < vp.support < 0.8  # a clutter line may pass within the 2-degree tolerance
    clean = estimate_vanishing_point(_segments_towards((300.0, -80.0), 30, rng), seed=1)
    assert abs(clean.x - 300.0) < 0.5 and abs(clean.y + 80.0) < 0.5 and clean.residual < 0.2 and clean.support == 1.0


def test_parallel_or_too_few_segments_have_no_vanishing_point():
    from synthaug.metrics.vanishing import estimate_vanishing_point

    parallel = np.array([[0, y, 100, y] for y in range(0, 100, 10)], np.float64)
    assert estimate_vanishing_point(parallel) is None
    assert estimate_vanishing_point(parallel[:2]) is None
