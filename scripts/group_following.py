"""Does the study's Diffusion Inversion follow its groups? Issue 13's figure (`synthaug.metrics.group_following`) on
the `invert` checkpoint: per inverted group, N samples from its learned vector and N from its class embedding from
the same start noise (DDIM, eta 0, the `ddim` section's steps, no perturbation or interpolation), scored by their
distance to the centroid of the group's real images in Inception feature space (and in pixel space). Not a
pipeline stage yet: a measurement behind the issue-13 reading in the notes, until inversion is rebuilt.

    python scripts/group_following.py [N=8] [GROUPS=0 (all)]

On 2 CPU cores, all 60 groups of the laptop default with N=8 (1,260 images through Inception) take ~6 min.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

from synthaug.config import load_params
from synthaug.data.real import load_prepared
from synthaug.generators.inversion import ConditionSpace, InversionSampleFn, frozen_diffusion
from synthaug.metrics.fid import activations, load_inception
from synthaug.metrics.group_following import group_following
from synthaug.runtime import make_runtime
from synthaug.samplers import DDIMSampler
from synthaug.stages.common import MODELS, REAL_DIR
from synthaug.storage import load_checkpoint
from synthaug.training import to_uint8


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
    sample_fn = InversionSampleFn(net, DDIMSampler(schedule, params.ddim.steps, eta=0.0), runtime, 1.0, False,
                                  progress=False)
    train = load_prepared(REAL_DIR, "train")
    groups = range(len(members)) if limit <= 0 else range(min(limit, len(members)))
    start = time.perf_counter()
    real, own, by_class = [], [], []
    for g in groups:
        real.append(train.images[members[g]])
        for vec, out in ((vectors, own), (class_vectors, by_class)):
            out.append(to_uint8(sample_fn.sample_vectors(vec[[g] * n], torch.Generator().manual_seed(g))))
    sampled = time.perf_counter() - start
    sizes = [len(r) for r in real] + [n] * (2 * len(real))
    inception = load_inception(params.fid.dims, runtime)  # features, not an FID: any image count will do
    feats = activations(np.concatenate(real + own + by_class), inception, runtime, params.fid.batch_size)
    parts = np.split(feats, np.cumsum(sizes)[:-1])
    k = len(real)
    print(f"{k} groups of {members.shape[1]} real images, {n} samples per group and conditioning, DDIM "
          f"{params.ddim.steps} steps (sampling {sampled:.0f} s, "
          f"features {time.perf_counter() - start - sampled:.0f} s)")
    pixels = [x.astype(np.float64) for x in real + own + by_class]
    for space, values in (("inception", parts), ("pixels", pixels)):
        r, o, c = values[:k], values[k:2 * k], values[2 * k:]
        f = group_following(r, o, c)
        print(f"{space}: margin {f['margin']:+.4f} +- {f['margin_ci95']:.4f} (95 % t over groups), own samples "
              f"closer in {f['follows_share']:.3f} of groups; mean distance own {f['distance_own']:.3f}, class "
              f"{f['distance_class']:.3f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 8, int(sys.argv[2]) if len(sys.argv) > 2 else 0)
