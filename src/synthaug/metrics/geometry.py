"""Geometric consistency: do generated images keep the line structure of real ones?

Line segments come from OpenCV's LSD (`cv2.createLineSegmentDetector`, von Gioi et al. 2012: a contrario
validation, no thresholds to tune, deterministic) on the gray image at its own size. Each set of images gives
two histograms: segment orientation in [0, pi), bin 0 centred on horizontal (weighted by segment length, so
long edges count more than specks) and segment length (from 0 to the image diagonal). Two sets are compared by
- orientation W1: the Wasserstein-1 distance on the circle of orientations (0 and pi are the same line), in
  radians: 0 for equal histograms, pi/2 at most (all mass a quarter turn away);
- orientation TV and length TV: total variation, half the L1 distance of the histograms (0 equal, 1 disjoint);
- segments per image.
At 32x32 a segment is a few pixels long: what stays meaningful is the dominant edge directions of a silhouette
(vertical trouser legs, horizontal hems) and how fragmented edges are (length, count), not perspective.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

NAN = float("nan")


def gray(images: np.ndarray) -> np.ndarray:
    """uint8 [N,H,W,C] (C = 1 or 3) -> uint8 [N,H,W], ITU-R BT.601 luma for colour."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"line statistics need uint8 images [N,H,W,C] with C=1 or 3, got {images.dtype} "
                         f"of shape {images.shape}")
    if images.shape[-1] == 1:
        return images[..., 0]
    return np.rint(images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.uint8)


def detect_segments(image: np.ndarray) -> np.ndarray:
    """LSD line segments [M, 4] (x1, y1, x2, y2, pixels) of one gray uint8 image [H, W]."""
    import cv2  # imported when used: the stage's other work needs no OpenCV

    lines = cv2.createLineSegmentDetector().detect(np.ascontiguousarray(image))[0]
    return np.zeros((0, 4), np.float32) if lines is None else lines.reshape(-1, 4)


def orientations_and_lengths(segments: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Orientation in [0, pi) (image axes: x right, y down) and length of each segment."""
    dx, dy = segments[:, 2] - segments[:, 0], segments[:, 3] - segments[:, 1]
    return np.mod(np.arctan2(dy, dx), np.pi), np.hypot(dx, dy)


@dataclass(frozen=True)
class LineStats:
    """Normalised histograms of a set of images' segments (all zeros when no segment was found)."""

    orientation: np.ndarray  # [orientation_bins] centred on k * pi / bins (0: horizontal), length-weighted, sums to 1
    length: np.ndarray  # [length_bins] over [0, image diagonal], sums to 1
    segments: int
    images: int

    @property
    def per_image(self) -> float:
        return self.segments / self.images if self.images else NAN


def _normalised(weights: np.ndarray) -> np.ndarray:
    total = weights.sum()
    return weights / total if total > 0 else np.zeros_like(weights, dtype=np.float64)


def line_statistics(images: np.ndarray, orientation_bins: int = 12, length_bins: int = 8) -> LineStats:
    """Segment histograms of uint8 images [N,H,W,C]."""
    planes = gray(images)
    found = [detect_segments(p) for p in planes]
    segments = np.concatenate(found) if found else np.zeros((0, 4), np.float32)
    angle, length = orientations_and_lengths(segments.astype(np.float64))
    diagonal = math.hypot(*planes.shape[1:3]) if len(planes) else 1.0
    half_bin = np.pi / orientation_bins / 2  # bin k is centred on k * pi / bins: bin 0 holds 179 and 1 degrees
    orient, _ = np.histogram(np.mod(angle + half_bin, np.pi), bins=orientation_bins, range=(0.0, np.pi),
                             weights=length)
    lengths, _ = np.histogram(np.minimum(length, diagonal), bins=length_bins, range=(0.0, diagonal))
    return LineStats(_normalised(orient.astype(np.float64)), _normalised(lengths.astype(np.float64)),
                     int(len(segments)), int(len(planes)))


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    """Half the L1 distance of two histograms that each sum to 1: 0 equal, 1 disjoint."""
    return 0.5 * float(np.abs(np.asarray(p) - np.asarray(q)).sum())


def circular_wasserstein1(p: np.ndarray, q: np.ndarray, period: float = np.pi) -> float:
    """W1 between two histograms of equal bins on a circle of circumference `period` (Rabin et al. 2011): with F the
    cumulative difference, W1 = bin width x min over c of sum |F - c|, the minimum being at the median of F."""
    cumulative = np.cumsum(np.asarray(p, np.float64) - np.asarray(q, np.float64))
    return float(period / len(cumulative) * np.abs(cumulative - np.median(cumulative)).sum())


def line_distances(synthetic: LineStats, real: LineStats) -> dict[str, float]:
    """How far a set's line statistics are from the real set's (NaN where either found no segment)."""
    if synthetic.segments == 0 or real.segments == 0:
        return {"line_orientation_w1": NAN, "line_orientation_tv": NAN, "line_length_tv": NAN}
    return {"line_orientation_w1": circular_wasserstein1(synthetic.orientation, real.orientation),
            "line_orientation_tv": total_variation(synthetic.orientation, real.orientation),
            "line_length_tv": total_variation(synthetic.length, real.length)}
