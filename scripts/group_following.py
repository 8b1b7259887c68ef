"""Does the study's Diffusion Inversion follow its groups? Issue 13's figure (`synthaug.metrics.group_following`) on
the `invert` checkpoint: per inverted group, N samples from its learned vector and N from its class embedding from
the same start noise (DDIM, eta 0, the `ddim` section's steps, no perturbation or interpolation), scored by their
distance to the centroid of the group's real images in Inception feature space (and in pixel space). The `invert`
stage logs the same Inception figure (`follows_*` in metrics/invert.json, `invert.follow_samples`); this script
re-scores a checkpoint with another N or fewer groups and adds the pixel-space figure.

    python scripts/group_following.py [N=8] [GROUPS=0 (all)]

On 2 CPU cores, all 60 groups of the laptop default with N=8 (1,260 images through Inception) take ~6 min.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

from synthaug.core.config import load_params
from synthaug.data.real import load_prepared
from synthaug.generators.inversion import ConditionSpace, vector_sampler, frozen_diffusion, group_samples
from synthaug.metrics.group_following import group_following, inception_following
from synthaug.core.runtime import make_runtime
from synthaug.stages.common import MODELS, REAL_DIR
from synthaug.core.storage import load_checkpoint


def main(n: int, limit: int) -> None:
    params = load_params("params.yaml")
    runtime = make_runtime("cpu", "fp32").for_inference()
    state = load_checkpoint(MODELS / "dinv" / "checkpoint.pt")
    vectors = state["trainable"]["embeddings"]["weight"].float()
    members, group_labels = state["members"].numpy(), state["group_labels"].numpy()
    net, schedule = frozen_diffusion(Path(state["diffusion_checkpoint"]), runtime)
    labels = torch.from_numpy(group_labels)
    with torch.no_grad():  # both as conditioning vectors (learned codes map to class + W z)
        vectors = ConditionSpace(net).to_cond(vectors, labels).float()
        class_vectors = net.class_embedding(labels).float()
    train = load_prepared(REAL_DIR, "train")
    groups = range(len(members)) if limit <= 0 else range(min(limit, len(members)))
    start = time.perf_counter()
    sample_fn = vector_sampler(net, schedule, runtime, params.ddim.steps)
    own, by_class = group_samples(sample_fn, vectors, class_vectors, groups, n, params.seed)
    real = [train.images[members[g]] for g in groups]
    sampled = time.perf_counter() - start
    figures = {"inception": inception_following(real, own, by_class, params.fid.dims, runtime, params.fid.batch_size),
               "pixels": group_following(*([x.astype(np.float64) for x in part] for part in (real, own, by_class)))}
    print(f"{len(real)} groups of {members.shape[1]} real images, {n} samples per group and conditioning, DDIM "
          f"{params.ddim.steps} steps (sampling {sampled:.0f} s, "
          f"features {time.perf_counter() - start - sampled:.0f} s)")
    for space, f in figures.items():
        print(f"{space}: margin {f['margin']:+.4f} +- {f['margin_ci95']:.4f} (95 % t over groups), own samples "
              f"closer in {f['share']:.3f} of groups; mean distance own {f['distance_own']:.3f}, class "
              f"{f['distance_class']:.3f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 8, int(sys.argv[2]) if len(sys.argv) > 2 else 0)
