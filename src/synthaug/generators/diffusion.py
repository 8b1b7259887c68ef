"""Class-conditional DDPM family: one trained model, two sources (`ddpm`, `ddim`) that differ only in the sampler.

Training (Ho et al. 2020, Alg. 1) minimises the MSE of the U-Net's target, `diffusion.prediction`: v (the
default; Salimans & Ho 2022, which keeps x0 bounded at the last steps) or eps (Ho et al.), with labels dropped to
the null class with probability `diffusion.label_dropout`, so the same net also serves classifier-free guidance. Adam,
linear learning-rate warm-up, gradient-norm clipping at 1.0 and an EMA of the weights (Ho et al. §4; the
EMA is what samples). Forward passes run under the Runtime's autocast (bf16 on CPU), the loss in fp32.

Sampling: source `ddpm` = ancestral sampling over all T training steps (`params.ddpm`); `ddim` = DDIM over
`params.ddim.steps` with `params.ddim.eta`. The schedule (kind, T) always comes from the checkpoint.
Cost: DDPM runs T network passes per image, DDIM `steps`; so a CPU (laptop) profile trains with a short
schedule (T ~ 50-100, the linear betas rescaled to keep abar_T ~ 0), while T = 1000 is a GPU setting.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch

from synthaug.core.config import Params
from synthaug.generators.base import GeneratorSpec, TrainResult
from synthaug.nets.unet import UNet, UNetConfig
from synthaug.objectives.diffusion import NoiseSchedule, diffusion_loss, drop_labels, eps_from_output
from synthaug.core.runtime import Runtime
from synthaug.generators.samplers import DDIMSampler, DDPMSampler, MaybeCompiled, guided_eps_fn
from synthaug.core.storage import StorageError, load_checkpoint, load_state_strict
from synthaug.generators.training import EMA, BatchStream, run_training

# Besides this module, synthaug.generators.training and the stage (see generators/base.py).
TRAINING_CODE = ("synthaug.nets.unet", "synthaug.objectives.diffusion")

GRAD_CLIP = 1.0


def ema_decay_at(step: int, decay: float) -> float:
    """EMA decay with warm-up, min(decay, (1 + step) / (10 + step)): a short run's average is not dominated by
    the random initial weights (0.999^1000 would still leave 37% of them)."""
    return min(decay, (1 + step) / (10 + step))


class DiffusionTrainable:
    """The U-Net, its optimiser and LR warm-up, and the EMA copy used for sampling."""

    def __init__(self, net: UNet, schedule: NoiseSchedule, runtime: Runtime, lr: float, warmup_steps: int,
                 ema_decay: float, label_dropout: float, code_dropout: float = 0.5):
        self.net, self.schedule, self.runtime = net, schedule, runtime
        self.opt = torch.optim.Adam(net.parameters(), lr=lr)
        warm = max(1, warmup_steps)
        self.lr_sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: min(1.0, (s + 1) / warm))
        self.ema = EMA(net, ema_decay)
        self.ema_decay, self.label_dropout, self.code_dropout = ema_decay, label_dropout, code_dropout

    def _loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        net, labels_in, dropout, code = self.net, labels, self.label_dropout, None
        if net.cfg.code_dim:
            # A dropped label drops the code too (the null condition is "nothing"), and a further share of images
            # trains without its code, so that z = 0 (the class point) keeps meaning "any of the class". Without
            # codes the labels are dropped inside diffusion_loss, as before (the same random stream).
            labels_in, dropout = drop_labels(labels, self.label_dropout, net.null_label), 0.0
            keep = (torch.rand(len(labels), device=labels.device) >= self.code_dropout) & (labels_in != net.null_label)
            with self.runtime.autocast():
                code = net.encode(images) * keep[:, None].to(images.dtype)

        def model(x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            with self.runtime.autocast():
                return net(x_t, t, y, code=code)
        return diffusion_loss(model, self.schedule, images, labels_in, dropout, net.null_label, net.cfg.prediction)

    def train_step(self, images: torch.Tensor, labels: torch.Tensor, step: int) -> dict[str, float]:
        self.net.train()
        loss = self._loss(images, labels)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.net.parameters(), GRAD_CLIP)
        lr = self.opt.param_groups[0]["lr"]
        self.opt.step()
        self.lr_sched.step()
        self.ema.decay = ema_decay_at(step, self.ema_decay)
        self.ema.update(self.net)
        return {"loss": loss.item(), "grad_norm": float(grad_norm), "lr": lr}

    def state_dict(self) -> dict:
        return {"model": self.net.state_dict(), "ema": self.ema.state_dict(), "opt": self.opt.state_dict(),
                "lr_sched": self.lr_sched.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])
        self.lr_sched.load_state_dict(state["lr_sched"])


def unet_config(spec: GeneratorSpec, params: Params) -> UNetConfig:
    p = params.diffusion
    return UNetConfig(channels=spec.channels, num_classes=spec.num_classes, image_size=spec.image_size,
                      base_channels=p.base_channels, channel_mult=list(p.channel_mult),
                      num_res_blocks=p.num_res_blocks, attn_resolutions=list(p.attn_resolutions), dropout=p.dropout,
                      code_dim=p.code_dim, prediction=p.prediction)


def train(spec: GeneratorSpec, params: Params, runtime: Runtime, checkpoint: Path,
          log_metrics: Callable[[dict, int], None], family: str = "diffusion", fingerprint: str = "") -> TrainResult:
    p = params.diffusion
    cfg = unet_config(spec, params)
    net = runtime.prepare(UNet(cfg))
    schedule = NoiseSchedule.make(p.schedule, p.timesteps)
    stream = BatchStream(spec.images, spec.labels, p.batch_size, seed=params.seed)
    trainable = DiffusionTrainable(net, schedule, runtime, p.lr, p.warmup_steps, p.ema_decay, p.label_dropout,
                                   p.code_dropout)
    extra = {"config": cfg.to_dict(), "family": "diffusion",
             "schedule": {"name": schedule.name, "timesteps": schedule.timesteps}}
    history = run_training(trainable, stream, runtime, p.steps, checkpoint, p.checkpoint_every, log_metrics,
                           log_every=p.log_every, desc="train diffusion", extra_state=lambda: extra,
                           fingerprint=fingerprint)
    n_params = sum(q.numel() for q in net.parameters())
    return TrainResult(steps=p.steps, history=history,
                       summary={"final_loss": history[-1]["loss"], "parameters": float(n_params)})


class DiffusionSampleFn:
    """`sample_fn(labels, generator) -> images in [-1, 1]`, timing itself: `seconds_per_image` is the mean
    wall time per image over every call so far (including a first call's torch.compile, if enabled)."""

    def __init__(self, net: UNet, sampler: DDPMSampler | DDIMSampler, runtime: Runtime, guidance_scale: float,
                 compile: bool, progress: bool = True):
        self.net, self.sampler, self.runtime = net, sampler, runtime
        self.guidance_scale, self.progress = guidance_scale, progress
        self.model_fn = MaybeCompiled(self._eps, enabled=compile)
        self.images, self.seconds = 0, 0.0
        self.image_shape = (net.cfg.channels, net.cfg.image_size, net.cfg.image_size)

    def _forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """The U-Net conditioned on c: class labels here (vectors in Diffusion Inversion's subclass)."""
        return self.net(self.runtime.batch(x), t, c)

    def _eps(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        with self.runtime.autocast():
            out = self._forward(x, t, c)
        return eps_from_output(out.float(), x, t, self.sampler.schedule, self.net.cfg.prediction)

    @property
    def seconds_per_image(self) -> float:
        return self.seconds / self.images if self.images else float("nan")

    @torch.no_grad()
    def __call__(self, labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        start = time.perf_counter()
        labels = labels.to(self.runtime.device)
        eps_fn = guided_eps_fn(self.model_fn, labels, self.net.null_label, self.guidance_scale)
        x = self.sampler.sample(eps_fn, (len(labels), *self.image_shape), generator=gen,
                                device=self.runtime.device, progress=self.progress)
        self.seconds += time.perf_counter() - start
        self.images += len(labels)
        return x.clamp(-1, 1)


def load_sampler(checkpoint: Path, runtime: Runtime, params: Params, source: str):
    """Return (sample_fn, settings) for source 'ddpm' or 'ddim', both from the EMA weights of one checkpoint."""
    state = load_checkpoint(checkpoint, map_location="cpu")
    if state.get("family") != "diffusion":
        raise StorageError(f"{checkpoint}: not a diffusion checkpoint (family {state.get('family')!r})")
    cfg = UNetConfig(**state["config"])
    net = UNet(cfg)
    load_state_strict(net, state["trainable"]["ema"], checkpoint)
    runtime = runtime.for_inference()  # no-grad U-Net passes: 1.4x faster in channels_last, even in fp32
    net = runtime.prepare(net).eval().requires_grad_(False)
    schedule = NoiseSchedule.make(state["schedule"]["name"], int(state["schedule"]["timesteps"]))
    if source == "ddpm":
        sp = params.ddpm
        sampler = DDPMSampler(schedule)
    elif source == "ddim":
        sp = params.ddim
        sampler = DDIMSampler(schedule, sp.steps, sp.eta)
    else:
        raise ValueError(f"diffusion family has no sampler for source '{source}' (known: ddpm, ddim)")
    sample_fn = DiffusionSampleFn(net, sampler, runtime, sp.guidance_scale, sp.compile)
    settings = {**sampler.describe(), "guidance_scale": sp.guidance_scale, "ema": True, "compile": sp.compile,
                "base_channels": cfg.base_channels, "train_steps": int(state["step"])}
    return sample_fn, settings
