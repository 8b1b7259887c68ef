"""The `analyse` stage's figure: precision against recall per source, per-class KID, and line orientations."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # stages run headless
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from synthaug.core.storage import atomic_path  # noqa: E402


def save_analysis_png(path: str | Path, prdc: dict[str, dict], kid: dict[str, list[float]], class_names: list[str],
                      orientation: dict[str, np.ndarray], title: str) -> None:
    """prdc: source -> {precision, recall}; kid: source -> per-class KID (class order of `class_names`);
    orientation: name -> class-averaged orientation histogram over [0, pi) (`real` is drawn dashed)."""
    fig, (ax_pr, ax_kid, ax_or) = plt.subplots(1, 3, figsize=(18, 5), layout="constrained")
    for source, s in prdc.items():
        ax_pr.scatter(s["recall"], s["precision"], s=40)
        ax_pr.annotate(source, (s["recall"], s["precision"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax_pr.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), xlabel="recall (diversity)", ylabel="precision (fidelity)",
              title="improved precision / recall")
    ax_pr.grid(alpha=0.3)

    sources = list(kid)
    grid = np.array([[1000 * v if math.isfinite(v) else np.nan for v in kid[s]] for s in sources]) if sources \
        else np.zeros((0, len(class_names)))
    shown = ax_kid.imshow(np.ma.masked_invalid(grid), aspect="auto", cmap="viridis")
    ax_kid.set_yticks(range(len(sources)), sources, fontsize=8)
    ax_kid.set_xticks(range(len(class_names)), class_names, rotation=60, ha="right", fontsize=7)
    ax_kid.set_title("KID x1000 per class (vs real test images of the class)")
    fig.colorbar(shown, ax=ax_kid, fraction=0.04)

    for name, hist in orientation.items():
        if len(hist):
            centres = np.arange(len(hist)) * 180.0 / len(hist)  # bin k is centred on k * 180 / bins degrees
            ax_or.plot(centres, hist, "k--" if name == "real" else "-", label=name, lw=2 if name == "real" else 1)
    ax_or.set(xlim=(-5, 180), xlabel="segment orientation (degrees, 0 = horizontal)", ylabel="share of segment length",
              title="line orientations (LSD), class-averaged")
    ax_or.legend(fontsize=7)
    fig.suptitle(title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
