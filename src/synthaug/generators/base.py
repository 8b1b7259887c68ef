"""What every generator family provides, and which family/sampler each synthetic source uses.

A family module (e.g. `synthaug.generators.vae`) exposes
- `train(spec, params, runtime, checkpoint, log_metrics, family=..., fingerprint=...) -> TrainResult`:
  trains `family` (one module may serve several, e.g. the three GAN objectives) with `params.<family>`, resuming
  from `checkpoint` if present and made with the same `fingerprint`, see `training.run_training`) and
  leaves the final checkpoint there (a plain dict with a "config" entry);
- `load_sampler(checkpoint, runtime, params, source) -> (sample_fn, settings)`: `sample_fn(labels,
  torch.Generator) -> float images in [-1, 1]`, `settings` a flat dict recorded in the shard manifest;
- `TRAINING_CODE`: the other modules whose source defines what it trains (its nets, objective...). With the
  module itself, `synthaug.generators.training` and the stage, they are the stage's code deps in dvc.yaml, and their
  content is part of the checkpoint's fingerprint (a test keeps the two lists equal).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType

import numpy as np

# family -> module; source -> family (two diffusion samplers share one trained model; dinv steers it)
FAMILIES = {"vae": "synthaug.generators.vae", "gan": "synthaug.generators.gan",
            "lsgan": "synthaug.generators.gan", "wgan_gp": "synthaug.generators.gan",
            "diffusion": "synthaug.generators.diffusion"}
# Families made by another stage than `train`, with that stage: Diffusion Inversion steers the trained diffusion
# model with vectors the `invert` stage learns.
DERIVED = {"dinv": ("synthaug.generators.inversion", "invert")}  # (module, the stage that makes it)
SOURCE_FAMILY = {"vae": "vae", "gan": "gan", "lsgan": "lsgan", "wgan_gp": "wgan_gp",
                 "ddpm": "diffusion", "ddim": "diffusion", "dinv": "dinv"}


@dataclass
class GeneratorSpec:
    """The real training data a generator learns from, with its shape."""

    images: np.ndarray  # uint8 [N, H, W, C]
    labels: np.ndarray  # int64 [N]
    num_classes: int

    @property
    def channels(self) -> int:
        return int(self.images.shape[3])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])


@dataclass
class TrainResult:
    steps: int
    history: list[dict] = field(default_factory=list)
    summary: dict[str, float] = field(default_factory=dict)
    images: dict[str, np.ndarray] = field(default_factory=dict)  # uint8 grids to log, e.g. "interpolation.png"


def family_module(family: str) -> ModuleType:
    if family in DERIVED:
        return importlib.import_module(DERIVED[family][0])
    if family not in FAMILIES:
        raise ValueError(f"unknown generator family '{family}' (known: {', '.join(FAMILIES)})")
    return importlib.import_module(FAMILIES[family])


def source_family(source: str) -> str:
    if source not in SOURCE_FAMILY:
        raise ValueError(f"unknown source '{source}' (known: {', '.join(SOURCE_FAMILY)})")
    return SOURCE_FAMILY[source]


def training_code(module: ModuleType, stage: str) -> tuple[str, ...]:
    """The modules whose source defines what `module` trains when run by the stage module `stage`."""
    # data.fractions picks the real images it learns from (the generator_fraction subset); arrays maps its pixels
    # into the nets' range.
    return (stage, "synthaug.generators.training", "synthaug.core.arrays", "synthaug.data.fractions", module.__name__,
            *module.TRAINING_CODE)
