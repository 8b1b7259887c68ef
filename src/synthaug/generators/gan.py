"""Class-conditional GAN family: one ResNet G/D pair, three objectives (`gan`, `lsgan`, `wgan_gp`).

Each source is its own family name and reads its own params section (`params.gan`, `params.lsgan`,
`params.wgan_gp`), so `dvc exp run -S lsgan.lr_d=...` re-runs only the LSGAN chain. One training step is
`n_critic` discriminator updates, each on its own real batch, then one generator update; samples come
from an exponential moving average of G's weights (Yazici et al. 2019).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from synthaug.core.config import GANParams, Params
from synthaug.generators.base import GeneratorSpec, TrainResult
from synthaug.nets.gan import Discriminator, GANConfig, Generator
from synthaug.objectives.gan import (OBJECTIVES, discriminator_loss, generator_loss, gradient_penalty,
                                     wasserstein_estimate)
from synthaug.core.runtime import Runtime
from synthaug.core.storage import StorageError, load_checkpoint, load_state_strict
from synthaug.core.arrays import to_uint8
from synthaug.generators.training import EMA, BatchStream, run_training

# Besides this module, synthaug.generators.training and the stage (see generators/base.py).
TRAINING_CODE = ("synthaug.nets.gan", "synthaug.objectives.gan")


class CriticBatches:
    """Serves G step s the n_critic real batches s*n .. s*n+n-1 of `stream`, concatenated.

    Still a pure function of the step, so a resumed run sees exactly the batches an uninterrupted one
    would, and every D update gets fresh data (no batch reused across the n_critic updates).
    """

    def __init__(self, stream: BatchStream, n_critic: int):
        self.stream, self.n_critic = stream, n_critic

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [self.stream.batch(step * self.n_critic + k) for k in range(self.n_critic)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def linear_decay(total_steps: int) -> Callable[[int], float]:
    """LR multiplier 1 - s/total: linear decay to 0 over the run (as in Miyato et al. 2018's CIFAR setup)."""
    return lambda s: max(0.0, 1.0 - s / total_steps)


def constant(_: int) -> float:
    return 1.0


class GANTrainable:
    """n_critic D updates then one G update per step, EMA of G, per-step LR schedule for both nets."""

    def __init__(self, G: Generator, D: Discriminator, runtime: Runtime, p: GANParams, objective: str,
                 total_steps: int):
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown GAN objective '{objective}' (known: {', '.join(OBJECTIVES)})")
        self.G, self.D, self.runtime, self.p, self.objective = G, D, runtime, p, objective
        self.opt_g = torch.optim.Adam(G.parameters(), lr=p.lr_g, betas=(p.beta1, p.beta2))
        self.opt_d = torch.optim.Adam(D.parameters(), lr=p.lr_d, betas=(p.beta1, p.beta2))
        decay = linear_decay(total_steps) if p.lr_decay else constant
        self.sched_g = torch.optim.lr_scheduler.LambdaLR(self.opt_g, decay)
        self.sched_d = torch.optim.lr_scheduler.LambdaLR(self.opt_d, decay)
        self.ema = EMA(G, p.ema_decay)

    def _noise(self, n: int) -> torch.Tensor:
        # Drawn on CPU from the global generator (saved in checkpoints), then moved: identical on resume.
        return torch.randn(n, self.G.cfg.z_dim).to(self.runtime.device)

    def _d_step(self, real: torch.Tensor, y: torch.Tensor, d_update: int = 0) -> dict[str, float]:
        """One critic update; its index `d_update` (step * n_critic + k) decides whether the lazy penalty applies."""
        rt = self.runtime
        with torch.no_grad(), rt.autocast():
            fake = self.G(self._noise(len(y)), y)
        with rt.autocast():
            d_real, d_fake = self.D(real, y), self.D(fake, y)
        loss = discriminator_loss(self.objective, d_real, d_fake)  # fp32
        out = {"d_loss": loss.item()}
        if self.objective == "wgan_gp":
            out["wasserstein"] = wasserstein_estimate(d_real, d_fake).item()
            # A pure function of the update index, so a resumed run penalises exactly the same updates.
            if d_update % self.p.gp_every == 0:
                with rt.autocast():  # bf16 double backward is accurate enough here: see gradient_penalty
                    gp = gradient_penalty(self.D, real, fake, y, self.p.gp_lambda * self.p.gp_every)
                loss = loss + gp
                out["gp"] = gp.item() / self.p.gp_every  # logged on the gp_lambda scale
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_d.step()
        return out

    def _g_step(self, y: torch.Tensor) -> float:
        self.D.requires_grad_(False)  # no weight gradients for D in G's update: saves their compute
        try:
            with self.runtime.autocast():
                d_fake = self.D(self.G(self._noise(len(y)), y), y)
            loss = generator_loss(self.objective, d_fake)
            self.opt_g.zero_grad(set_to_none=True)
            loss.backward()
            self.opt_g.step()
        finally:
            self.D.requires_grad_(True)
        return loss.item()

    def train_step(self, images: torch.Tensor, labels: torch.Tensor, step: int) -> dict[str, float]:
        """`images` holds n_critic real batches (see CriticBatches); G trains on the labels of the first."""
        n = self.p.n_critic
        d_logs: dict[str, list[float]] = {}
        for i, (real, y) in enumerate(zip(images.chunk(n), labels.chunk(n))):
            for k, v in self._d_step(real, y, step * n + i).items():
                d_logs.setdefault(k, []).append(v)
        g_loss = self._g_step(labels.chunk(n)[0])
        self.sched_g.step()
        self.sched_d.step()
        # EMA warm-up (the num_updates rule of TensorFlow's ExponentialMovingAverage): early on the
        # average follows G closely instead of dragging along its random initialisation.
        self.ema.decay = min(self.p.ema_decay, (1 + step) / (10 + step))
        self.ema.update(self.G)
        return {**{k: float(np.mean(v)) for k, v in d_logs.items()}, "g_loss": g_loss}

    def state_dict(self) -> dict:
        return {"G": self.G.state_dict(), "D": self.D.state_dict(), "ema": self.ema.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                "sched_g": self.sched_g.state_dict(), "sched_d": self.sched_d.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.ema.load_state_dict(state["ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.sched_g.load_state_dict(state["sched_g"])
        self.sched_d.load_state_dict(state["sched_d"])


def make_config(spec: GeneratorSpec, p: GANParams) -> GANConfig:
    return GANConfig(channels=spec.channels, num_classes=spec.num_classes, image_size=spec.image_size,
                     z_dim=p.z_dim, width=p.width, spectral_norm=p.spectral_norm)


def train(spec: GeneratorSpec, params: Params, runtime: Runtime, checkpoint: Path,
          log_metrics: Callable[[dict, int], None], family: str = "gan", fingerprint: str = "") -> TrainResult:
    """Train the `family` objective (gan | lsgan | wgan_gp) with `params.<family>` for `steps` G steps."""
    if family not in OBJECTIVES:
        raise ValueError(f"unknown GAN family '{family}' (known: {', '.join(OBJECTIVES)})")
    p: GANParams = getattr(params, family)
    cfg = make_config(spec, p)
    G, D = runtime.prepare(Generator(cfg)), runtime.prepare(Discriminator(cfg))
    stream = CriticBatches(BatchStream(spec.images, spec.labels, p.batch_size, seed=params.seed), p.n_critic)
    trainable = GANTrainable(G, D, runtime, p, family, p.steps)
    history = run_training(trainable, stream, runtime, p.steps, checkpoint, p.checkpoint_every, log_metrics,
                           log_every=p.log_every, desc=f"train {family}",
                           extra_state=lambda: {"config": cfg.to_dict(), "family": family},
                           fingerprint=fingerprint)
    summary = {f"final_{k}": v for k, v in history[-1].items() if k != "step"}
    # Rows: classes; columns: one slerp path between two fixed noises (what z controls vs what y controls).
    grid = interpolation_grid(trainable.ema.module, runtime, steps=8, seed=params.seed)
    return TrainResult(steps=p.steps, history=history, summary=summary, images={"interpolation.png": grid})


def load_generator(checkpoint: Path, runtime: Runtime, source: str | None = None) -> Generator:
    """The EMA generator of a checkpoint, in eval mode on the runtime's device."""
    state = load_checkpoint(checkpoint, map_location="cpu")
    if source is not None and state.get("family") != source:
        raise StorageError(f"{checkpoint}: holds a '{state.get('family')}' model, not '{source}'")
    G = Generator(GANConfig(**state["config"]))
    load_state_strict(G, state["trainable"]["ema"], checkpoint)
    return runtime.prepare(G).eval()


def load_sampler(checkpoint: Path, runtime: Runtime, params: Params, source: str):
    """Return f(labels, generator) -> images in [-1, 1] from the EMA generator with z ~ N(0, I)."""
    G = load_generator(checkpoint, runtime, source)

    @torch.no_grad()
    def sample(labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        z = torch.randn(len(labels), G.cfg.z_dim, generator=gen).to(runtime.device)
        with runtime.autocast():
            x = G(z, labels.to(runtime.device))
        return x.float().clamp(-1, 1)

    return sample, {"family": source, "z_dim": G.cfg.z_dim, "width": G.cfg.width, "weights": "ema"}


def slerp(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation (White 2016): stays at the typical norm of N(0, I), unlike a straight line."""
    cos = (z0 * z1).sum() / (z0.norm() * z1.norm())
    omega = torch.arccos(cos.clamp(-1 + 1e-7, 1 - 1e-7))
    t = t[:, None]
    return (torch.sin((1 - t) * omega) * z0 + torch.sin(t * omega) * z1) / torch.sin(omega)


@torch.no_grad()
def interpolation_grid(G: Generator, runtime: Runtime, steps: int = 8, seed: int = 0) -> np.ndarray:
    """uint8 [classes*S, steps*S, C]: row k = class k along one slerp path between two fixed noises.

    The same two noise vectors serve every row, so columns show what z controls (style) and rows what the
    label controls (class).
    """
    g = torch.Generator().manual_seed(seed)
    z0, z1 = torch.randn(2, G.cfg.z_dim, generator=g)
    path = slerp(z0, z1, torch.linspace(0, 1, steps))  # [steps, z_dim]
    k = G.cfg.num_classes
    z = path.repeat(k, 1).to(runtime.device)
    y = torch.arange(k).repeat_interleave(steps).to(runtime.device)
    with runtime.autocast():
        x = G.eval()(z, y)
    return image_grid(to_uint8(x), rows=k)


def image_grid(images: np.ndarray, rows: int) -> np.ndarray:
    """uint8 [N, S, S, C] -> one [rows*S, (N/rows)*S, C] tile, row-major (N divisible by rows)."""
    n, s, _, c = images.shape
    if n % rows:
        raise ValueError(f"cannot tile {n} images into {rows} equal rows")
    cols = n // rows
    return images.reshape(rows, cols, s, s, c).transpose(0, 2, 1, 3, 4).reshape(rows * s, cols * s, c)
