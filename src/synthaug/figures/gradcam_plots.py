"""The `gradcam` stage's figures: each arm's Grad-CAM maps over the same real test images, one row per arm."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # stages run headless
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from synthaug.core.storage import atomic_path  # noqa: E402


def save_gradcam_grid(path: str | Path, images: np.ndarray, cams: dict[str, np.ndarray], captions: list[str],
                      title: str) -> None:
    """Rows: the images (uint8, N x H x W x C), then each arm's Grad-CAM maps (N x H x W in [0, 1]) over them;
    `captions` name the columns (the true class)."""
    rows = ["image", *cams]
    fig, axes = plt.subplots(len(rows), len(images), figsize=(0.95 * len(images) + 1.2, 1.0 * len(rows) + 0.6),
                             squeeze=False, layout="constrained")
    shown = images[..., 0] if images.shape[-1] == 1 else images
    for r, name in enumerate(rows):
        for i, ax in enumerate(axes[r]):
            ax.imshow(shown[i], cmap="gray", vmin=0, vmax=255)
            if name != "image":
                ax.imshow(cams[name][i], cmap="jet", alpha=0.45, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(captions[i], fontsize=7)
        axes[r][0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(title, fontsize=9)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
