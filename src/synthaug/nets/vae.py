"""Class-conditional convolutional VAE for 32x32 images (Kingma & Welling 2014; beta-VAE, Higgins et al. 2017).

The label enters the encoder as a one-hot vector beside the flattened features and the decoder beside z,
so q(z | x, y) and p(x | z, y): sampling z ~ N(0, I) with a chosen y gives an image of class y.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class VAEConfig:
    channels: int = 1
    num_classes: int = 10
    image_size: int = 32
    latent_dim: int = 64
    base_channels: int = 64

    def to_dict(self) -> dict:
        return asdict(self)


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2))


def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class ConditionalVAE(nn.Module):
    """Encoder: 3 stride-2 convs to 4x4 -> (mu, log sigma^2). Decoder: mirror with transposed convs -> logits."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        if cfg.image_size % 8:
            raise ValueError(f"image_size must be a multiple of 8, got {cfg.image_size}")
        self.cfg = cfg
        b, s = cfg.base_channels, cfg.image_size // 8
        self.feat_shape = (4 * b, s, s)
        feat = 4 * b * s * s
        self.encoder = nn.Sequential(_down(cfg.channels, b), _down(b, 2 * b), _down(2 * b, 4 * b), nn.Flatten())
        self.to_stats = nn.Linear(feat + cfg.num_classes, 2 * cfg.latent_dim)
        self.from_latent = nn.Sequential(nn.Linear(cfg.latent_dim + cfg.num_classes, feat), nn.ReLU())
        self.decoder = nn.Sequential(_up(4 * b, 2 * b), _up(2 * b, b),
                                     nn.ConvTranspose2d(b, cfg.channels, 4, 2, 1))

    def _onehot(self, y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.one_hot(y, self.cfg.num_classes).to(like.dtype)

    def encode(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        mu, logvar = self.to_stats(torch.cat([h, self._onehot(y, h)], 1)).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Pixel logits (Bernoulli parameters of x in [0, 1])."""
        h = self.from_latent(torch.cat([z, self._onehot(y, z)], 1))
        return self.decoder(h.view(-1, *self.feat_shape))

    def forward(self, x: torch.Tensor, y: torch.Tensor):
        mu, logvar = self.encode(x, y)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()  # reparameterization trick
        return self.decode(z, y), mu, logvar
