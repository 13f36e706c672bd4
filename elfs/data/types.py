"""Typed containers that enforce the label firewall.

The label-free stages (embed, knn, cluster, dynamics, select) receive only :class:`ImageSet` objects,
which carry pixels and no targets at all; ground-truth labels live in :class:`GroundTruth`, which only
the evaluate stage and the diagnostics are given. A leak is therefore a type error, not a convention.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: (dataset, padding, side) already warned about: a Dataset is rebuilt by each override, the warning is said once
_WARNED: set[tuple[str, int, int]] = set()


def default_crop_padding(side: int) -> int:
    """The padded random crop's padding that fits images of ``side`` pixels: side / 8 rounded (CIFAR's 4 of 32,
    1 for 8x8 digits, 28 for 224), at least 0."""
    return max(0, int(side / 8 + 0.5))


def crop_padding_warning(padding: int, side: int) -> str | None:
    """A one-line warning when the padding is a quarter of the side or more (the crop can then cut off half of
    the object in each direction), else None."""
    if padding > 0 and 4 * padding >= side:
        return (
            f"dataset.crop_padding={padding} is {padding / side:.0%} of the {side}px image side (a quarter or more: "
            f"crops may miss most of the object); about {default_crop_padding(side)} (side/8) is usual"
        )
    return None


def is_streamed(images: Any) -> bool:
    """True for a streamed image source (``__len__`` and ``load_rgb(i, size)``, e.g. FolderImages), decoded on
    demand; False for in-memory arrays and :class:`ImageSet`."""
    return not isinstance(images, np.ndarray) and callable(getattr(images, "load_rgb", None))


def image_ids(images: Any) -> list[str]:
    """Each image's id in every answer file: its path relative to the folder for a streamed source, else ``#<index>``
    (the one rule; an exclude file names images by these ids, or by absolute path)."""
    if is_streamed(images):
        return list(images.paths)
    return [f"#{i}" for i in range(len(images))]


@dataclass(frozen=True)
class ImageSet:
    """Unlabelled uint8 images, N x H x W x C (C is 1 or 3), in a fixed index order."""

    images: np.ndarray
    name: str

    def __post_init__(self) -> None:
        x = self.images
        if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] not in (1, 3):
            shape = getattr(x, "shape", None)
            dtype = getattr(x, "dtype", type(x).__name__)
            raise ValueError(
                f"ImageSet '{self.name}' needs uint8 images shaped N x H x W x C with C in (1, 3); "
                f"got dtype={dtype}, shape={shape}"
            )
        if len(x) == 0:
            raise ValueError(f"ImageSet '{self.name}' is empty")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def channels(self) -> int:
        return int(self.images.shape[-1])

    def _memo(self, name: str, compute):
        """Compute a pixel-derived value once per ImageSet (it is frozen, so the value cannot go stale)."""
        if name not in self.__dict__:
            self.__dict__[name] = compute()
        return self.__dict__[name]

    def fingerprint(self) -> str:
        """A content hash of the pixels and the index order (labels are not part of it by design)."""

        def compute() -> str:
            h = hashlib.sha256()
            h.update(repr(self.images.shape).encode())
            h.update(np.ascontiguousarray(self.images).tobytes())
            return h.hexdigest()[:16]

        return self._memo("_fingerprint", compute)

    def channel_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std in [0, 1] pixel units, from the pixels only (label-free)."""

        def compute() -> tuple[list[float], list[float]]:
            x = self.images.reshape(-1, self.channels).astype(np.float64) / 255.0
            return x.mean(0).tolist(), np.maximum(x.std(0), 1e-6).tolist()

        return self._memo("_channel_stats", compute)


@dataclass(frozen=True)
class GroundTruth:
    """Ground-truth labels: for the evaluate stage (kept indices only) and logged diagnostics, never for decisions."""

    train: np.ndarray
    test: np.ndarray
    num_classes: int


@dataclass(frozen=True)
class UnlabelledData:
    """What the label-free stages see: train (and test) images and augmentation settings, no targets at all.

    ``train`` is an in-memory :class:`ImageSet` or a streamed :class:`~elfs.data.folder.FolderImages`; ``test`` is
    None for a source without a test split; ``num_classes`` is None when nothing says how many classes exist."""

    name: str
    train: Any
    test: Any  # ImageSet | FolderImages | None
    num_classes: int | None
    hflip: bool
    crop_padding: int

    @property
    def streamed(self) -> bool:
        """True when the images are decoded on demand (a folder), not held in memory."""
        return is_streamed(self.train)


@dataclass(frozen=True)
class Dataset:
    """Unlabelled train (and test) images, their ground truth kept apart (None for a label-free source), and
    augmentation defaults."""

    name: str
    train: Any  # ImageSet | FolderImages
    test: Any  # ImageSet | FolderImages | None
    truth: GroundTruth | None
    hflip: bool = True
    crop_padding: int = 4
    notes: dict = field(default_factory=dict)
    #: ids (:func:`image_ids`) of training images already labelled (selection.exclude): never proposed
    excluded: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        """Warn (once) when the crop padding is a quarter of the image side or more; here for in-memory images,
        whose side is known (a streamed source's side is its decode size, <key>.image_size)."""
        images = getattr(self.train, "images", None)
        if isinstance(images, np.ndarray) and images.ndim == 4:
            side = int(min(images.shape[1:3]))
            key = (self.name, int(self.crop_padding), side)
            msg = crop_padding_warning(int(self.crop_padding), side)
            if msg and key not in _WARNED:
                _WARNED.add(key)
                log.warning("%s", msg)

    @property
    def labelled(self) -> bool:
        """Whether ground truth exists, so the coreset can be evaluated (never used to choose it)."""
        return self.truth is not None

    @property
    def num_classes(self) -> int | None:
        """Number of classes: metadata the paper also uses to size the clustering, not per-example labels."""
        return None if self.truth is None else self.truth.num_classes

    def unlabelled(self) -> UnlabelledData:
        """The label-free view handed to embed, knn, cluster, dynamics and select."""
        return UnlabelledData(self.name, self.train, self.test, self.num_classes, self.hflip, self.crop_padding)
