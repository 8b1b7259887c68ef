"""Class-conditional U-Net that predicts the noise eps(x_t, t, y) (Ho et al. 2020, App. B; Dhariwal & Nichol 2021).

The network only: the noise schedule lives in `synthaug.objectives.diffusion`, the sampling loops in
`synthaug.generators.samplers`. Conditioning is one vector per image, `emb = MLP(sinusoid(t)) + c`, fed to every
residual block as a scale and shift of its second GroupNorm ("AdaGN", Dhariwal & Nichol 2021, §3).
`c` is the class embedding `class_embedding(y)`, a row of a (num_classes + 1)-entry table whose last row
is the "null" label of classifier-free guidance (Ho & Salimans 2022), or any vector of that space passed
as `cond=` (Diffusion Inversion learns such vectors; Zhou et al. 2023).

With `code_dim > 0` the class point is shifted by a per-image code, c = class_embedding(y) + W z, where
z = `encode(x_0)` in (-1, 1)^code_dim comes from a small encoder of the clean image trained with the U-Net
(the semantic encoder of diffusion autoencoders, Preechakul et al. 2022, shrunk). Training drops z (z = 0, the
class point itself) for a share of images, so class-only sampling still works; the network then responds to the
whole region {class_embedding(y) + W z}, which gives Diffusion Inversion a space with within-class structure.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class UNetConfig:
    channels: int = 1  # data channels (1 gray, 3 colour); also the output (eps) channels
    num_classes: int = 10  # real classes; the embedding table has one more row, the null label
    image_size: int = 32
    base_channels: int = 64
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 2])  # one level per entry
    num_res_blocks: int = 2
    attn_resolutions: list[int] = field(default_factory=lambda: [8])  # feature-map sizes with self-attention
    dropout: float = 0.1
    attn_head_channels: int = 32
    code_dim: int = 0  # >0: a per-image code from `encode(x_0)` shifts the class embedding (module docstring)
    prediction: str = "eps"  # what the output is: the noise eps, or v (synthaug.objectives.diffusion)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def emb_dim(self) -> int:
        """Width of the time/class conditioning vector (4x the base width, as in Ho et al. 2020)."""
        return 4 * self.base_channels


def _norm(ch: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups where the width allows it (Wu & He 2018), fewer for tiny test nets."""
    groups = next(g for g in (32, 16, 8, 4, 2, 1) if ch % g == 0)
    return nn.GroupNorm(groups, ch)


def _zero(module: nn.Module) -> nn.Module:
    """Zero-initialise a layer so that a residual branch starts as the identity."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of (integer) timesteps [B] -> [B, dim] (Vaswani et al. 2017, §3.5)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, then AdaGN: GN(h) * (1 + scale) + shift from the conditioning vector, SiLU-dropout-conv."""

    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2, self.drop = _norm(cout), nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.drop(F.silu(h)))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H*W positions of a feature map, as a residual branch."""

    def __init__(self, ch: int, head_channels: int):
        super().__init__()
        self.heads = max(1, ch // head_channels)
        if ch % self.heads:
            raise ValueError(f"attention width {ch} is not divisible into {self.heads} heads")
        self.norm = _norm(ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = _zero(nn.Conv2d(ch, ch, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class Downsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class CodeEncoder(nn.Module):
    """x_0 [B,C,H,W] -> z [B, code_dim] in (-1, 1): three strided convolutions, global pooling, tanh (bounded, so
    that inversion, interpolation and perturbation stay in the region the U-Net was trained on)."""

    def __init__(self, channels: int, base: int, code_dim: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, base, 3, padding=1), nn.SiLU(),
            nn.Conv2d(base, 2 * base, 4, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(2 * base, 4 * base, 4, stride=2, padding=1), nn.SiLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * base, code_dim), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _Level(nn.Module):
    """One resolution of the encoder or decoder: residual blocks, each optionally followed by attention."""

    def __init__(self, blocks: list[ResBlock], attn: list[nn.Module], resample: nn.Module | None):
        super().__init__()
        self.blocks, self.attn = nn.ModuleList(blocks), nn.ModuleList(attn)
        self.resample = resample


class UNet(nn.Module):
    """eps_theta(x_t, t, c): [B, C, H, W] -> [B, C, H, W], with skip connections between mirrored levels."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        levels = len(cfg.channel_mult)
        if not cfg.channel_mult or cfg.image_size % 2 ** (levels - 1):
            raise ValueError(f"image_size {cfg.image_size} cannot be halved {levels - 1} times "
                             f"(channel_mult {cfg.channel_mult})")
        self.cfg = cfg
        base, emb_dim = cfg.base_channels, cfg.emb_dim
        self.null_label = cfg.num_classes
        self.time_mlp = nn.Sequential(nn.Linear(base, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_emb = nn.Embedding(cfg.num_classes + 1, emb_dim)
        if cfg.code_dim < 0:
            raise ValueError(f"code_dim must be >= 0, got {cfg.code_dim}")
        if cfg.code_dim:
            self.code_encoder = CodeEncoder(cfg.channels, base, cfg.code_dim)
            self.code_proj = nn.Linear(cfg.code_dim, emb_dim, bias=False)  # no bias: z = 0 is the class point

        def attn(ch: int, res: int) -> nn.Module:
            return SelfAttention(ch, cfg.attn_head_channels) if res in cfg.attn_resolutions else nn.Identity()

        self.conv_in = nn.Conv2d(cfg.channels, base, 3, padding=1)
        skips, ch, res = [base], base, cfg.image_size
        self.down = nn.ModuleList()
        for i, mult in enumerate(cfg.channel_mult):
            blocks, attns = [], []
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResBlock(ch, base * mult, emb_dim, cfg.dropout))
                ch = base * mult
                attns.append(attn(ch, res))
                skips.append(ch)
            last = i == levels - 1
            self.down.append(_Level(blocks, attns, None if last else Downsample(ch)))
            if not last:
                skips.append(ch)
                res //= 2

        self.mid1 = ResBlock(ch, ch, emb_dim, cfg.dropout)
        self.mid_attn = SelfAttention(ch, cfg.attn_head_channels)
        self.mid2 = ResBlock(ch, ch, emb_dim, cfg.dropout)

        self.up = nn.ModuleList()
        for i, mult in reversed(list(enumerate(cfg.channel_mult))):
            blocks, attns = [], []
            for _ in range(cfg.num_res_blocks + 1):  # one more: it also consumes the downsampler's skip
                blocks.append(ResBlock(ch + skips.pop(), base * mult, emb_dim, cfg.dropout))
                ch = base * mult
                attns.append(attn(ch, res))
            self.up.append(_Level(blocks, attns, Upsample(ch) if i > 0 else None))
            if i > 0:
                res *= 2
        self.out = nn.Sequential(_norm(ch), nn.SiLU(), _zero(nn.Conv2d(ch, cfg.channels, 3, padding=1)))

    @property
    def cond_dim(self) -> int:
        """Size of a conditioning vector `cond` (the space the class embedding lives in)."""
        return self.cfg.emb_dim

    def class_embedding(self, y: torch.Tensor) -> torch.Tensor:
        """Conditioning vectors [B, cond_dim] of labels y [B]; y == num_classes is the null label."""
        return self.label_emb(y)

    def encode(self, x0: torch.Tensor) -> torch.Tensor:
        """Per-image codes z [B, code_dim] of clean images x0 [B,C,H,W] in [-1, 1] (needs code_dim > 0)."""
        if not self.cfg.code_dim:
            raise ValueError("this U-Net has no per-image code (code_dim 0)")
        return self.code_encoder(x0)

    def condition(self, y: torch.Tensor, code: torch.Tensor | None = None) -> torch.Tensor:
        """Conditioning vectors [B, cond_dim]: the class embedding of y, shifted by W code where a code is given."""
        c = self.class_embedding(y)
        if code is None:
            return c
        if not self.cfg.code_dim or code.shape != (len(y), self.cfg.code_dim):
            raise ValueError(f"code must be [{len(y)}, {self.cfg.code_dim}], got {list(code.shape)}")
        return c + self.code_proj(code.to(c.dtype))

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None,
                cond: torch.Tensor | None = None, code: torch.Tensor | None = None) -> torch.Tensor:
        """Predict eps (or v, per `cfg.prediction`) from x_t [B,C,H,W] and integer timesteps t [B], conditioned on
        labels y (with optional per-image codes) or on conditioning vectors cond."""
        if (y is None) == (cond is None):
            raise ValueError("pass exactly one of y (labels) or cond (conditioning vectors)")
        if cond is not None and code is not None:
            raise ValueError("a code shifts a label's embedding: pass it with y, not with cond")
        c = self.condition(y, code) if cond is None else cond
        if c.shape != (x.shape[0], self.cond_dim):
            raise ValueError(f"conditioning must be [{x.shape[0]}, {self.cond_dim}], got {list(c.shape)}")
        emb = self.time_mlp(timestep_embedding(t, self.cfg.base_channels)) + c

        h = self.conv_in(x)
        hs = [h]
        for level in self.down:
            for block, attn in zip(level.blocks, level.attn):
                h = attn(block(h, emb))
                hs.append(h)
            if level.resample is not None:
                h = level.resample(h)
                hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for level in self.up:
            for block, attn in zip(level.blocks, level.attn):
                h = attn(block(torch.cat([h, hs.pop()], dim=1), emb))
            if level.resample is not None:
                h = level.resample(h)
        return self.out(h)
