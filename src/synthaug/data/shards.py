"""Labelled synthetic image shards: `shard-NNNNN.npz` (uint8 images + int64 labels) and a `manifest.json`.

Archives rather than loose PNGs, because DVC handles tens of thousands of small files slowly. The manifest
holds the count per class and the sha256 of every shard, so a corrupted or swapped shard is caught on read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from synthaug.core.storage import StorageError, atomic_dir, load_json, load_npz, sha256_file, save_json, save_npz

MANIFEST = "manifest.json"


class ShardError(StorageError):
    """A shard folder that does not match its manifest."""


def write_shards(out_dir: str | Path, images: np.ndarray, labels: np.ndarray, shard_size: int,
                 num_classes: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write images/labels as fixed-size shards plus manifest; the folder appears whole or not at all."""
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 [N,H,W,C], got {images.dtype} {images.shape}")
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    labels = labels.astype(np.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]")
    shards = []
    with atomic_dir(out_dir) as tmp:
        for i, start in enumerate(range(0, len(images), shard_size)):
            name = f"shard-{i:05d}.npz"
            save_npz(tmp / name, images=images[start:start + shard_size], labels=labels[start:start + shard_size])
            shards.append({"file": name, "count": int(min(shard_size, len(images) - start)),
                           "sha256": sha256_file(tmp / name)})
        manifest = {
            "count": int(len(images)),
            "shape": list(images.shape[1:]),
            "num_classes": int(num_classes),
            "per_class": np.bincount(labels, minlength=num_classes).tolist(),
            "shard_size": int(shard_size),
            "shards": shards,
            **(extra or {}),
        }
        save_json(tmp / MANIFEST, manifest)
    return manifest


def read_manifest(shard_dir: str | Path) -> dict[str, Any]:
    return load_json(Path(shard_dir) / MANIFEST)


def _check_shard(path: Path, images: np.ndarray, labels: np.ndarray, count: int, shape: tuple) -> None:
    """One shard as its manifest describes it: `count` uint8 images of `shape` (HxWxC), one 1-D int label each."""
    if images.dtype != np.uint8 or images.shape[1:] != shape or images.ndim != 4:
        raise ShardError(f"{path}: images must be uint8 [N,{','.join(map(str, shape))}] as the manifest says, got "
                         f"{images.dtype} {list(images.shape)}")
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ShardError(f"{path}: labels must be a 1-D integer array, got {labels.dtype} {list(labels.shape)}")
    if len(images) != count or len(labels) != count:
        raise ShardError(f"{path}: holds {len(images)} images and {len(labels)} labels, manifest says {count}")


def read_shards(shard_dir: str | Path, verify: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """All images and labels of a shard folder, checking each shard against the manifest."""
    shard_dir = Path(shard_dir)
    manifest = read_manifest(shard_dir)
    images, labels = [], []
    for entry in manifest["shards"]:
        path = shard_dir / entry["file"]
        if verify and path.is_file() and sha256_file(path) != entry["sha256"]:
            raise ShardError(f"{path}: sha256 does not match {shard_dir / MANIFEST} (corrupt or replaced shard)")
        arrays = load_npz(path, ("images", "labels"))
        _check_shard(path, arrays["images"], arrays["labels"], entry["count"], tuple(manifest["shape"]))
        images.append(arrays["images"])
        labels.append(arrays["labels"].astype(np.int64))
    if not images:
        raise ShardError(f"{shard_dir}: manifest lists no shards")
    x, y = np.concatenate(images), np.concatenate(labels)
    k = manifest["num_classes"]
    if y.min() < 0 or y.max() >= k:
        raise ShardError(f"{shard_dir}: labels outside [0, {k}) (found {y.min()}..{y.max()})")
    return x, y
