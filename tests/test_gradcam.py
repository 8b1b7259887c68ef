"""Grad-CAM (synthaug.metrics.gradcam): a model that only looks at one region gets its map there, and the
attention statistics against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from synthaug.metrics.gradcam import attention_stats, foreground_masks, grad_cams, target_layer
from synthaug.nets.resnet import build_classifier


class OneRegion(nn.Module):
    """Sees only rows/cols [r0, r1) of its input: everything else is multiplied by zero before any layer."""

    def __init__(self, r0: int, r1: int, size: int = 16, classes: int = 3):
        super().__init__()
        mask = torch.zeros(1, 1, size, size)
        mask[..., r0:r1, r0:r1] = 1
        self.register_buffer("mask", mask)
        torch.manual_seed(0)
        self.conv = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, classes))

    def forward(self, x):
        return self.head(self.conv(x * self.mask))


@pytest.mark.parametrize("r0,r1", [(0, 6), (9, 16)])
def test_a_model_that_looks_at_one_region_gets_its_map_there(r0, r1):
    torch.manual_seed(1)
    x = torch.rand(12, 1, 16, 16)
    model = OneRegion(r0, r1)
    with torch.no_grad():
        classes = model(x).argmax(1).numpy()  # the class it predicts: positive evidence exists for it
    cams = grad_cams(model, x, classes, layer=model.conv)
    assert cams.shape == (12, 16, 16) and cams.min() >= 0 and cams.max() <= 1
    region = np.zeros((12, 16, 16), bool)
    region[:, max(r0 - 1, 0):r1 + 1, max(r0 - 1, 0):r1 + 1] = True  # the 3x3 conv reaches one pixel past it
    stats = attention_stats(cams, region)
    assert stats["empty_share"] < 0.5
    assert stats["foreground_share"] > 0.9, stats  # the region is at most a quarter of the image
    assert region[0].mean() < 0.35


def test_attention_stats_by_hand():
    masks = np.zeros((2, 4, 4), bool)
    masks[:, :2, :] = True  # half of every image
    uniform = np.ones((1, 4, 4))
    one_pixel = np.zeros((1, 4, 4))
    one_pixel[0, 0, 0] = 1.0
    s = attention_stats(uniform, masks[:1])
    assert s["foreground_share"] == pytest.approx(0.5) and s["entropy"] == pytest.approx(1.0)
    s = attention_stats(one_pixel, masks[:1])
    assert s["foreground_share"] == pytest.approx(1.0) and s["entropy"] == pytest.approx(0.0)
    outside = np.zeros((1, 4, 4))
    outside[0, 3, :2] = 1.0  # two pixels, both outside the mask: share 0, entropy log 2 / log 16
    s = attention_stats(np.concatenate([outside, np.zeros((1, 4, 4))]), masks)
    assert s["foreground_share"] == 0.0 and s["entropy"] == pytest.approx(math.log(2) / math.log(16))
    assert s["empty_share"] == 0.5  # the all-zero map is left out of the means and counted here


def test_foreground_masks_follow_the_object():
    img = np.zeros((1, 8, 8, 1), np.uint8)
    img[0, 2:5, 3:6, 0] = 200
    img[0, 0, 0, 0] = 10  # faint noise below 10 % of the maximum
    m = foreground_masks(img)
    assert m.sum() == 9 and m[0, 2:5, 3:6].all()


def test_target_layer_of_every_classifier_arch():
    for arch in ("resnet8", "resnet18"):
        model = build_classifier(arch, 1, 10)
        layer = target_layer(model)
        x = torch.rand(2, 1, 28, 28)
        cams = grad_cams(model, x, np.array([3, 7]), layer=layer)
        assert cams.shape == (2, 28, 28) and np.isfinite(cams).all()
    with pytest.raises(ValueError, match="no known last block"):
        target_layer(nn.Linear(2, 2))
