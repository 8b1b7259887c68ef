"""Grad-CAM of a classifier on fixed real images, and two numbers that say where it looks.

The maps come from the `grad-cam` package (pytorch-grad-cam: hooks on the chosen layer, channel weights from
the spatially averaged gradients of the target class, ReLU, upsampled to the image and scaled to [0, 1] per
image). The statistics are ours (README "Analyses beside FID"):

- foreground share: the share of a map's mass (the map divided by its sum) on the object's pixels; the object
  mask is the pixels brighter than `threshold` x the image's maximum (the default data are objects on a black
  background, so this mask is the object; for photographs, pass masks from elsewhere). A map spread evenly
  scores the mask's area share; one that looks only at the object scores 1.
- entropy: Shannon entropy of the normalised map over log(its pixel count): 1 for a uniform map, 0 for a map on one
  pixel. Lower means more focused.
- agreement with a reference classifier (the `real` arm's): the Pearson correlation of the two maps of the same
  image, averaged over images: 1 where both look at the same places in the same proportions.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def target_layer(model: nn.Module) -> nn.Module:
    """The last convolutional block of our classifiers (synthaug.nets.resnet): where Grad-CAM is usually taken."""
    if hasattr(model, "features"):  # CifarResNet: stem -> features (BasicBlocks) -> head
        return model.features[-1]
    if hasattr(model, "layer4"):  # torchvision's ResNet-18
        return model.layer4[-1]
    raise ValueError(f"no known last block in {type(model).__name__}: pass the layer explicitly")


def grad_cams(model: nn.Module, x: torch.Tensor, classes: np.ndarray, layer: nn.Module | None = None,
              batch_size: int = 100) -> np.ndarray:
    """Grad-CAM maps (N, H, W) in [0, 1] of `model` for images `x` (N, C, H, W, the model's input range), each
    for its class in `classes` (the true label: where the model looks for the right answer)."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model.eval()
    out = []
    with GradCAM(model=model, target_layers=[layer or target_layer(model)]) as cam:
        for i in range(0, len(x), batch_size):
            targets = [ClassifierOutputTarget(int(c)) for c in classes[i:i + batch_size]]
            out.append(cam(input_tensor=x[i:i + batch_size], targets=targets))
    return np.concatenate(out).astype(np.float32)


def foreground_masks(images: np.ndarray, threshold: float = 0.1) -> np.ndarray:
    """Object masks (N, H, W) of uint8 images (N, H, W, C): pixels above threshold x the image's maximum."""
    gray = images.astype(np.float32).mean(axis=-1)
    peak = gray.reshape(len(gray), -1).max(axis=1).reshape(-1, 1, 1)
    return gray > threshold * np.maximum(peak, 1e-6)


def per_image_stats(cams: np.ndarray, masks: np.ndarray) -> dict[str, np.ndarray]:
    """Per map (N, H, W) against its mask (N, H, W): `live` (the map has any mass: positive evidence for the class),
    and, nan where not live, `foreground_share` and normalised `entropy` (module docstring)."""
    flat = cams.reshape(len(cams), -1).astype(np.float64)
    mass = flat.sum(axis=1)
    live = mass > 0
    p = flat / np.where(live, mass, 1.0)[:, None]
    share = (p * masks.reshape(len(masks), -1)).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1) / np.log(p.shape[1])
    return {"live": live, "foreground_share": np.where(live, share, np.nan), "entropy": np.where(live, ent, np.nan)}


def attention_stats(cams: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    """Mean foreground share and mean normalised entropy of maps (N, H, W) against masks (N, H, W); maps that
    are zero everywhere (no positive evidence for the class) are counted in `empty_share` and left out."""
    return _means(per_image_stats(cams, masks))


def _means(s: dict[str, np.ndarray]) -> dict[str, float]:
    live = s["live"]
    return {"foreground_share": float(np.nanmean(s["foreground_share"])) if live.any() else float("nan"),
            "entropy": float(np.nanmean(s["entropy"])) if live.any() else float("nan"),
            "empty_share": float(1 - live.mean())}


def map_agreement(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of maps a[i] and b[i] (N, H, W) per image; nan where either map is constant."""
    x = a.reshape(len(a), -1).astype(np.float64)
    y = b.reshape(len(b), -1).astype(np.float64)
    x, y = x - x.mean(axis=1, keepdims=True), y - y.mean(axis=1, keepdims=True)
    norm = np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(norm > 0, (x * y).sum(axis=1) / norm, np.nan)


def compare_to_reference(cams: dict[str, np.ndarray], masks: np.ndarray, reference: str = "real") -> dict[str, dict]:
    """Per arm (name -> maps of the same images): its attention statistics, and against the reference arm's maps of
    the same images: the mean agreement and the paired difference in foreground share with its 95 % t-interval over
    the images where both maps are live."""
    from synthaug.study.study_stats import mean_ci

    ref = per_image_stats(cams[reference], masks)
    out = {}
    for arm, maps in cams.items():
        s = per_image_stats(maps, masks)
        both = s["live"] & ref["live"]
        diff, ci = mean_ci(list(s["foreground_share"][both] - ref["foreground_share"][both])) if both.sum() else \
            (float("nan"), float("nan"))
        agreement = map_agreement(maps, cams[reference])
        out[arm] = {**_means(s),
                    "foreground_share_vs_real": diff, "foreground_share_vs_real_ci95": ci,
                    "agreement_with_real": float(np.nanmean(agreement)) if np.isfinite(agreement).any()
                    else float("nan")}
    return out
