"""An MLP classifier over precomputed embedding vectors."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """Linear(in_dim, width) - BatchNorm1d - ReLU - Linear(width, num_classes)."""

    def __init__(self, in_dim: int, num_classes: int, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, width),
            nn.BatchNorm1d(width),
            nn.ReLU(inplace=True),
            nn.Linear(width, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
