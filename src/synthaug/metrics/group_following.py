"""Does Diffusion Inversion follow its group? (issue 13's "follows its group" figure)

For each inverted group g: its real images R_g, samples S_g from its learned vector and samples C_g from its
class's embedding drawn from the same start noise. In a feature space (Inception in the pipeline; pixels for the
tiny test models), the distance of a sample to its group is its distance to the centroid of R_g's features.
Per group: d_own = mean distance of S_g, d_class = mean distance of C_g, margin_g = (d_class - d_own) / d_class
(relative: 0.2 means the learned vector's samples sit 20 % closer to the group than the class's). The figure:
the mean margin over groups with its 95 % t-interval, and the share of groups whose own samples are closer.
A conditioning space the frozen network does not respond to within a class gives margins around 0 (or below).
"""

from __future__ import annotations

import numpy as np

from synthaug.metrics.fid import activations, load_inception
from synthaug.core.runtime import Runtime
from synthaug.study.study_stats import mean_ci


def group_distances(real: np.ndarray, samples: np.ndarray) -> float:
    """Mean Euclidean distance of `samples` (N, D) to the centroid of `real` (M, D)."""
    centre = real.reshape(len(real), -1).mean(axis=0)
    return float(np.linalg.norm(samples.reshape(len(samples), -1) - centre, axis=1).mean())


def group_following(real: list[np.ndarray], own: list[np.ndarray], by_class: list[np.ndarray]) -> dict[str, float]:
    """Per group g (lists aligned by group): real[g] (M, D) its images' features, own[g] (N, D) features of samples
    from its learned vector, by_class[g] (N, D) of samples from its class embedding from the same noise."""
    if not (len(real) == len(own) == len(by_class)) or not real:
        raise ValueError(f"need the same positive number of groups in each list, got {len(real)}, {len(own)}, "
                         f"{len(by_class)}")
    d_own = np.array([group_distances(r, s) for r, s in zip(real, own)])
    d_cls = np.array([group_distances(r, s) for r, s in zip(real, by_class)])
    margins = (d_cls - d_own) / np.maximum(d_cls, 1e-12)
    margin, ci = mean_ci(list(margins))
    return {"margin": margin, "margin_ci95": ci, "share": float((d_own < d_cls).mean()),
            "distance_own": float(d_own.mean()), "distance_class": float(d_cls.mean()), "groups": float(len(real))}


def inception_following(real: list[np.ndarray], own: list[np.ndarray], by_class: list[np.ndarray], dims: int,
                        runtime: Runtime, batch_size: int = 50) -> dict[str, float]:
    """`group_following` on uint8 images [N,H,W,C], in the FID network's `dims`-d feature space: the pipeline's
    figure (stage `invert`, scripts/group_following.py). Features, not an FID: any image count will do."""
    feats = activations(np.concatenate(real + own + by_class), load_inception(dims, runtime), runtime, batch_size,
                        desc="follows")
    parts = np.split(feats, np.cumsum([len(x) for x in real + own + by_class])[:-1])
    k = len(real)
    return group_following(parts[:k], parts[k:2 * k], parts[2 * k:])
