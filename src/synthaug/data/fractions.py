"""Stratified index subsets: nested fractions of the real training set (the "how much real data" axis of the
study), and the deterministic train/test holdout used for datasets that ship without an official split.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from synthaug.data.errors import DatasetError
from synthaug.core.storage import StorageError, load_json, save_json


def fraction_key(f: float) -> str:
    """The JSON key of a fraction: 0.1 -> "0.1", 1 -> "1.0"."""
    return repr(float(f))


def _check_fraction(f) -> float:
    if isinstance(f, bool) or not isinstance(f, (int, float, np.integer, np.floating)):
        raise ValueError(f"fraction {f!r}: must be a number in (0, 1]")
    f = float(f)
    if not (math.isfinite(f) and 0.0 < f <= 1.0):
        raise ValueError(f"fraction {f!r}: must be in (0, 1]")
    return f


def _check_labels(labels) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0 or labels.dtype.kind not in "iu":
        raise ValueError(f"labels: must be a non-empty 1-D integer array, got {labels.dtype} {labels.shape}")
    return labels


def _class_perms(labels: np.ndarray, seed: int) -> list[np.ndarray]:
    """One seeded permutation of each class's indices (seeded by (seed, class), so classes are independent)."""
    return [np.random.default_rng([int(seed) & 0xFFFFFFFF, int(c) & 0xFFFFFFFF]).permutation(
        np.flatnonzero(labels == c)) for c in np.unique(labels)]


def stratified_holdout(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, test) int64 index arrays: per class round(test_fraction * n_c) test items, at least one
    when the class has two or more, never the whole class. Deterministic for a seed."""
    labels, test_fraction = _check_labels(labels), _check_fraction(test_fraction)
    train, test = [], []
    for perm in _class_perms(labels, seed):
        n = len(perm)
        k = min(max(int(math.floor(test_fraction * n + 0.5)), 1 if n >= 2 else 0), n - 1)
        test.append(perm[:k])
        train.append(perm[k:])
    return np.sort(np.concatenate(train)).astype(np.int64), np.sort(np.concatenate(test)).astype(np.int64)


def nested_fractions(labels: np.ndarray, fractions: list[float], seed: int) -> dict[str, list[int]]:
    """Per fraction, sorted indices of a stratified subset; smaller fractions are subsets of larger ones.

    Each class gets one seeded permutation; fraction f takes its first max(1, round(f * n_c)) items,
    so the subsets nest by construction and 1.0 is everything. Deterministic for a given seed.
    """
    labels = _check_labels(labels)
    fracs = [_check_fraction(f) for f in fractions]
    if not fracs:
        raise ValueError("fractions: empty list")
    perms, out = _class_perms(labels, seed), {}
    for f in sorted(set(fracs)):
        take = []
        for perm in perms:
            n = len(perm)
            k = n if f == 1.0 else min(n, max(1, int(math.floor(f * n + 0.5))))
            take.append(perm[:k])
        out[fraction_key(f)] = np.sort(np.concatenate(take)).astype(int).tolist()
    return out


def subset_indices(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """The nested stratified subset of one fraction, exactly as `nested_fractions` lists it for any list that
    holds that fraction (each class's permutation depends only on (seed, class)). The generators' training
    subset is computed this way, so that adding a curve point to `fractions` does not retrain a generator."""
    return np.asarray(nested_fractions(labels, [fraction], seed)[fraction_key(fraction)], dtype=np.int64)


def generator_indices(labels: np.ndarray, fraction: float, seed: int, cap: int = 0) -> np.ndarray:
    """Sorted indices of the real training images a generator (or the inversion) learns from: the nested subset
    of `generator_fraction`, optionally capped to a seeded class-balanced `cap` of them (smoke runs, tests)."""
    idx = subset_indices(labels, fraction, seed)
    if cap <= 0 or cap >= len(idx):
        return idx
    rng = np.random.default_rng(seed)
    sub = labels[idx]
    classes = np.unique(sub)
    per_class = max(1, cap // len(classes))
    keep = np.concatenate([rng.permutation(np.flatnonzero(sub == c))[:per_class] for c in classes])
    return np.sort(idx[keep])


def save_fractions(path: str | os.PathLike, d: dict[str, list[int]], meta: dict) -> None:
    """Write {"fractions": d, "meta": meta} as JSON, atomically."""
    save_json(path, {"fractions": {k: [int(i) for i in v] for k, v in d.items()}, "meta": meta})


def load_fractions(path: str | os.PathLike, with_meta: bool = False):
    """Return the fraction -> indices dict (and the meta dict too when with_meta=True), validated."""

    path = Path(path)
    try:
        obj = load_json(path)
    except StorageError as e:
        raise DatasetError(str(e)) from None
    if not isinstance(obj, dict) or not isinstance(obj.get("fractions"), dict):
        raise DatasetError(f"{path}: not a fractions file (no 'fractions' mapping)")
    d = obj["fractions"]
    for k, v in d.items():
        try:
            _check_fraction(float(k))
        except ValueError:
            raise DatasetError(f"{path}: bad fraction key {k!r}") from None
        if not isinstance(v, list) or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0
                                              for i in v):
            raise DatasetError(f"{path}: fraction {k}: indices must be a list of non-negative integers")
        if any(a >= b for a, b in zip(v, v[1:])):
            raise DatasetError(f"{path}: fraction {k}: indices must be sorted and unique")
    return (d, obj.get("meta", {})) if with_meta else d
