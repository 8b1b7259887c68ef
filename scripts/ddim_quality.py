"""Quick quality check of a diffusion checkpoint without the pipeline: DDIM with the `ddim` section's settings on N
images (N/10 per class, seeded noise in blocks of 250), then the saturated share, the background level, KID against
the `fid_ref` stage's 2,500 test features (unbiased at small N, where FID is not defined at 2,048 dims), and a grid
of the first 12 samples of every class. Used for issue 13 to compare eps- and v-prediction checkpoints.

    python scripts/ddim_quality.py N GRID.png CHECKPOINT [CHECKPOINT ...]

With N = 500: about 2.5 min per checkpoint on 2 CPU cores (sampling 85 s, Inception 70 s).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from synthaug.core.config import load_params
from synthaug.generators.diffusion import load_sampler
from synthaug.metrics.fid import activations, load_features, load_inception
from synthaug.metrics.kid import kernel_inception_distance
from synthaug.metrics.saturation import background_level, saturated
from synthaug.core.runtime import make_runtime
from synthaug.stages.common import FID_REF
from synthaug.core.arrays import to_uint8

BLOCK = 250


def grid(images: np.ndarray, per_class: int, columns: int = 12) -> Image.Image:
    columns = min(columns, per_class)
    rows = [np.concatenate(list(images[c * per_class:c * per_class + columns]), axis=1) for c in range(10)]
    return Image.fromarray(np.concatenate(rows, axis=0).squeeze(-1) if images.shape[-1] == 1
                           else np.concatenate(rows, axis=0))


def main(n: int, grid_path: Path, checkpoints: list[Path]) -> None:
    params = load_params("params.yaml")
    runtime = make_runtime("cpu", "fp32")
    reference = load_features(FID_REF)
    inception = load_inception(2048, runtime.for_inference())
    labels = torch.arange(10).repeat_interleave(n // 10)
    for checkpoint in checkpoints:
        sample_fn, settings = load_sampler(checkpoint, runtime, params, "ddim")
        sample_fn.progress = False
        start = time.perf_counter()
        images = np.concatenate([to_uint8(sample_fn(labels[i:i + BLOCK], torch.Generator().manual_seed(i)))
                                 for i in range(0, len(labels), BLOCK)])
        sampled = time.perf_counter() - start
        kid, kid_std = kernel_inception_distance(activations(images, inception, runtime.for_inference(), 100),
                                                 reference, subset_size=min(1000, n))
        out = grid_path.with_name(f"{grid_path.stem}_{checkpoint.parent.name}_{checkpoint.stem}{grid_path.suffix}")
        grid(images, n // 10).save(out, optimize=True)
        print(f"{checkpoint}: step {settings['train_steps']}, ddim {settings['steps']} steps: n={n} saturated "
              f"{saturated(images).mean():.4f}, background {background_level(images):.1f}, KID x1000 "
              f"{1000 * kid:.2f} +- {1000 * kid_std:.2f} (subset std), grid {out} (sampling {sampled:.0f} s, total "
              f"{time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), Path(sys.argv[2]), [Path(a) for a in sys.argv[3:]])
