"""Within-class diversity: mean pairwise L2 distance between images of one class, averaged over classes.

A mode-collapsed class-conditional generator repeats a few images per class, so its figure falls far
below that of real data; the acceptance check compares the two (`diversity_ratio`, samples / real).
Pixels are scaled to [0, 1] and each image is flattened, so the distance is in units of unit-range pixels.
"""

from __future__ import annotations

import numpy as np


def pairwise_mean_distance(images: np.ndarray) -> float:
    """Mean L2 distance over the n(n-1)/2 distinct pairs of uint8 images [n, ...] (pixels in [0, 1])."""
    n = len(images)
    if n < 2:
        raise ValueError(f"need at least 2 images for a pairwise distance, got {n}")
    # Raw uint8 values in float64: every product and sum is an integer below 2^53, so the Gram identity
    # ||a - b||^2 = ||a||^2 + ||b||^2 - 2<a, b> is exact (identical images give exactly 0), and BLAS-fast.
    x = images.reshape(n, -1).astype(np.float64)
    sq = np.einsum("ij,ij->i", x, x)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (x @ x.T), 0.0)
    iu = np.triu_indices(n, k=1)
    return float(np.sqrt(d2[iu]).mean() / 255.0)


def per_class_diversity(images: np.ndarray, labels: np.ndarray, per_class: int = 200,
                        seed: int = 0) -> dict[int, float]:
    """{class: mean pairwise distance} on a seeded subset of at most `per_class` images of each class."""
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if images.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {images.dtype}")
    if per_class < 2:
        raise ValueError(f"per_class must be >= 2, got {per_class}")
    rng = np.random.default_rng(seed)
    out = {}
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < 2:
            continue  # one image has no pairs; the class is left out rather than scored 0
        if len(idx) > per_class:
            idx = np.sort(rng.choice(idx, per_class, replace=False))
        out[int(c)] = pairwise_mean_distance(images[idx])
    return out


def within_class_diversity(images: np.ndarray, labels: np.ndarray, per_class: int = 200, seed: int = 0) -> float:
    """Mean over classes of the within-class mean pairwise L2 distance (see `per_class_diversity`)."""
    scores = per_class_diversity(images, labels, per_class, seed)
    if not scores:
        raise ValueError("no class has 2 or more images: diversity is undefined")
    return float(np.mean(list(scores.values())))


def diversity_ratio(samples: np.ndarray, sample_labels: np.ndarray, real: np.ndarray, real_labels: np.ndarray,
                    per_class: int = 200, seed: int = 0) -> float:
    """Samples' within-class diversity over real data's (same K per class); ~1 healthy, << 1 mode collapse."""
    ref = within_class_diversity(real, real_labels, per_class, seed)
    return within_class_diversity(samples, sample_labels, per_class, seed) / ref
