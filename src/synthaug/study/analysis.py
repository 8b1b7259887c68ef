"""The `analyse` stage's work, beside FID: feature-space precision / recall / density / coverage and per-class
KID (and FID where a class is large enough), and line-segment geometry against real test images of the same
classes. The maths lives in `synthaug.metrics.{prdc_metrics,per_class,geometry}`; this module picks the images
and features, and turns the scores into flat metrics and per-class rows.

Line geometry has a baseline: the real test images of each class are split in two disjoint halves, the first is
the reference every source is compared with, the second (`real_heldout`) is compared with it too, so a source's
distance reads against what other real images of the same classes score.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from synthaug.core.config import ConfigError
from synthaug.data.groups import pick_per_class
from synthaug.metrics.geometry import LineStats, line_distances, line_statistics
from synthaug.metrics.per_class import per_class_scores, summarise_classes
from synthaug.metrics.prdc_metrics import precision_recall_density_coverage, prdc_min_features
from synthaug.core.storage import StorageError, load_npz

HELDOUT = "real_heldout"  # the line-geometry baseline: real test images outside the reference half
LINE_KEYS = ("line_orientation_w1", "line_orientation_tv", "line_length_tv")
CSV_COLUMNS = ("images", "ref_images", "precision", "recall", "density", "coverage", "kid", "kid_std", "fid",
               "fid_note", "lines_per_image", "real_lines_per_image", *LINE_KEYS)


def load_labelled_features(path: Path, made_by: str, nearest_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-image Inception features [N, d] (float64) and their labels [N] from an npz a fid stage wrote."""
    try:
        arrays = load_npz(path, ("features", "labels"))
    except StorageError as e:
        if "missing array" in str(e):
            raise StorageError(f"{path}: holds no per-image features with labels (written by an older version); "
                               f"re-run `dvc repro {made_by}`") from None
        raise
    features, labels = arrays["features"].astype(np.float64), arrays["labels"].astype(np.int64)
    if features.ndim != 2 or labels.shape != (len(features),):
        raise StorageError(f"{path}: features {features.shape} and labels {labels.shape} do not pair up")
    if len(features) < prdc_min_features(nearest_k):
        raise ConfigError(f"analysis.nearest_k: {nearest_k} needs at least {prdc_min_features(nearest_k)} "
                          f"features, {path} holds {len(features)}")
    return features, labels


def feature_scores(features: np.ndarray, labels: np.ndarray, ref: np.ndarray, ref_labels: np.ndarray,
                   analysis, seed: int) -> tuple[dict, dict[int, dict]]:
    """Overall precision / recall / density / coverage and the per-class summary; per-class rows by class."""
    overall = precision_recall_density_coverage(ref, features, analysis.nearest_k)
    overall.update(split_scores(features, labels, ref, analysis.nearest_k, analysis.coverage_splits))
    rows = per_class_scores(features, labels, ref, ref_labels, analysis.nearest_k, analysis.kid_subsets,
                            analysis.kid_subset_size, seed)
    return {**overall, **summarise_classes(rows)}, {r.pop("class"): r for r in rows}


SPLIT_KEYS = ("coverage", "recall")  # the scores that depend on which synthetic images were drawn


def split_scores(features: np.ndarray, labels: np.ndarray, ref: np.ndarray, nearest_k: int,
                 splits: int) -> dict[str, float]:
    """Coverage and recall of `splits` disjoint class-balanced parts of a source's features, each against all of
    `ref`: `{key}_split_mean` and `{key}_split_sd` (sample sd over the parts), or nothing for fewer than 2 parts
    or parts too small for the k-NN balls.

    Why (issue 32): each image is drawn with its own noise, so the parts are independent draws of the sampler, and
    their spread is what one draw's figure can move by; two whole draws of 2,500 dinv images differed by 0.03 in
    coverage, more than dinv and ddim differed. A part holds 1/splits of the images, so its figures differ from the
    whole's (fewer images reach fewer real balls): only parts of equal size compare, across sources."""
    if splits < 2:
        return {}
    part = np.zeros(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        part[idx] = np.arange(len(idx)) % splits
    if np.bincount(part, minlength=splits).min() < prdc_min_features(nearest_k):
        return {}
    scores = [precision_recall_density_coverage(ref, features[part == j], nearest_k) for j in range(splits)]
    out = {}
    for key in SPLIT_KEYS:
        values = np.array([s[key] for s in scores])
        out[f"{key}_split_mean"], out[f"{key}_split_sd"] = float(values.mean()), float(values.std(ddof=1))
    return out


def reference_halves(labels: np.ndarray, per_class: int, seed: int) -> tuple[dict[int, np.ndarray],
                                                                               dict[int, np.ndarray]]:
    """Per class, two disjoint seeded halves of the real images (each at most `per_class`): reference, held out."""
    rng = np.random.default_rng(seed)
    first, second = {}, {}
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        half = (len(idx) + 1) // 2
        first[int(c)], second[int(c)] = idx[:half][:per_class], idx[half:][:per_class]
    return first, second


def class_line_stats(images: np.ndarray, picks: dict[int, np.ndarray], analysis) -> dict[int, LineStats]:
    return {c: line_statistics(images[idx], analysis.orientation_bins, analysis.length_bins)
            for c, idx in picks.items()}


def line_scores(stats: dict[int, LineStats], real: dict[int, LineStats]) -> tuple[dict, dict[int, dict]]:
    """Per class, the distances of a set's line statistics to the real reference of that class; overall, their
    mean over classes (NaN where no class had segments on both sides) and segments per image."""
    rows = {c: {"lines_per_image": s.per_image, "real_lines_per_image": real[c].per_image,
                **line_distances(s, real[c])} for c, s in stats.items()}
    summary = {}
    for key in LINE_KEYS:
        finite = [r[key] for r in rows.values() if math.isfinite(r[key])]
        summary[key] = float(np.mean(finite)) if finite else float("nan")
    images = sum(s.images for s in stats.values())
    summary["lines_per_image"] = sum(s.segments for s in stats.values()) / images if images else float("nan")
    return summary, rows


def source_analysis(features: np.ndarray, labels: np.ndarray, images: np.ndarray, image_labels: np.ndarray,
                    ref: np.ndarray, ref_labels: np.ndarray, real_lines: dict[int, LineStats], analysis,
                    seed: int) -> tuple[dict, dict[int, dict], dict[int, LineStats]]:
    """Everything `analyse` measures of one source: its flat summary, its per-class rows and its line statistics."""
    summary, by_class = feature_scores(features, labels, ref, ref_labels, analysis, seed)
    picks = pick_per_class(image_labels, real_lines, analysis.line_images_per_class, seed)
    lines = class_line_stats(images, picks, analysis)
    line_summary, line_rows = line_scores(lines, real_lines)
    rows = {c: {**by_class.get(c, {}), **line_rows.get(c, {})} for c in sorted({*by_class, *line_rows})}
    return {**summary, **line_summary}, rows, lines


def per_class_table(rows: dict[str, dict[int, dict]], class_names: list[str]) -> str:
    """CSV text: one line per (source, class) with every per-class column (blank where not computed)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("source", "class", *CSV_COLUMNS))
    for name, by_class in rows.items():
        for c, row in by_class.items():
            writer.writerow((name, class_names[c], *(_cell(row.get(key, "")) for key in CSV_COLUMNS)))
    return out.getvalue()


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else ""
    return str(value)


def mean_orientation(stats: dict[int, LineStats]) -> np.ndarray:
    """The class-averaged orientation histogram (classes without segments left out), for the figure."""
    hists = [s.orientation for s in stats.values() if s.segments]
    return np.mean(hists, axis=0) if hists else np.zeros(0)


def flat_metrics(summaries: dict[str, dict]) -> dict[str, float]:
    """`{source: {key: value}}` -> `{key.source: value}`, finite numbers only (JSON has no NaN)."""
    return {f"{key}.{name}": value for name, summary in summaries.items() for key, value in summary.items()
            if isinstance(value, (int, float)) and math.isfinite(value)}
