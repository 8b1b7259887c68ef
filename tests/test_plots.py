"""The sample grid: its size (and memory) does not grow with the number of classes; the quality-against-gain
figure draws a panel per score it has."""

from __future__ import annotations

import tracemalloc

import numpy as np
from PIL import Image

from synthaug.figures.plots import GRID_MAX_CLASSES, save_quality_png, save_sample_grid_png


def test_sample_grid_of_10000_classes_shows_20_in_bounded_memory(tmp_path):
    """Before: one row per class, and a 10,000-class folder asked matplotlib for a 7.67 GiB array."""
    k, per_class = 10_000, 6
    labels = np.repeat(np.arange(k), per_class)
    images = np.broadcast_to((labels % 256).astype(np.uint8)[:, None, None, None], (len(labels), 8, 8, 1))
    tracemalloc.start()
    save_sample_grid_png(tmp_path / "grid.png", images, labels, [f"c{i}" for i in range(k)], per_class, "t")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 100 * 2**20, f"{peak / 2**20:.0f} MiB"
    with Image.open(tmp_path / "grid.png") as png:
        assert png.height < 20 * 100  # 20 rows of 8-pixel images, not 10,000
    assert GRID_MAX_CLASSES == 20


def test_sample_grid_shows_every_class_when_there_are_few(tmp_path):
    labels = np.repeat(np.arange(3), 2)
    images = np.zeros((6, 8, 8, 3), np.uint8)
    save_sample_grid_png(tmp_path / "grid.png", images, labels, ["a", "b", "c"], 2, "t")
    assert (tmp_path / "grid.png").stat().st_size > 0


def test_quality_figure_adds_precision_and_coverage_panels_where_analysed(tmp_path):
    base = {"vae": {"fid": 40.0, "label_fidelity": 0.8, "gain": 0.01, "gain_ci95": 0.005},
            "gan": {"fid": 90.0, "label_fidelity": 0.3, "gain": -0.05, "gain_ci95": None}}
    save_quality_png(tmp_path / "two.png", base, "t")
    analysed = {s: {**q, "precision": 0.5, "coverage": 0.4} for s, q in base.items()}
    save_quality_png(tmp_path / "four.png", analysed, "t")
    with Image.open(tmp_path / "two.png") as two, Image.open(tmp_path / "four.png") as four:
        assert four.width > 1.7 * two.width  # four panels side by side instead of two
