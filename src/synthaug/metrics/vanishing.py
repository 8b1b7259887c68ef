"""A vanishing-point estimate from line segments, with its residual: the point most segments' lines pass through.

RANSAC over pairs of segments (seeded): the intersection of two segments' lines is a candidate; a segment supports
it when the direction from its midpoint to the candidate lies within `angle_tol` of the segment's own direction
(an angular test, so long and short segments far from the point count alike). The best candidate is refined by
weighted least squares over its supporters (each line's squared distance, weighted by segment length), and the
residual is the length-weighted RMS distance of those lines from the point, in pixels.

Meaningful only on images large enough to hold converging structure, not at 32x32 where a segment spans a few
pixels; so `analyse` does not call it: every shipped profile runs at 32x32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class VanishingPoint:
    x: float
    y: float
    residual: float  # length-weighted RMS distance of the supporting lines from (x, y), pixels
    support: float  # share of the total segment length that supports the point


def _lines(segments: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Unit normals n, offsets c (n . p = c on the line), midpoints and lengths of segments [M, 4]."""
    p, q = segments[:, :2], segments[:, 2:]
    d = q - p
    length = np.hypot(d[:, 0], d[:, 1])
    normal = np.stack([-d[:, 1], d[:, 0]], axis=1) / length[:, None]
    return normal, (normal * p).sum(axis=1), (p + q) / 2, length


def _supporters(point: np.ndarray, segments: np.ndarray, angle_tol: float) -> np.ndarray:
    normal, _, mid, _ = _lines(segments)
    to_point = point[None, :] - mid
    dist = np.hypot(to_point[:, 0], to_point[:, 1])
    sin_angle = np.abs((normal * to_point).sum(axis=1)) / np.maximum(dist, 1e-9)
    return sin_angle < np.sin(angle_tol)


def _least_squares(segments: np.ndarray) -> tuple[np.ndarray, float] | None:
    normal, offset, _, length = _lines(segments)
    a = (normal * length[:, None]).T @ normal
    if np.linalg.cond(a) > 1e8:  # (nearly) parallel lines: the point is at infinity
        return None
    point = np.linalg.solve(a, (normal * (length * offset)[:, None]).sum(axis=0))
    residual = float(np.sqrt(np.average((normal @ point - offset) ** 2, weights=length)))
    return point, residual


def estimate_vanishing_point(segments: np.ndarray, angle_tol: float = np.deg2rad(2.0), trials: int = 500,
                             min_support: int = 3, seed: int = 0) -> VanishingPoint | None:
    """The dominant vanishing point of segments [M, 4] (x1, y1, x2, y2), or None where fewer than `min_support`
    segments agree on a finite point."""
    segments = np.asarray(segments, dtype=np.float64).reshape(-1, 4)
    segments = segments[np.hypot(*(segments[:, 2:] - segments[:, :2]).T) > 0]
    if len(segments) < max(2, min_support):
        return None
    normal, offset, _, length = _lines(segments)
    rng = np.random.default_rng(seed)
    best, best_weight = None, 0.0
    for _ in range(trials):
        i, j = rng.choice(len(segments), 2, replace=False)
        a = normal[[i, j]]
        if abs(np.linalg.det(a)) < 1e-9:
            continue
        inliers = _supporters(np.linalg.solve(a, offset[[i, j]]), segments, angle_tol)
        if inliers.sum() >= min_support and length[inliers].sum() > best_weight:
            best, best_weight = inliers, length[inliers].sum()
    if best is None or (fit := _least_squares(segments[best])) is None:
        return None
    point, residual = fit
    return VanishingPoint(float(point[0]), float(point[1]), residual, float(best_weight / length.sum()))
