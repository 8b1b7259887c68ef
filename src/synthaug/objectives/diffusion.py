"""The forward (noising) process of a DDPM and its training objective (Ho et al. 2020).

Indexing: timesteps are 0-based, t in {0, ..., T-1}; our t is the papers' t+1. So
`alphas_cumprod[t]` = abar_{t+1} = prod_{s<=t} (1 - beta_s), and "abar before step 0" is 1.
The schedule holds only numbers (float64, on CPU); it never sees a network. Sampling loops that
invert it are in `synthaug.generators.samplers`.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

SCHEDULES = ("linear", "cosine")
MAX_BETA = 0.999  # clip, as Nichol & Dhariwal (2021) do, so that no step destroys all signal at once


def linear_betas(timesteps: int) -> torch.Tensor:
    """beta_t linear from 1e-4 to 0.02 at T = 1000 (Ho et al. 2020, §4), rescaled by 1000/T for other T.

    The rescaling (as in Nichol & Dhariwal's code) keeps sum(beta), hence abar_T ~ exp(-sum beta) ~ 4e-5,
    roughly constant: without it a short schedule (T=100) would end at abar_T ~ 0.37, far from pure noise.
    """
    scale = 1000.0 / timesteps
    betas = torch.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=torch.float64)
    return betas.clamp(max=MAX_BETA)


def cosine_betas(timesteps: int, s: float = 0.008) -> torch.Tensor:
    """Cosine schedule (Nichol & Dhariwal 2021, eq. 17): abar(t) = f(t)/f(0), f(t) = cos(((t/T + s)/(1 + s)) pi/2)^2,
    and beta_t = 1 - abar_t / abar_{t-1}, clipped to 0.999."""
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    abar = f / f[0]
    return (1 - abar[1:] / abar[:-1]).clamp(max=MAX_BETA)


class NoiseSchedule:
    """beta_t and the quantities derived from it; `q_sample` draws x_t ~ q(x_t | x_0) in closed form."""

    def __init__(self, betas: torch.Tensor, name: str = "custom"):
        betas = betas.to(torch.float64).cpu()
        if betas.dim() != 1 or len(betas) < 2 or not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("betas must be a 1-d sequence of at least 2 values in (0, 1)")
        self.name = name
        self.betas = betas
        self.alphas = 1.0 - betas  # alpha_t = 1 - beta_t
        self.alphas_cumprod = torch.cumprod(self.alphas, 0)  # abar_t = prod_{s<=t} alpha_s
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        # beta-tilde_t = (1 - abar_{t-1}) / (1 - abar_t) * beta_t: variance of q(x_{t-1} | x_t, x_0) (Ho et al. eq. 7)
        self.posterior_variance = (1 - self.alphas_cumprod_prev) / (1 - self.alphas_cumprod) * betas

    @classmethod
    def make(cls, name: str, timesteps: int) -> "NoiseSchedule":
        """The named schedule ('linear' or 'cosine') with T = `timesteps`."""
        if name == "linear":
            return cls(linear_betas(timesteps), name)
        if name == "cosine":
            return cls(cosine_betas(timesteps), name)
        raise ValueError(f"unknown noise schedule '{name}' (known: {', '.join(SCHEDULES)})")

    @property
    def timesteps(self) -> int:
        return len(self.betas)

    def describe(self) -> dict:
        return {"schedule": self.name, "timesteps": self.timesteps,
                "abar_last": float(self.alphas_cumprod[-1]), "beta_first": float(self.betas[0]),
                "beta_last": float(self.betas[-1])}

    @staticmethod
    def gather(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """values[t] reshaped to broadcast over an image batch `like` ([B] -> [B, 1, 1, 1]), in its dtype/device."""
        out = values.to(like.device)[t.to(like.device)].to(like.dtype)
        return out.view(-1, *([1] * (like.dim() - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, eps ~ N(0, I) (Ho et al. eq. 4, reparameterised)."""
        abar = self.gather(self.alphas_cumprod, t, x0)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise


def drop_labels(y: torch.Tensor, p: float, null_label: int) -> torch.Tensor:
    """Replace each label by the null label with probability p, so that one network also learns the
    unconditional eps(x_t, t, null) that classifier-free guidance needs (Ho & Salimans 2022, Alg. 1)."""
    if p <= 0:
        return y
    drop = torch.rand(y.shape, device=y.device) < p
    return torch.where(drop, torch.full_like(y, null_label), y)


PREDICTIONS = ("eps", "v")


def check_prediction(prediction: str) -> None:
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction target '{prediction}' (known: {', '.join(PREDICTIONS)})")


def v_target(x0: torch.Tensor, noise: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0 (Salimans & Ho 2022, §4): the velocity target."""
    return abar.sqrt() * noise - (1 - abar).sqrt() * x0


def eps_from_output(out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, schedule: NoiseSchedule,
                    prediction: str) -> torch.Tensor:
    """The network's output as a noise prediction, whatever it was trained to predict, so that the samplers only
    ever see eps: for v, eps = sqrt(1 - abar_t) x_t + sqrt(abar_t) v (substitute x_t = sqrt(abar) x_0 +
    sqrt(1 - abar) eps into v's definition). Computed in fp32."""
    check_prediction(prediction)
    if prediction == "eps":
        return out
    abar = schedule.gather(schedule.alphas_cumprod, t, x_t.float())
    return (1 - abar).sqrt() * x_t.float() + abar.sqrt() * out.float()


def diffusion_loss(model: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
                   schedule: NoiseSchedule, x0: torch.Tensor, y: torch.Tensor,
                   label_dropout: float, null_label: int, prediction: str = "eps") -> torch.Tensor:
    """L_simple = E_{t, x_0, eps} || target - model(sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, t) ||^2 with target eps
    (Ho et al. eq. 14) or v (Salimans & Ho 2022), t uniform over all T steps, averaged over pixels; in fp32.

    Why v is offered: an eps-predictor's implied x_0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar) amplifies its
    error by 1 / sqrt(abar_t), which a short cosine schedule drives to ~2,000 at its last step; v keeps x_0's
    error bounded at every t. `model(x_t, t, y)` may run under autocast; its output is upcast before the loss.
    Randomness (t, eps, dropped labels) comes from torch's global RNG, which the training checkpoint saves.
    """
    check_prediction(prediction)
    t = torch.randint(0, schedule.timesteps, (x0.shape[0],), device=x0.device)
    noise = torch.randn_like(x0)
    x_t = schedule.q_sample(x0, t, noise)
    pred = model(x_t, t, drop_labels(y, label_dropout, null_label))
    target = noise if prediction == "eps" else v_target(x0, noise, schedule.gather(schedule.alphas_cumprod, t, x0))
    return F.mse_loss(pred.float(), target.float())
