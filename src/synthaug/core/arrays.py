"""Array helpers every stage shares: the pixel range the nets work in, batch slices, class mosaics.

Kept apart from the training loop and the figures, so that a stage that only converts or tiles images (sample,
fidelity, gradcam, classify's evaluation) depends on this small file, not on `training.py` or `plots.py`.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch


def to_model_range(images: np.ndarray) -> torch.Tensor:
    """uint8 [N,H,W,C] -> float [N,C,H,W] in [-1, 1] (the range every generator works in)."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    return x.div_(127.5).sub_(1.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float [N,C,H,W] in [-1, 1] -> uint8 [N,H,W,C] (clipped)."""
    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def iterate_batches(n: int, batch_size: int) -> Iterable[slice]:
    for i in range(0, n, batch_size):
        yield slice(i, min(i + batch_size, n))


def class_grid(images: np.ndarray, labels: np.ndarray, num_classes: int, per_class: int) -> np.ndarray:
    """A uint8 mosaic with one row per class and the first `per_class` images of that class (blank if fewer)."""
    h, w, c = images.shape[1:]
    grid = np.zeros((num_classes * (h + 2), per_class * (w + 2), c), dtype=np.uint8)
    for k in range(num_classes):
        idx = np.flatnonzero(labels == k)[:per_class]
        for j, i in enumerate(idx):
            grid[k * (h + 2) + 1:k * (h + 2) + 1 + h, j * (w + 2) + 1:j * (w + 2) + 1 + w] = images[i]
    return grid
