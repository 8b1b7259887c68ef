"""Sampling loops that turn noise into images, given only a noise predictor `eps_fn(x_t, t) -> eps`.

In the manner of diffusers' schedulers: a sampler is a small object holding a `NoiseSchedule` and a
timestep sequence; `step()` is one update whose docstring cites the paper's equations line by line, and
`sample()` is the loop. Samplers never touch a network: the generator family builds `eps_fn` (with the
class labels, autocast, optional classifier-free guidance and torch.compile) and hands it over, so
swapping DDPM for DDIM touches no model code. All update arithmetic runs in fp32 whatever eps_fn returns.

Convention: 0-based timesteps, t in {0..T-1} (the papers' t+1); abar "before step 0" is 1, so the last
update of either sampler returns the predicted x_0.
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from synthaug.objectives.diffusion import NoiseSchedule

log = logging.getLogger("synthaug")

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t [B,C,H,W], t [B] int64) -> eps [B,C,H,W]


def predict_x0(x_t: torch.Tensor, eps: torch.Tensor, abar_t: torch.Tensor) -> torch.Tensor:
    """x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t): Ho et al. eq. 4 solved for x_0 (Song et al. eq. 12's
    "predicted x_0" term)."""
    return (x_t - (1 - abar_t).sqrt() * eps) / abar_t.sqrt()


class _Sampler:
    """The loop shared by both samplers: x_T ~ N(0, I), then `step` along `self.timesteps` (descending)."""

    name = "sampler"
    timesteps: list[int]

    def __init__(self, schedule: NoiseSchedule, clip_x0: bool):
        self.schedule, self.clip_x0 = schedule, clip_x0

    def _x0(self, x_t: torch.Tensor, eps: torch.Tensor, abar_t: torch.Tensor) -> torch.Tensor:
        x0 = predict_x0(x_t, eps, abar_t)
        # Data live in [-1, 1]; clipping the prediction there is Ho et al.'s `clip_denoised` (their code, not the paper).
        return x0.clamp(-1, 1) if self.clip_x0 else x0

    def _coef(self, values: torch.Tensor, i: int, like: torch.Tensor) -> torch.Tensor:
        return torch.tensor(float(values[i]), dtype=like.dtype, device=like.device)

    def needs_noise(self, t: int) -> bool:
        """Whether the update at timestep t adds fresh Gaussian noise (so `sample` must draw z)."""
        raise NotImplementedError

    def step(self, eps: torch.Tensor, t: int, x_t: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, eps_fn: EpsFn, shape: tuple[int, ...], generator: torch.Generator | None = None,
               device: torch.device | str = "cpu", x_T: torch.Tensor | None = None,
               progress: bool = True) -> torch.Tensor:
        """Run the reverse process from x_T (drawn from `generator` unless given) to x_0; returns fp32 [B,C,H,W].

        Noise is drawn on the CPU from `generator` and then moved, so a seed gives the same images on any device.
        """
        def randn() -> torch.Tensor:
            return torch.randn(shape, generator=generator, dtype=torch.float32).to(device)

        x = randn() if x_T is None else x_T.to(device=device, dtype=torch.float32)
        for t in tqdm(self.timesteps, desc=self.name, disable=not progress, leave=False, dynamic_ncols=True,
                      mininterval=2.0):
            eps = eps_fn(x, torch.full((shape[0],), t, dtype=torch.long, device=device)).float()
            x = self.step(eps, t, x, randn() if self.needs_noise(t) else None)
        return x

    def describe(self) -> dict:
        raise NotImplementedError


class DDPMSampler(_Sampler):
    """Ancestral sampling over all T steps with the posterior variance beta-tilde (Ho et al. 2020, Alg. 2)."""

    name = "ddpm"

    def __init__(self, schedule: NoiseSchedule, clip_x0: bool = True):
        super().__init__(schedule, clip_x0)
        self.timesteps = list(range(schedule.timesteps - 1, -1, -1))

    def needs_noise(self, t: int) -> bool:
        return t > 0

    def step(self, eps: torch.Tensor, t: int, x_t: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        """One draw x_{t-1} ~ p_theta(x_{t-1} | x_t) = N(mu_tilde(x_t, x0_hat), beta-tilde_t I).

        x0_hat      = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)                              (eq. 4 inverted; eq. 15)
        mu_tilde    = sqrt(abar_{t-1}) beta_t / (1 - abar_t) x0_hat
                      + sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) x_t                        (eq. 7)
        x_{t-1}     = mu_tilde + sqrt(beta-tilde_t) z,  z ~ N(0, I), z = 0 at the last step     (Alg. 2, line 4;
                      sigma_t^2 = beta-tilde_t, the lower bound of §3.2)
        Without clipping, mu_tilde equals Alg. 2's 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - abar_t) eps) (eq. 11).
        """
        s = self.schedule
        abar_t, abar_prev = self._coef(s.alphas_cumprod, t, x_t), self._coef(s.alphas_cumprod_prev, t, x_t)
        beta_t, alpha_t = self._coef(s.betas, t, x_t), self._coef(s.alphas, t, x_t)
        x0 = self._x0(x_t, eps, abar_t)
        mean = (abar_prev.sqrt() * beta_t / (1 - abar_t)) * x0 + (alpha_t.sqrt() * (1 - abar_prev) / (1 - abar_t)) * x_t
        if z is None:
            return mean
        return mean + self._coef(s.posterior_variance, t, x_t).sqrt() * z

    def describe(self) -> dict:
        # DDPM with beta-tilde is DDIM with eta = 1 on the full sequence (Song et al. §4.1; tested).
        return {"sampler": "ddpm", "timesteps": self.schedule.timesteps, "steps": len(self.timesteps),
                "eta": 1.0, "variance": "beta_tilde", "clip_x0": self.clip_x0, "schedule": self.schedule.name}


def ddim_timesteps(timesteps: int, steps: int) -> list[int]:
    """The sub-sequence tau of Song et al. §4.2, descending: `steps` values spread evenly over [0, T-1].

    Both ends are kept: sampling starts at the noisiest training timestep T-1 (where x_T ~ N(0, I) matches what
    the net saw) and ends at t=0. steps >= T gives every timestep.
    """
    if steps < 1:
        raise ValueError(f"DDIM needs at least 1 step, got {steps}")
    taus = np.unique(np.linspace(0, timesteps - 1, min(steps, timesteps)).round().astype(np.int64))
    return [int(t) for t in taus[::-1]]


class DDIMSampler(_Sampler):
    """Denoising diffusion implicit model sampling (Song et al. 2021) over a sub-sequence of `steps` timesteps;
    eta = 0 is deterministic given x_T, eta = 1 on all T steps is DDPM."""

    name = "ddim"

    def __init__(self, schedule: NoiseSchedule, steps: int, eta: float = 0.0, clip_x0: bool = True):
        super().__init__(schedule, clip_x0)
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"DDIM eta must be in [0, 1], got {eta}")
        self.eta = float(eta)
        self.set_timesteps(steps)

    def set_timesteps(self, steps: int) -> None:
        """Choose the sub-sequence tau; `_prev[t]` is the next (less noisy) timestep, -1 meaning x_0."""
        self.timesteps = ddim_timesteps(self.schedule.timesteps, steps)
        self._prev = dict(zip(self.timesteps, self.timesteps[1:] + [-1]))

    def needs_noise(self, t: int) -> bool:
        return self.eta > 0 and self._prev[t] >= 0

    def step(self, eps: torch.Tensor, t: int, x_t: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        """One update x_{tau_i} -> x_{tau_{i-1}} (Song et al. 2021, eq. 12, with alpha there = our abar):

        x0_hat     = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)                        ("predicted x_0")
        sigma      = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev)  (eq. 16)
        x_prev     = sqrt(abar_prev) x0_hat                                             ("predicted x_0" term)
                     + sqrt(1 - abar_prev - sigma^2) eps                                ("direction pointing to x_t")
                     + sigma z,  z ~ N(0, I)                                            ("random noise")
        with abar_prev = 1 after the last step, so that step returns x0_hat.
        """
        s, t_prev = self.schedule, self._prev[t]
        abar_t = self._coef(s.alphas_cumprod, t, x_t)
        abar_prev = self._coef(s.alphas_cumprod, t_prev, x_t) if t_prev >= 0 else torch.ones_like(abar_t)
        x0 = self._x0(x_t, eps, abar_t)
        sigma = self.eta * ((1 - abar_prev) / (1 - abar_t)).sqrt() * (1 - abar_t / abar_prev).sqrt()
        x_prev = abar_prev.sqrt() * x0 + (1 - abar_prev - sigma**2).clamp(min=0).sqrt() * eps
        if z is not None:
            x_prev = x_prev + sigma * z
        return x_prev

    def describe(self) -> dict:
        return {"sampler": "ddim", "timesteps": self.schedule.timesteps, "steps": len(self.timesteps),
                "eta": self.eta, "timestep_spacing": "linspace", "clip_x0": self.clip_x0,
                "schedule": self.schedule.name}


CondEpsFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t, c) -> eps


def guided_eps_fn(model_fn: CondEpsFn, cond: torch.Tensor, null: int | torch.Tensor, scale: float) -> EpsFn:
    """Classifier-free guidance (Ho & Salimans 2022, eq. 6 rewritten with s = 1 + w):

        eps = eps(x_t, t, null) + s (eps(x_t, t, c) - eps(x_t, t, null))

    `cond` is what the model is conditioned on (class labels [B], or conditioning vectors [B, D] for Diffusion
    Inversion) and `null` its unconditional counterpart: the null label (an int), or a tensor of cond's shape
    (e.g. the mean learned embedding). s = 1 is plain conditional sampling and then is exactly `model_fn(x, t, cond)` (no unconditional
    pass); s = 0 is unconditional sampling. Otherwise both passes run as one batch of 2B.
    """
    if scale < 0:
        raise ValueError(f"guidance scale must be >= 0, got {scale}")
    if isinstance(null, int):
        null = torch.full_like(cond, null)
    if null.shape != cond.shape:
        raise ValueError(f"null conditioning {list(null.shape)} must match the conditioning {list(cond.shape)}")
    if scale == 1.0:
        return lambda x, t: model_fn(x, t, cond)
    if scale == 0.0:
        return lambda x, t: model_fn(x, t, null)

    def eps_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps_c, eps_u = model_fn(torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, null])).float().chunk(2)
        return eps_u + scale * (eps_c - eps_u)

    return eps_fn


class MaybeCompiled:
    """Call `torch.compile(fn)`; if compiling or running the compiled code fails, warn once and use `fn`.

    torch.compile is lazy (it compiles at the first call, and again for a new batch size), so the failure
    shows up on a call, not at construction. Off unless asked: the first call costs tens of seconds.
    """

    def __init__(self, fn: Callable, enabled: bool = True):
        self.fn, self.active = fn, enabled
        self.compiled = None
        if enabled:
            try:
                self.compiled = torch.compile(fn)
            except Exception as e:  # e.g. an unsupported Python version or platform
                self._fall_back(e)

    def _fall_back(self, e: Exception) -> None:
        log.warning("torch.compile failed (%s: %s); sampling without it", type(e).__name__, str(e).splitlines()[0]
                    if str(e) else "")
        self.active, self.compiled = False, None

    def __call__(self, *args, **kwargs):
        if self.active:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as e:  # compiler/toolchain errors surface here
                self._fall_back(e)
        return self.fn(*args, **kwargs)
