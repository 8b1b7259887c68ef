"""Where does the diffusion network's predicted x0 go wrong? Per timestep t, on 200 seeded real test images noised
to x_t: the RMSE of the noise prediction, of the implied x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t) (unclipped
and clipped to [-1, 1]), and the share of x0 pixels beyond [-1, 1]. Not a pipeline stage: the evidence behind
issue 13's reading of the saturated samples (README "Measured here").

    python scripts/x0_error.py [CHECKPOINT=models/diffusion/checkpoint.pt]

About 40 s on 2 CPU cores.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from synthaug.generators.inversion import frozen_diffusion
from synthaug.objectives.diffusion import eps_from_output
from synthaug.core.runtime import make_runtime
from synthaug.generators.samplers import predict_x0
from synthaug.stages.common import MODELS, REAL_DIR
from synthaug.core.arrays import to_model_range


def rmse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).pow(2).mean().sqrt())


@torch.no_grad()
def main(checkpoint: Path) -> None:
    runtime = make_runtime("cpu", "fp32").for_inference()
    net, schedule = frozen_diffusion(checkpoint, runtime)
    test = np.load(REAL_DIR / "test.npz", allow_pickle=False)
    pick = np.random.default_rng(0).choice(len(test["labels"]), 200, replace=False)
    x0, y = to_model_range(test["images"][pick]), torch.from_numpy(test["labels"][pick].astype(np.int64))
    gen = torch.Generator().manual_seed(1)
    T = schedule.timesteps
    print(f"{checkpoint}: prediction {net.cfg.prediction}, {schedule.name} T={T}")
    for t in sorted(set(range(0, T, 10)) | set(range(T - 6, T))):
        tt = torch.full((len(y),), t)
        noise = torch.randn(x0.shape, generator=gen)
        x_t = schedule.q_sample(x0, tt, noise)
        eps = eps_from_output(net(runtime.batch(x_t), tt, y).float(), x_t, tt, schedule, net.cfg.prediction)
        x0_hat = predict_x0(x_t, eps, schedule.gather(schedule.alphas_cumprod, tt, x0))
        print(f"t={t:3d} abar={float(schedule.alphas_cumprod[t]):.2e} eps_rmse={rmse(eps, noise):.3f} "
              f"x0_rmse={rmse(x0_hat, x0):8.3f} clipped_x0_rmse={rmse(x0_hat.clamp(-1, 1), x0):.3f} "
              f"beyond={float((x0_hat.abs() > 1).float().mean()):.3f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else MODELS / "diffusion" / "checkpoint.pt")
