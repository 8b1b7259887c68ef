"""ResNet classifiers for small images, built from torchvision's blocks.

- `resnet18`: torchvision's ResNet-18 with the CIFAR stem (3x3 stride-1 conv, no max-pool), as used for
  32x32 inputs; 11M parameters, the GPU-profile choice.
- `resnet20` / `resnet32`: the CIFAR ResNets of He et al. 2016 (§4.2): three stages of n BasicBlocks with
  16/32/64 channels (n = 3 or 5); 0.27M / 0.46M parameters.
- `resnet8`: the same family with n = 1 (0.08M parameters, about a third of resnet20's compute): the laptop
  choice for the scarce regime, where a few hundred to a few thousand real images do not need more depth.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet18
from torchvision.models.resnet import BasicBlock

ARCHS = ("resnet8", "resnet20", "resnet32", "resnet18")


class CifarResNet(nn.Module):
    def __init__(self, blocks_per_stage: int, in_channels: int, num_classes: int, widths=(16, 32, 64)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        layers, cin = [], widths[0]
        for i, w in enumerate(widths):
            for b in range(blocks_per_stage):
                stride = 2 if (i > 0 and b == 0) else 1
                down = None
                if stride != 1 or cin != w:  # projection shortcut (option B)
                    down = nn.Sequential(nn.Conv2d(cin, w, 1, stride, bias=False), nn.BatchNorm2d(w))
                layers.append(BasicBlock(cin, w, stride, down))
                cin = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.stem(x)))


def build_classifier(arch: str, in_channels: int, num_classes: int) -> nn.Module:
    if arch == "resnet8":
        return CifarResNet(1, in_channels, num_classes)
    if arch == "resnet20":
        return CifarResNet(3, in_channels, num_classes)
    if arch == "resnet32":
        return CifarResNet(5, in_channels, num_classes)
    if arch == "resnet18":
        net = resnet18(num_classes=num_classes)
        net.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)  # CIFAR stem for 32x32 inputs
        net.maxpool = nn.Identity()
        return net
    raise ValueError(f"unknown classifier arch '{arch}' (known: {', '.join(ARCHS)})")
