"""Synthetic stand-ins shaped like a real dataset (debug=smoke): same image size, channels and kind of source
(in memory, or a streamed class-folder tree for ImageNet), a few hundred images, so that a paper experiment's
whole code path runs on a CPU in CI without its data. The numbers such a run prints mean nothing.

Each class has its own random colour and low-frequency pattern, plus per-image noise, so clustering and training
have something to find.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from elfs.data.types import Dataset
from elfs.errors import ConfigError

#: dataset name -> (image side, channels, classes) of the real data it stands in for
SHAPES: dict[str, tuple[int, int, int]] = {
    "cifar10": (32, 3, 10),
    "cifar100": (32, 3, 100),
    "stl10": (96, 3, 10),
    "mnist5k": (28, 1, 10),
    "digits": (8, 1, 10),
    "imagefolder": (64, 3, 1000),  # ImageNet-style class folders, streamed; kept small on disk
}


def synthetic_images(n: int, size: int, channels: int, num_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint8 images [n, size, size, channels] and balanced labels (i mod num_classes), deterministic."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n, dtype=np.int64) % num_classes
    yy, xx = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size), indexing="ij")
    colour = rng.uniform(40, 215, (num_classes, channels))
    freq = rng.uniform(1, 4, (num_classes, 2))
    phase = rng.uniform(0, 2 * np.pi, num_classes)
    pattern = np.sin(2 * np.pi * (freq[:, :1, None] * yy + freq[:, 1:, None] * xx) + phase[:, None, None])
    base = colour[:, None, None, :] + 35 * pattern[..., None]  # [C, size, size, channels]
    x = base[labels] + rng.normal(0, 20, (n, size, size, channels))
    return np.clip(np.round(x), 0, 255).astype(np.uint8), labels


def load_synthetic_like(name: str, n_train: int, *, root: str, split_seed: int = 0) -> Dataset:
    """A synthetic dataset shaped like ``name``: ``n_train`` training and n_train // 4 test images, with
    min(real classes, n_train // 4) classes. ImageNet-style class folders are written once under ``root``."""
    from elfs.data.datasets import _assemble, load_imagefolder

    if name not in SHAPES:
        raise ConfigError(
            f"dataset.synthetic is set, but dataset={name} has no synthetic stand-in; valid: {sorted(SHAPES)}"
        )
    size, channels, real_classes = SHAPES[name]
    classes = max(2, min(real_classes, n_train // 4))
    n_test = max(classes, n_train // 4)
    x, y = synthetic_images(n_train + n_test, size, channels, classes, seed=split_seed)
    tr, te = np.arange(n_train), np.arange(n_train, n_train + n_test)  # labels cycle: both splits are balanced
    if name != "imagefolder":
        x = x[..., 0] if channels == 1 else x
        notes = {"source": f"synthetic stand-in for {name} (debug=smoke), {n_train} images, {classes} classes"}
        hflip = name not in ("mnist5k", "digits")
        return _assemble(f"{name}-synthetic", x[tr], y[tr], x[te], y[te], hflip=hflip, crop_padding=4, notes=notes)
    folder = Path(root).expanduser() / f"synthetic-imagefolder-{n_train}-{classes}-seed{split_seed}"
    if not (folder / ".complete").is_file():  # written once, then reused: its fingerprint (and cache keys) stay put
        from PIL import Image

        for split, idx in (("train", tr), ("val", te)):
            for j, i in enumerate(idx.tolist()):
                d = folder / split / f"class{int(y[i]):04d}"
                d.mkdir(parents=True, exist_ok=True)
                Image.fromarray(x[i]).save(d / f"{j:06d}.png")
        (folder / ".complete").write_text("")
    ds = load_imagefolder(path=str(folder))
    ds.notes["source"] = f"synthetic stand-in for ImageNet class folders (debug=smoke) at {folder}"
    return ds
