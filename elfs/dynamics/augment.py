"""Batched image augmentation on the training device: uint8 -> normalised float, reflect-padded random crop, flip.

Equivalent to torchvision's RandomCrop(size=(H, W), padding=p, padding_mode="reflect") + RandomHorizontalFlip +
Normalize applied per sample, but done for a whole [B, C, H, W] batch at once with per-sample random offsets,
so that no CPU worker pool is needed to feed a GPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def normalize_uint8(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Map uint8 images [B, C, H, W] to float32 (x / 255 - mean[c]) / std[c]."""
    if x.dtype != torch.uint8:
        raise ValueError(f"normalize_uint8 expects a uint8 batch, got dtype {x.dtype}")
    if x.ndim != 4 or mean.numel() != x.shape[1] or std.numel() != x.shape[1]:
        raise ValueError(
            f"expected [B, C, H, W] with C == len(mean) == len(std); got shape {tuple(x.shape)}, "
            f"{mean.numel()} means, {std.numel()} stds"
        )
    mean = mean.to(device=x.device, dtype=torch.float32).view(1, -1, 1, 1)
    std = std.to(device=x.device, dtype=torch.float32).view(1, -1, 1, 1)
    return (x.to(torch.float32) / 255.0 - mean) / std


def sample_crop_params(
    index: torch.Tensor, padding: int, hflip: bool, *, seed: int, epoch: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-example (top, left) offsets in [0, 2*padding] and flip flags (p = 0.5) on ``index``'s device, a function
    of (seed, epoch, example index) alone (elfs/sampling.py): the same crop on any device and any number of DDP
    ranks, and after a resume."""
    from elfs.sampling import counter_randint

    top = counter_randint(seed, epoch, index, 0, 2 * padding + 1)
    left = counter_randint(seed, epoch, index, 1, 2 * padding + 1)
    if hflip:
        flip = counter_randint(seed, epoch, index, 2, 2) == 1
    else:
        flip = torch.zeros(index.shape, dtype=torch.bool, device=index.device)
    return top, left, flip


def crop_flip(x: torch.Tensor, padding: int, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Reflect-pad [B, C, H, W] by `padding`, cut the H x W window at (top[b], left[b]), mirror rows with flip[b]."""
    b, c, h, w = x.shape
    if padding > 0:
        x = F.pad(x, (padding, padding, padding, padding), mode="reflect")
    dev = x.device
    top, left, flip = top.to(dev), left.to(dev), flip.to(dev)
    rows = top.view(b, 1) + torch.arange(h, device=dev).view(1, h)  # [B, H]
    cols_fwd = torch.arange(w, device=dev).view(1, w)
    cols = left.view(b, 1) + torch.where(flip.view(b, 1), (w - 1) - cols_fwd, cols_fwd)  # [B, W]
    bi = torch.arange(b, device=dev).view(b, 1, 1, 1)
    ci = torch.arange(c, device=dev).view(1, c, 1, 1)
    return x[bi, ci, rows.view(b, 1, h, 1), cols.view(b, 1, 1, w)]


def random_crop_flip(
    x: torch.Tensor, padding: int, hflip: bool, *, index: torch.Tensor, seed: int, epoch: int
) -> torch.Tensor:
    """Random reflect-padded crop (same size as the input) and optional horizontal flip of each example, drawn
    from (seed, epoch, its dataset ``index``)."""
    if x.ndim != 4:
        raise ValueError(f"expected a [B, C, H, W] batch, got shape {tuple(x.shape)}")
    padding = int(padding)
    if padding < 0 or (padding > 0 and padding >= min(x.shape[2], x.shape[3])):
        raise ValueError(
            f"crop padding must be in [0, min(H, W)) for reflect padding, got {padding} for {tuple(x.shape[2:])}"
        )
    if padding == 0 and not hflip:
        return x
    if index.shape != (x.shape[0],):
        raise ValueError(f"need one dataset index per image, got {tuple(index.shape)} for a batch of {x.shape[0]}")
    top, left, flip = sample_crop_params(index.to(x.device), padding, hflip, seed=seed, epoch=epoch)
    return crop_flip(x, padding, top, left, flip)


class BatchImageTransform(nn.Module):
    """uint8 [B, C, H, W] -> normalised float; in training also random crop (reflect padding) and flip."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], padding: int = 0, hflip: bool = False) -> None:
        super().__init__()
        if len(mean) != len(std) or len(mean) == 0:
            raise ValueError(f"mean and std need one value per channel, got {list(mean)} and {list(std)}")
        if any(float(s) <= 0 for s in std):
            raise ValueError(f"std values must be > 0, got {list(std)}")
        if int(padding) < 0:
            raise ValueError(f"crop padding must be >= 0, got {padding}")
        self.register_buffer("mean", torch.tensor([float(v) for v in mean], dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor([float(v) for v in std], dtype=torch.float32), persistent=False)
        self.padding = int(padding)
        self.hflip = bool(hflip)

    def forward(
        self, x: torch.Tensor, train: bool, index: torch.Tensor | None = None, *, seed: int = 0, epoch: int = 0
    ) -> torch.Tensor:
        """``train`` needs ``index`` (the examples' dataset indices): each one's crop is a function of them."""
        out = normalize_uint8(x, self.mean, self.std)
        if train:
            if index is None:
                raise ValueError("training augmentation needs the examples' dataset indices")
            out = random_crop_flip(out, self.padding, self.hflip, index=index, seed=seed, epoch=epoch)
        return out
