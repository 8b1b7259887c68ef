"""beta-VAE family: training (with KL annealing) and sampling, on top of the shared training loop."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from synthaug.core.config import Params
from synthaug.generators.base import GeneratorSpec, TrainResult
from synthaug.nets.vae import ConditionalVAE, VAEConfig
from synthaug.objectives.vae import annealed_beta, vae_loss
from synthaug.core.runtime import Runtime
from synthaug.core.storage import StorageError, load_checkpoint, load_state_strict
from synthaug.generators.training import BatchStream, run_training

# Besides this module, synthaug.generators.training and the stage (see generators/base.py).
TRAINING_CODE = ("synthaug.nets.vae", "synthaug.objectives.vae")


class VAETrainable:
    def __init__(self, model: ConditionalVAE, runtime: Runtime, lr: float, beta: float, anneal_steps: int):
        self.model, self.runtime = model, runtime
        self.opt = torch.optim.Adam(model.parameters(), lr=lr)
        self.beta, self.anneal_steps = beta, anneal_steps

    def train_step(self, images: torch.Tensor, labels: torch.Tensor, step: int) -> dict[str, float]:
        beta_t = annealed_beta(self.beta, step, self.anneal_steps)
        with self.runtime.autocast():
            logits, mu, logvar = self.model(images, labels)
        loss, recon, kl = vae_loss(logits, (images + 1) / 2, mu, logvar, beta_t)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"loss": loss.item(), "recon": recon.item(), "kl": kl.item(), "beta_t": beta_t}

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])


def train(spec: GeneratorSpec, params: Params, runtime: Runtime, checkpoint: Path,
          log_metrics: Callable[[dict, int], None], family: str = "vae", fingerprint: str = "") -> TrainResult:
    p = params.vae
    cfg = VAEConfig(channels=spec.channels, num_classes=spec.num_classes, image_size=spec.image_size,
                    latent_dim=p.latent_dim, base_channels=p.base_channels)
    model = runtime.prepare(ConditionalVAE(cfg))
    stream = BatchStream(spec.images, spec.labels, p.batch_size, seed=params.seed)
    total = p.epochs * stream.per_epoch
    trainable = VAETrainable(model, runtime, p.lr, params.beta, round(p.beta_anneal_epochs * stream.per_epoch))
    history = run_training(trainable, stream, runtime, total, checkpoint, p.checkpoint_every, log_metrics,
                           log_every=p.log_every, desc="train vae",
                           extra_state=lambda: {"config": cfg.to_dict(), "family": "vae"},
                           fingerprint=fingerprint)
    return TrainResult(steps=total, history=history, summary={"final_loss": history[-1]["loss"],
                                                              "final_recon": history[-1]["recon"],
                                                              "final_kl": history[-1]["kl"]})


def load_sampler(checkpoint: Path, runtime: Runtime, params: Params, source: str):
    """Return f(labels, generator) -> images in [-1, 1] from the decoder with z ~ N(0, I)."""
    state = load_checkpoint(checkpoint, map_location="cpu")
    if state.get("family") != "vae":
        raise StorageError(f"{checkpoint}: holds a '{state.get('family')}' model, not 'vae'")
    cfg = VAEConfig(**state["config"])
    model = ConditionalVAE(cfg)
    load_state_strict(model, state["trainable"]["model"], checkpoint)
    model = runtime.prepare(model).eval()

    @torch.no_grad()
    def sample(labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        z = torch.randn(len(labels), cfg.latent_dim, generator=gen).to(runtime.device)
        with runtime.autocast():
            logits = model.decode(z, labels.to(runtime.device))
        return torch.sigmoid(logits.float()) * 2 - 1

    return sample, {"latent_dim": cfg.latent_dim}
