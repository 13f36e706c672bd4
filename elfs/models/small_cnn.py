"""A small conv net: fast enough on a CPU for tests and tiny pipelines on 8x8 .. 32x32 images."""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn_relu(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU blocks (width, 2*width, 4*width; the last two stride 2) + global mean pool + linear."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn_relu(in_channels, width, 1),
            _conv_bn_relu(width, 2 * width, 2),
            _conv_bn_relu(2 * width, 4 * width, 2),
        )
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # mean over H, W instead of AdaptiveAvgPool2d: same result, deterministic backward on CUDA
        return self.fc(self.features(x).mean(dim=(2, 3)))
