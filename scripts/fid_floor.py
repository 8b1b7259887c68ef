"""What the FID protocol can reach at all: real training images scored exactly as the `fid` stage scores a source
(2,500 images against the `fid_ref` stage's 2,500 test features, dims 2048, fp32 Inception, class-balanced).

Two lines (issue 13 asks for the floor at 2,500, and whether 30 % below 38.82 is within reach):
- `real, the generators' N images`: the `generator_fraction` subset the generators learn from (300 at the laptop
  default), each image repeated until there are 2,500: a perfect memoriser of its training set at that protocol.
- `real, all training images`: 2,500 distinct training images (class-balanced, seeded), the floor of a
  generator that learned the whole training distribution.

    python scripts/fid_floor.py

About 6 min on 2 idle CPU cores (Inception on 2,800 images).
"""

from __future__ import annotations

import time

import numpy as np

from synthaug.core.config import load_params
from synthaug.data.fractions import generator_indices
from synthaug.data.real import load_prepared
from synthaug.metrics.fid import (activations, frechet_distance, load_features, load_inception, load_stats,
                                 stats_from_activations, validate_sample_count)
from synthaug.metrics.kid import kernel_inception_distance
from synthaug.core.runtime import make_runtime
from synthaug.stages.common import FID_REF, REAL_DIR
from synthaug.stages.fid import class_balanced_subset


def score(name: str, features: np.ndarray, reference_stats, reference: np.ndarray) -> None:
    fid = frechet_distance(stats_from_activations(features), reference_stats)
    kid, kid_std = kernel_inception_distance(features, reference, subset_size=1000)
    distinct = len(np.unique(features, axis=0))
    print(f"{name}: {len(features)} images ({distinct} distinct): FID {fid:.2f}, KID x1000 {1000 * kid:.2f} "
          f"+- {1000 * kid_std:.2f} (subset std)", flush=True)


def main() -> None:
    params = load_params("params.yaml")
    f = params.fid
    runtime = make_runtime("cpu", "fp32")
    reference_stats, meta = load_stats(FID_REF)
    reference = load_features(FID_REF)
    train = load_prepared(REAL_DIR, "train")
    start = time.perf_counter()
    inception = load_inception(f.dims, runtime)  # loaded once for both lines
    seen = generator_indices(train.labels, params.generator_fraction, params.seed)
    # Inception runs once per distinct image: repeating features is repeating images (the net is deterministic).
    seen_features = activations(train.images[seen], inception, runtime, f.batch_size)
    tiled = np.resize(seen_features, (f.num_images, seen_features.shape[1]))  # np.resize repeats rows cyclically
    score(f"real, the generators' {len(seen)} images (generator_fraction {params.generator_fraction}) tiled",
          tiled, reference_stats, reference)
    everyone = class_balanced_subset(train.labels, f.num_images, params.seed)
    validate_sample_count(len(everyone), f.dims)
    score("real, all training images", activations(train.images[everyone], inception, runtime, f.batch_size),
          reference_stats, reference)
    print(f"reference: {meta.get('num_images')} {meta.get('split')} images, dims {meta.get('dims')}; "
          f"{time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
