"""Figures a user looks at: per-class sample grids, loss curves, accuracy against real-data fraction."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # stages run headless
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from synthaug.core.arrays import class_grid  # noqa: E402,F401 (sample grids; re-used by figures only)
from synthaug.core.storage import atomic_path  # noqa: E402


def _save(fig, path: str | Path, dpi: int = 110, bbox_inches: str | None = "tight") -> None:
    """Write a figure as PNG atomically, and free it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches=bbox_inches)
    plt.close(fig)


GRID_MAX_CLASSES = 20  # rows of a sample grid: its memory (matplotlib's float copies too) is bounded by this


def save_sample_grid_png(path: str | Path, images: np.ndarray, labels: np.ndarray, class_names: list[str],
                         per_class: int, title: str) -> None:
    """The first `per_class` samples of each class, one row per class; of more than GRID_MAX_CLASSES classes,
    that many spread evenly over them (the title says so), so the figure's size does not grow with the classes."""
    k = len(class_names)
    shown = np.unique(np.linspace(0, k - 1, min(k, GRID_MAX_CLASSES)).round().astype(np.int64))
    keep = np.isin(labels, shown)
    grid = class_grid(images[keep], np.searchsorted(shown, labels[keep]), len(shown), per_class)
    note = f" ({len(shown)} of {k} classes)" if len(shown) < k else ""
    save_grid_png(path, grid, [class_names[c] for c in shown], title=title + note)


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
    _save(fig, path, dpi=100)


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
    _save(fig, path, dpi=100, bbox_inches=None)




def save_accuracy_png(path: str | Path, series: dict[str, list[tuple[int, float, float]]], title: str) -> None:
    """Test accuracy against real training images (log axis): `real` with its 95% CI band, other arms with CI bars."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arm, points in sorted(series.items(), key=lambda kv: (kv[0] != "real", kv[0])):
        n, mean, ci = (np.asarray(v, dtype=float) for v in zip(*sorted(points)))
        ci = np.nan_to_num(ci)
        if arm == "real":  # the yardstick: a line with its CI band
            ax.plot(n, 100 * mean, marker="o", ms=3.5, label=arm, color="black", lw=2.2, zorder=3)
            ax.fill_between(n, 100 * (mean - ci), 100 * (mean + ci), color="black", alpha=0.12, lw=0)
        else:  # a few fractions each: CI bars read better than bands
            ax.errorbar(n, 100 * mean, yerr=100 * ci, marker="o", ms=3.5, lw=1.0, capsize=3, label=arm)
    ax.set_xscale("log")
    ax.set_xlabel("real training images (log scale)")
    ax.set_ylabel("test accuracy on the real test split (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    _save(fig, path)


def save_gain_png(path: str | Path, gains: dict[float, dict[str, tuple[float, float]]], title: str) -> None:
    """Paired gain over `real` (points) per source, with 95% CI bars, one group of bars per fraction."""
    fractions = sorted(gains)
    arms = sorted({a for g in gains.values() for a in g})
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(arms) + 2), 4))
    width = 0.8 / max(1, len(fractions))
    x = np.arange(len(arms))
    for i, f in enumerate(fractions):
        mean = np.array([100 * gains[f].get(a, (np.nan, np.nan))[0] for a in arms])
        ci = np.nan_to_num(np.array([100 * gains[f].get(a, (np.nan, np.nan))[1] for a in arms]))
        ax.bar(x + (i - (len(fractions) - 1) / 2) * width, mean, width, yerr=ci, capsize=3, label=f"{f:g} real")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, arms, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("gain over real (points, 95% CI)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    _save(fig, path)


def save_quality_png(path: str | Path, points: dict[str, dict[str, float]], title: str) -> None:
    """FID, label fidelity and (where the `analyse` stage ran) precision and coverage against the gain: one panel
    per score, one labelled point per source."""
    panels = [("fid", "FID (lower is better)"), ("label_fidelity", "label fidelity"),
              ("precision", "precision (on the real manifold)"), ("coverage", "coverage (of the real manifold)")]
    panels = [(k, label) for k, label in panels if any(q.get(k) is not None for q in points.values())] or panels[:2]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.8), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels):
        for s, q in sorted(points.items()):
            if q.get(key) is None or q.get("gain") is None:
                continue
            ax.errorbar(q[key], 100 * q["gain"], yerr=100 * np.nan_to_num(q.get("gain_ci95") or 0.0), fmt="o",
                        capsize=3)
            ax.annotate(s, (q[key], 100 * q["gain"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xlabel(label)
        ax.set_ylabel("gain over real (points)")
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)
