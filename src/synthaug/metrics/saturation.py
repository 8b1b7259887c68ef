"""Saturated-sample share: how many images are flat, near-white silhouettes with no texture; and the background
level (mean corner pixel), the other diffusion defect on the laptop default (grey instead of black).

A failure mode of the laptop diffusion samplers (issue 13): many samples come out as a class-shaped blob at
the top of the pixel range. An image counts as saturated when at least half of its foreground pixels
(brighter than 10 % of the range) sit within 6 % of the maximum. On Fashion-MNIST's 10,000 test images
0.42 % qualify (white shirts, bags), so a source far above that is producing blobs, not garments.
Colour images are judged on each pixel's brightest channel.
"""

from __future__ import annotations

import numpy as np

FOREGROUND = 26  # grey levels above 10 % of 255: the object, not the background
NEAR_MAX = 240   # within 6 % of 255
MIN_SHARE = 0.5  # at least half the object is near-white


def saturated(images: np.ndarray) -> np.ndarray:
    """Boolean [N]: which uint8 images [N,H,W,C] are saturated silhouettes (see the module docstring)."""
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 [N,H,W,C], got {images.dtype} of shape {images.shape}")
    x = images.max(axis=-1).reshape(len(images), -1)
    foreground = (x > FOREGROUND).sum(axis=1)
    near_max = (x >= NEAR_MAX).sum(axis=1)
    return (foreground > 0) & (near_max >= MIN_SHARE * np.maximum(foreground, 1))


def saturated_share(images: np.ndarray) -> float:
    """The share of saturated images in a set (0 for an empty set)."""
    return float(saturated(images).mean()) if len(images) else 0.0


def background_level(images: np.ndarray, k: int = 3) -> float:
    """Mean of the four k x k corner pixels over a set of uint8 images [N,H,W,C]: the background level of centred
    objects (real Fashion-MNIST: 0; the laptop DDIM samples: about 40)."""
    return float(np.concatenate([images[:, :k, :k], images[:, :k, -k:], images[:, -k:, :k],
                                 images[:, -k:, -k:]], axis=1).mean())
