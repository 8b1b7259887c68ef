"""Where do the laptop diffusion samples' two defects come from? Samples N images (N/10 per class, one seeded noise)
from the trained diffusion checkpoint under sampler variants and prints, per variant, the saturated share
(`synthaug.metrics.saturation.saturated`: white silhouettes) and the background level (mean corner pixel; real
Fashion-MNIST: 0). Not a pipeline stage: a check behind the issue-13 reading in README and the notes.

    python scripts/sampler_saturation.py 200 ddpm,ddpm_noclip,ddpm_raw,ddim25_eta0,ddim25_eta1,ddim100_eta0 [CHECKPOINT]

CHECKPOINT defaults to the study's `models/diffusion/checkpoint.pt` (any train@diffusion checkpoint will do, e.g.
one trained longer or with v-prediction in a scratch clone).

Variants: `ddpm` (the `sample@ddpm` sampler: EMA weights, x0 clipped to [-1, 1]), `ddpm_noclip` (x0 not clipped),
`ddpm_raw` (the raw instead of the EMA weights), `ddpm_dyn<per mille>` (dynamic thresholding, Saharia et al. 2022:
per image, s = max(1, that percentile of |x0|), x0 clipped to [-s, s] and divided by s, instead of clipped to
[-1, 1]; e.g. `ddpm_dyn995`), `ddpm_betavar` (the reverse variance beta_t, Ho et al.'s upper bound, instead of
beta-tilde), `ddpm_skip<k>` (DDPM started from pure noise k steps later, at t = T-1-k: skips the first reverse
steps, where an eps-predictor's x0 is divided by sqrt(abar_t) ~ 2,000), `ddim<steps>_eta<eta>` (DDIM, x0 clipped,
EMA weights). A DDPM variant of 200 images takes about
2.5 min on 2 CPU cores, a 25-step DDIM one about 30 s.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

from synthaug.generators.diffusion import DiffusionSampleFn
from synthaug.metrics.saturation import background_level, saturated
from synthaug.nets.unet import UNet, UNetConfig
from synthaug.objectives.diffusion import NoiseSchedule
from synthaug.core.runtime import make_runtime
from synthaug.generators.samplers import DDIMSampler, DDPMSampler, predict_x0
from synthaug.stages.common import MODELS
from synthaug.core.storage import load_checkpoint, load_state_strict
from synthaug.core.arrays import to_uint8


class DynamicThresholdDDPM(DDPMSampler):
    """DDPM whose predicted x0 is dynamically thresholded (per image) instead of clipped to [-1, 1]."""

    def __init__(self, schedule: NoiseSchedule, quantile: float):
        super().__init__(schedule, clip_x0=False)
        self.quantile = quantile

    def _x0(self, x_t: torch.Tensor, eps: torch.Tensor, abar_t: torch.Tensor) -> torch.Tensor:
        x0 = predict_x0(x_t, eps, abar_t)
        s = torch.quantile(x0.abs().flatten(1), self.quantile, dim=1).clamp(min=1.0).view(-1, 1, 1, 1)
        return x0.clamp(-s, s) / s


class BetaVarianceDDPM(DDPMSampler):
    """DDPM with the reverse variance beta_t instead of beta-tilde_t."""

    def step(self, eps: torch.Tensor, t: int, x_t: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        mean = super().step(eps, t, x_t, None)
        return mean if z is None else mean + self._coef(self.schedule.betas, t, x_t).sqrt() * z


class SkipDDPM(DDPMSampler):
    """DDPM over t = T-1-k, ..., 0 from x ~ N(0, I): the first k reverse steps left out."""

    def __init__(self, schedule: NoiseSchedule, skip: int):
        super().__init__(schedule)
        self.timesteps = self.timesteps[skip:]


def sampler_for(variant: str, schedule: NoiseSchedule) -> DDPMSampler | DDIMSampler:
    if variant.startswith("ddim"):  # ddim<steps>_eta<eta>
        steps, eta = variant.removeprefix("ddim").split("_eta")
        return DDIMSampler(schedule, int(steps), float(eta), clip_x0=True)
    if variant.startswith("ddpm_dyn"):  # ddpm_dyn<per mille>
        return DynamicThresholdDDPM(schedule, int(variant.removeprefix("ddpm_dyn")) / 1000)
    if variant.startswith("ddpm_skip"):  # ddpm_skip<k>
        return SkipDDPM(schedule, int(variant.removeprefix("ddpm_skip")))
    if variant == "ddpm_betavar":
        return BetaVarianceDDPM(schedule)
    return DDPMSampler(schedule, clip_x0=variant != "ddpm_noclip")


def main(n: int, variants: list[str], checkpoint: Path = MODELS / "diffusion" / "checkpoint.pt") -> None:
    state = load_checkpoint(checkpoint, map_location="cpu")
    runtime = make_runtime("cpu", "fp32").for_inference()
    schedule = NoiseSchedule.make(state["schedule"]["name"], int(state["schedule"]["timesteps"]))
    print(f"{checkpoint}: step {state['step']}, prediction {state['config'].get('prediction', 'eps')}, "
          f"{schedule.name} schedule, T={len(schedule.betas)}: last betas "
          f"{[round(float(b), 3) for b in schedule.betas[-4:]]}, abar_T {float(schedule.alphas_cumprod[-1]):.2e}")
    labels = torch.arange(10).repeat_interleave(n // 10)
    for variant in variants:
        net = UNet(UNetConfig(**state["config"]))
        load_state_strict(net, state["trainable"]["model" if variant == "ddpm_raw" else "ema"], checkpoint)
        net = runtime.prepare(net).eval().requires_grad_(False)
        sample_fn = DiffusionSampleFn(net, sampler_for(variant, schedule), runtime, 1.0, False, progress=False)
        start = time.perf_counter()
        images = to_uint8(sample_fn(labels, torch.Generator().manual_seed(0)))
        sat = saturated(images)
        print(f"{variant}: saturated {sat.mean():.3f} ({sat.sum()}/{len(sat)}; per class "
              f"{np.bincount(labels.numpy()[sat], minlength=10).tolist()}), background level "
              f"{background_level(images):.1f}, {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2].split(",") if len(sys.argv) > 2 else ["ddpm", "ddim25_eta0"],
         *(Path(a) for a in sys.argv[3:4]))
