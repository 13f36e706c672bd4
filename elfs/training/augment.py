"""Image augmentation. On the training device: uint8 -> normalised float, reflect-padded random crop, flip.

Equivalent to torchvision's RandomCrop(size=(H, W), padding=p, padding_mode="reflect") + RandomHorizontalFlip +
Normalize applied per sample, but done for a whole [B, C, H, W] batch at once with per-sample random offsets,
so that no CPU worker pool is needed to feed a GPU.

For streamed ImageNet-style sources (``crop=random_resized``) also the standard RandomResizedCrop (scale
(0.08, 1), ratio (3/4, 4/3)) + flip of one decoded image, in a DataLoader worker (:func:`random_resized_crop_flip`),
and the test-time Resize(S / 0.875) + CenterCrop(S) (:func:`center_crop`). Every draw is a function of (seed,
epoch, example index) alone (elfs/infra/sampling.py), like the padded crop's.
"""

from __future__ import annotations

import math
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
    of (seed, epoch, example index) alone (elfs/infra/sampling.py): the same crop on any device and any number of DDP
    ranks, and after a resume."""
    from elfs.infra.sampling import counter_randint

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


# ------------------------------------------------------------------ RandomResizedCrop (streamed sources)
#: torchvision's RandomResizedCrop defaults, the standard ImageNet recipe
RRC_SCALE = (0.08, 1.0)
RRC_RATIO = (3.0 / 4.0, 4.0 / 3.0)
RRC_ATTEMPTS = 10  # as torchvision: 10 tries, then the central crop of the clamped aspect ratio
#: test-time centre-crop ratio: Resize(round(S / 0.875)) + CenterCrop(S), 256 -> 224 at S = 224
CENTER_CROP_RATIO = 0.875
_FLIP_STREAM = 2  # the flip's counter-hash stream, as in `sample_crop_params`
_RRC_STREAM = 16  # attempt a uses streams 16 + 4a ... 16 + 4a + 3 (area, aspect, top, left)


def _uniform(seed: int, epoch: int, index: torch.Tensor, stream: int) -> torch.Tensor:
    """float64 uniforms in [0, 1) from the 32-bit counter hash."""
    from elfs.infra.sampling import counter_hash

    return counter_hash(seed, epoch, index, stream).to(torch.float64) / 4294967296.0


def random_resized_crop_params(
    index: torch.Tensor,
    height: torch.Tensor | int,
    width: torch.Tensor | int,
    *,
    seed: int,
    epoch: int,
    scale: tuple[float, float] = RRC_SCALE,
    ratio: tuple[float, float] = RRC_RATIO,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(top, left, h, w) int64 of RandomResizedCrop for images of ``height`` x ``width`` (per example or one size),
    a pure function of (seed, epoch, ``index``): torchvision's `RandomResizedCrop.get_params` with its uniform
    draws taken from counter hashes - area fraction ~ U(scale), log aspect ~ U(log ratio), up to 10 tries for a
    window that fits, else the central crop of the aspect ratio clamped to ``ratio``."""
    index = torch.as_tensor(index, dtype=torch.int64).reshape(-1)
    hgt = torch.as_tensor(height, dtype=torch.int64).expand(index.shape).to(index.device)
    wid = torch.as_tensor(width, dtype=torch.int64).expand(index.shape).to(index.device)
    area = (hgt * wid).to(torch.float64)
    lo_r, hi_r = math.log(ratio[0]), math.log(ratio[1])
    top = torch.zeros_like(index)
    left, h, w = torch.zeros_like(index), torch.zeros_like(index), torch.zeros_like(index)
    found = torch.zeros(index.shape, dtype=torch.bool, device=index.device)
    for a in range(RRC_ATTEMPTS):
        s = _RRC_STREAM + 4 * a
        target = area * (scale[0] + (scale[1] - scale[0]) * _uniform(seed, epoch, index, s))
        aspect = torch.exp(lo_r + (hi_r - lo_r) * _uniform(seed, epoch, index, s + 1))
        cw = torch.round(torch.sqrt(target * aspect)).to(torch.int64)
        ch = torch.round(torch.sqrt(target / aspect)).to(torch.int64)
        ok = ~found & (cw > 0) & (cw <= wid) & (ch > 0) & (ch <= hgt)
        ct = (_uniform(seed, epoch, index, s + 2) * (hgt - ch + 1).to(torch.float64)).to(torch.int64)
        cl = (_uniform(seed, epoch, index, s + 3) * (wid - cw + 1).to(torch.float64)).to(torch.int64)
        top, left = torch.where(ok, ct, top), torch.where(ok, cl, left)
        h, w = torch.where(ok, ch, h), torch.where(ok, cw, w)
        found |= ok
    # fallback (torchvision's): the whole image, cut to the nearest allowed aspect ratio, centred
    in_ratio = wid.to(torch.float64) / hgt.to(torch.float64)
    fw = torch.where(in_ratio > ratio[1], torch.round(hgt * ratio[1]).to(torch.int64), wid)
    fh = torch.where(in_ratio < ratio[0], torch.round(wid / ratio[0]).to(torch.int64), hgt)
    top = torch.where(found, top, (hgt - fh) // 2)
    left = torch.where(found, left, (wid - fw) // 2)
    return top, left, torch.where(found, h, fh), torch.where(found, w, fw)


def random_resized_crop_flip(
    img: torch.Tensor, size: int, hflip: bool, *, index: int, seed: int, epoch: int
) -> torch.Tensor:
    """RandomResizedCrop(size) (bilinear, antialiased, as torchvision's default) + an optional horizontal flip
    (p = 0.5) of one uint8 [C, H, W] image (the whole decoded picture), drawn from (seed, epoch, ``index``)."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    if img.ndim != 3:
        raise ValueError(f"expected one [C, H, W] image, got shape {tuple(img.shape)}")
    i = torch.tensor([int(index)], dtype=torch.int64)
    top, left, h, w = (
        int(t) for t in random_resized_crop_params(i, img.shape[1], img.shape[2], seed=seed, epoch=epoch)
    )
    out = TF.resized_crop(
        img, top, left, h, w, [int(size), int(size)], interpolation=InterpolationMode.BILINEAR, antialias=True
    )
    from elfs.infra.sampling import counter_randint

    if hflip and int(counter_randint(seed, epoch, i, _FLIP_STREAM, 2)) == 1:
        out = out.flip(-1)
    return out.contiguous()


def eval_resize_size(size: int) -> int:
    """The shorter side the test images are resized to before the centre crop: round(size / 0.875)."""
    return int(round(int(size) / CENTER_CROP_RATIO))


def center_crop(img: torch.Tensor, size: int) -> torch.Tensor:
    """The centre ``size`` x ``size`` window of a [C, H, W] image (torchvision CenterCrop's offsets)."""
    h, w = int(img.shape[-2]), int(img.shape[-1])
    if h < size or w < size:
        raise ValueError(f"cannot centre-crop {size} x {size} from a {h} x {w} image")
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return img[..., top : top + size, left : left + size].contiguous()
