"""Improved precision and recall (Kynkäänniemi et al. 2019) and density and coverage (Naeem et al. 2020).

All four compare two sets of features through k-nearest-neighbour balls, with the `prdc` package's code:
- precision: share of synthetic features inside some real feature's k-NN ball (fidelity: samples look real);
- recall: share of real features inside some synthetic feature's k-NN ball (diversity: real modes are covered);
- density: how many real balls hold each synthetic feature, over k, averaged (1 for a copy of the real set;
  above 1 where samples crowd dense real regions), robust to real outliers unlike precision;
- coverage: share of real features whose ball holds at least one synthetic feature.
A ball's radius is the distance to the k-th nearest neighbour in its own set, so each set needs k + 2 features.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np

PRDC_KEYS = ("precision", "recall", "density", "coverage")


def prdc_min_features(nearest_k: int) -> int:
    """Features each set needs: itself plus k neighbours, and one more for the k-th value to be well defined."""
    return nearest_k + 2


def precision_recall_density_coverage(real: np.ndarray, fake: np.ndarray, nearest_k: int = 5) -> dict[str, float]:
    """The four scores of synthetic features `fake` [M, d] against real features `real` [N, d]."""
    from prdc import compute_prdc  # imported when used: it pulls in scikit-learn

    real, fake = np.asarray(real, dtype=np.float32), np.asarray(fake, dtype=np.float32)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"precision/recall needs two feature arrays [N, d] of one d, got {real.shape} and "
                         f"{fake.shape}")
    if nearest_k < 1:
        raise ValueError(f"precision/recall needs nearest_k >= 1, got {nearest_k}")
    need = prdc_min_features(nearest_k)
    if min(len(real), len(fake)) < need:
        raise ValueError(f"precision/recall with nearest_k={nearest_k} needs at least {need} features per set, "
                         f"got {len(real)} real and {len(fake)} synthetic")
    with contextlib.redirect_stdout(io.StringIO()):  # compute_prdc prints the set sizes
        scores = compute_prdc(real_features=real, fake_features=fake, nearest_k=nearest_k)
    return {key: float(scores[key]) for key in PRDC_KEYS}
