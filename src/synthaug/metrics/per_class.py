"""Feature-space scores of one source, per class, against the reference (real test) features of that class.

Per class: KID (unbiased at any count, so always computed when both sides hold 2 images), precision / recall /
density / coverage (when both sides hold k + 2), and FID only where both sides hold more images than the feature
dims: below that the dims x dims covariance is singular and the Fréchet distance meaningless, so it is recorded
as not computed, with that reason. (At the laptop default a class has 250 images against dims 2048; on the smoke
profile about 20 against dims 64: neither computes per-class FID.)
"""

from __future__ import annotations

import math

import numpy as np

from synthaug.metrics.kid import kernel_inception_distance
from synthaug.metrics.prdc_metrics import PRDC_KEYS, precision_recall_density_coverage, prdc_min_features

NAN = float("nan")


def fid_skip_reason(n_source: int, n_reference: int, dims: int) -> str:
    """Why per-class FID is not computed ('' when it is): a covariance of dims x dims needs more than dims images."""
    fewest = min(n_source, n_reference)
    if fewest > dims:
        return ""
    return f"not computed: {fewest} images <= {dims} feature dims (singular covariance)"


def class_fid(x: np.ndarray, y: np.ndarray) -> tuple[float, str]:
    """Fréchet distance of two feature sets (pytorch-fid's formula) and '' ; or NaN and why it was not computed."""
    from synthaug.metrics.fid import FidError, frechet_distance, stats_from_activations  # torch: import when used

    reason = fid_skip_reason(len(x), len(y), x.shape[1])
    if reason:
        return NAN, reason
    try:
        return frechet_distance(stats_from_activations(x), stats_from_activations(y)), ""
    except FidError as e:  # a badly conditioned covariance square root: one class must not stop the stage
        return NAN, f"not computed: {e}"


def class_scores(x: np.ndarray, y: np.ndarray, nearest_k: int, kid_subsets: int, kid_subset_size: int,
                 seed: int) -> dict:
    """Scores of source features `x` against reference features `y`, both of one class."""
    row: dict = {"images": len(x), "ref_images": len(y)}
    if min(len(x), len(y)) >= 2:
        row["kid"], row["kid_std"] = kernel_inception_distance(x, y, kid_subsets, kid_subset_size, seed)
    else:
        row["kid"] = row["kid_std"] = NAN
    if min(len(x), len(y)) >= prdc_min_features(nearest_k):
        row.update(precision_recall_density_coverage(y, x, nearest_k))
    else:
        row.update({key: NAN for key in PRDC_KEYS})
    row["fid"], row["fid_note"] = class_fid(x, y)
    return row


def per_class_scores(features: np.ndarray, labels: np.ndarray, ref_features: np.ndarray, ref_labels: np.ndarray,
                     nearest_k: int, kid_subsets: int, kid_subset_size: int, seed: int) -> list[dict]:
    """One row per class of the reference (a class the source lacks gets NaN scores)."""
    return [{"class": int(c), **class_scores(features[labels == c], ref_features[ref_labels == c], nearest_k,
                                             kid_subsets, kid_subset_size, seed + int(c))}
            for c in np.unique(ref_labels)]


def summarise_classes(rows: list[dict]) -> dict[str, float]:
    """Flat summary of per-class rows: mean and worst KID, and mean FID over classes where it was computed."""
    kid = [r["kid"] for r in rows if math.isfinite(r["kid"])]
    fid = [r["fid"] for r in rows if math.isfinite(r["fid"])]
    out = {"kid_class_mean": float(np.mean(kid)) if kid else NAN, "kid_class_max": max(kid) if kid else NAN,
           "fid_class_computed": len(fid)}
    if fid and len(fid) == len(rows):  # a mean over some classes only would not compare across sources
        out["fid_class_mean"] = float(np.mean(fid))
    return out
