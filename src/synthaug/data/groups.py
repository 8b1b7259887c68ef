"""Groups of real training images of one class: the unit Diffusion Inversion learns an embedding for; seeded
per-class picks of images (the test images the analyses and Grad-CAM look at)."""

from __future__ import annotations

import numpy as np

from synthaug.data.real import DatasetError


def class_groups(labels: np.ndarray, group_size: int, groups_per_class: int, seed: int,
                 features: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Split a seeded selection of each class's images into groups of `group_size` images.

    Without `features` a group is a seeded random draw from its class. With `features` [N, D] (one row per image)
    a group gathers look-alike images: repeatedly, the remaining image farthest from the remaining images' mean
    (the most unusual look left) with its `group_size - 1` nearest remaining neighbours. Why: one vector can only
    stand for what its group shares, and a random group of a class shares no more than the class does (issue 32).

    Returns `members` int64 [G, group_size] (indices into `labels`) and `group_labels` int64 [G], ordered by
    class. `groups_per_class` 0 takes as many whole groups as each class holds (a remainder is left out),
    otherwise that many groups, seeded; asking for more groups than a class can fill is an error, not a silently
    smaller study.
    """
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if features is not None and len(features) != len(labels):
        raise ValueError(f"features has {len(features)} rows for {len(labels)} labels")
    rng = np.random.default_rng(seed)
    members, group_labels = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n = len(idx) // group_size if groups_per_class == 0 else groups_per_class
        if n == 0 or n * group_size > len(idx):
            raise DatasetError(f"class {int(c)} has {len(idx)} training images: too few for "
                               f"{max(n, 1)} group(s) of {group_size} (lower invert.group_size or "
                               "invert.groups_per_class)")
        if features is None:
            groups = idx[:n * group_size].reshape(n, group_size)
        else:
            groups = look_alike_groups(idx, np.asarray(features, dtype=np.float64), group_size)
            groups = groups[np.sort(rng.permutation(len(groups))[:n])]
        members.append(groups)
        group_labels.append(np.full(n, c, dtype=np.int64))
    return np.concatenate(members).astype(np.int64), np.concatenate(group_labels)


def look_alike_groups(idx: np.ndarray, features: np.ndarray, group_size: int) -> np.ndarray:
    """Every whole group of `group_size` of the images `idx`, greedily by nearness in `features` (class_groups)."""
    rest, groups = np.asarray(idx), []
    while len(rest) >= group_size:
        f = features[rest].reshape(len(rest), -1)
        seed = int(np.argmax(np.linalg.norm(f - f.mean(axis=0), axis=1)))
        near = np.argsort(np.linalg.norm(f - f[seed], axis=1), kind="stable")[:group_size]
        groups.append(rest[near])
        rest = np.delete(rest, near)
    return np.stack(groups)


def pick_per_class(labels: np.ndarray, classes, per_class: int, seed: int) -> dict[int, np.ndarray]:
    """Per class, at most `per_class` seeded indices of images with that label (empty if none)."""
    rng = np.random.default_rng(seed)
    return {int(c): rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in classes}
