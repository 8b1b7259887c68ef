"""The beta-VAE objective and its KL-weight annealing schedule."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def annealed_beta(beta: float, step: int, anneal_steps: int) -> float:
    """KL weight at `step`: linear from 0 to `beta` over `anneal_steps` (Bowman et al. 2016), then flat.

    Starting at 0 lets the decoder learn to use z before the KL term pulls q(z|x) onto the prior,
    which avoids posterior collapse early in training.
    """
    if anneal_steps <= 0:
        return beta
    return beta * min(1.0, step / anneal_steps)


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) summed over latent dims, per example: 0.5 * sum(mu^2 + s^2 - log s^2 - 1)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0).sum(dim=1)


def bernoulli_nll(logits: torch.Tensor, target01: torch.Tensor) -> torch.Tensor:
    """-log p(x | z) under a per-pixel Bernoulli with targets in [0, 1], summed over pixels, per example."""
    return F.binary_cross_entropy_with_logits(logits, target01, reduction="none").flatten(1).sum(dim=1)


def vae_loss(logits, target01, mu, logvar, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, reconstruction, KL), each averaged over the batch: loss = recon + beta * KL."""
    recon = bernoulli_nll(logits.float(), target01.float()).mean()
    kl = kl_to_standard_normal(mu.float(), logvar.float()).mean()
    return recon + beta * kl, recon, kl
