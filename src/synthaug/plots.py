"""Figures a user looks at: per-class sample grids, loss curves, accuracy against real-data fraction."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # stages run headless
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from synthaug.storage import atomic_path  # noqa: E402


def class_grid(images: np.ndarray, labels: np.ndarray, num_classes: int, per_class: int) -> np.ndarray:
    """A uint8 mosaic with one row per class and the first `per_class` images of that class (blank if fewer)."""
    h, w, c = images.shape[1:]
    grid = np.zeros((num_classes * (h + 2), per_class * (w + 2), c), dtype=np.uint8)
    for k in range(num_classes):
        idx = np.flatnonzero(labels == k)[:per_class]
        for j, i in enumerate(idx):
            grid[k * (h + 2) + 1:k * (h + 2) + 1 + h, j * (w + 2) + 1:j * (w + 2) + 1 + w] = images[i]
    return grid


def save_grid_png(path: str | Path, grid: np.ndarray, class_names: list[str] | None = None,
                  title: str | None = None) -> None:
    """Save a mosaic with class names on the left, written atomically."""
    rows = len(class_names) if class_names else 1
    fig, ax = plt.subplots(figsize=(max(4, grid.shape[1] / 40 + 1.5), max(3, grid.shape[0] / 40)))
    ax.imshow(grid.squeeze(-1) if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=255,
              interpolation="nearest")
    if class_names:
        step = grid.shape[0] / rows
        ax.set_yticks([step * (k + 0.5) for k in range(rows)], class_names, fontsize=8)
    else:
        ax.set_yticks([])
    ax.set_xticks([])
    if title:
        ax.set_title(title, fontsize=10)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def save_curves_png(path: str | Path, history: list[dict], title: str) -> None:
    """One panel per logged quantity against step."""
    keys = [k for k in history[0] if k != "step"] if history else []
    fig, axes = plt.subplots(1, max(1, len(keys)), figsize=(3.2 * max(1, len(keys)), 2.6), squeeze=False)
    steps = [h["step"] for h in history]
    for ax, k in zip(axes[0], keys):
        ax.plot(steps, [h[k] for h in history])
        ax.set_title(k, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def save_accuracy_png(path: str | Path, table: dict[str, dict[float, tuple[float, float]]], title: str) -> None:
    """Accuracy (mean with 95% CI bars) against real-data fraction, one line per arm."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for arm, by_fraction in sorted(table.items()):
        fr = sorted(by_fraction)
        mean = [by_fraction[f][0] for f in fr]
        ci = [by_fraction[f][1] for f in fr]
        ax.errorbar(fr, mean, yerr=ci, marker="o", capsize=3, label=arm)
    ax.set_xscale("log")
    ax.set_xlabel("fraction of real training data")
    ax.set_ylabel("test accuracy (real test split)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
