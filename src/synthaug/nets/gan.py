"""Class-conditional ResNet GAN for 32x32 images, shared by the `gan`, `lsgan` and `wgan_gp` objectives.

Architecture of SNGAN's CIFAR-10 ResNets (Miyato et al. 2018, Appendix B.4): G maps z through a linear
layer to 4x4 and three up-sampling residual blocks; D stacks two down-sampling and two plain residual
blocks, then ReLU, global sum-pooling and a linear output. Conditioning: conditional batch norm in G
(per-class gain and bias, de Vries et al. 2017) and a projection discriminator (Miyato & Koyama 2018,
eq. 3): D(x, y) = psi(phi(x)) + <embed(y), phi(x)>.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm


@dataclass
class GANConfig:
    channels: int = 1
    num_classes: int = 10
    image_size: int = 32
    z_dim: int = 128
    width: int = 64
    spectral_norm: bool = True  # in D only

    def to_dict(self) -> dict:
        return asdict(self)

    def check(self) -> None:
        s = self.image_size
        if s < 8 or s & (s - 1):
            raise ValueError(f"GAN image_size must be a power of two >= 8, got {s}")


def _init(module: nn.Module) -> nn.Module:
    # Xavier-uniform weights and zero biases, as in the SNGAN reference code.
    nn.init.xavier_uniform_(module.weight)
    if getattr(module, "bias", None) is not None:
        nn.init.zeros_(module.bias)
    return module


def _conv(cin: int, cout: int, k: int = 3) -> nn.Conv2d:
    return _init(nn.Conv2d(cin, cout, k, padding=k // 2))


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm without its own affine; per-class gain (init 1) and bias (init 0) from embeddings."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Embedding(num_classes, channels)
        self.bias = nn.Embedding(num_classes, channels)
        nn.init.ones_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.bn(x)
        return h * self.gain(y)[:, :, None, None].to(h.dtype) + self.bias(y)[:, :, None, None].to(h.dtype)


class ResBlockUp(nn.Module):
    """CBN-ReLU-up-conv3x3-CBN-ReLU-conv3x3, plus an up-sampled (1x1-conv when widths differ) shortcut."""

    def __init__(self, cin: int, cout: int, num_classes: int):
        super().__init__()
        self.bn1, self.bn2 = ConditionalBatchNorm2d(cin, num_classes), ConditionalBatchNorm2d(cout, num_classes)
        self.conv1, self.conv2 = _conv(cin, cout), _conv(cout, cout)
        self.skip = _conv(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(F.relu(self.bn1(x, y)), scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h), y)))
        return h + self.skip(F.interpolate(x, scale_factor=2, mode="nearest"))


class Generator(nn.Module):
    """z [N, z_dim], y [N] -> images [N, C, S, S] in [-1, 1] (tanh)."""

    def __init__(self, cfg: GANConfig):
        super().__init__()
        cfg.check()
        self.cfg, w = cfg, cfg.width
        self.linear = _init(nn.Linear(cfg.z_dim, 4 * 4 * w))
        n_up = int(math.log2(cfg.image_size)) - 2  # 4 -> 32 is three blocks
        self.blocks = nn.ModuleList(ResBlockUp(w, w, cfg.num_classes) for _ in range(n_up))
        self.out = nn.Sequential(nn.BatchNorm2d(w), nn.ReLU(), _conv(w, cfg.channels), nn.Tanh())

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.linear(z).view(len(z), self.cfg.width, 4, 4)
        for block in self.blocks:
            h = block(h, y)
        return self.out(h)


class ResBlockDown(nn.Module):
    """Pre-activation residual block of D; `first` skips the leading ReLU (it sees raw pixels)."""

    def __init__(self, cin: int, cout: int, down: bool, first: bool = False):
        super().__init__()
        self.down, self.first = down, first
        self.conv1, self.conv2 = _conv(cin, cout), _conv(cout, cout)
        self.skip = _conv(cin, cout, 1) if (cin != cout or down) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.first else F.relu(x)
        h = self.conv2(F.relu(self.conv1(h)))
        if self.down:
            h = F.avg_pool2d(h, 2)
        s = x
        if self.skip is not None:
            # The first block pools before its 1x1 conv (cheaper, same function); later ones after.
            if self.first:
                s = self.skip(F.avg_pool2d(s, 2) if self.down else s)
            else:
                s = self.skip(s)
                s = F.avg_pool2d(s, 2) if self.down else s
        return h + s


class Discriminator(nn.Module):
    """Projection discriminator: x [N, C, S, S], y [N] -> one unbounded score per image [N]."""

    def __init__(self, cfg: GANConfig):
        super().__init__()
        cfg.check()
        self.cfg, w = cfg, cfg.width
        n_down = int(math.log2(cfg.image_size)) - 3  # 32 -> 8 is two blocks
        blocks = [ResBlockDown(cfg.channels, w, down=True, first=True)]
        blocks += [ResBlockDown(w, w, down=True) for _ in range(n_down - 1)]
        blocks += [ResBlockDown(w, w, down=False) for _ in range(2)]
        self.blocks = nn.Sequential(*blocks)
        self.linear = _init(nn.Linear(w, 1))
        self.embed = nn.Embedding(cfg.num_classes, w)
        nn.init.xavier_uniform_(self.embed.weight)
        if cfg.spectral_norm:
            # Every weight of D, including the class embedding, as in Miyato & Koyama (2018).
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
                    _spectral_norm(m)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.blocks(x)).sum(dim=(2, 3))  # global sum-pooling -> phi(x) [N, w]
        return self.linear(h).squeeze(1) + (self.embed(y).to(h.dtype) * h).sum(dim=1)
