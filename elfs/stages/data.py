"""Loading the configured images (and, for a labelled benchmark, their labels) and every check that needs them."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from elfs.cache import Artifact
from elfs.config import DatasetConfig, ElfsConfig
from elfs.data import Dataset, image_ids, is_streamed, load_dataset

log = logging.getLogger(__name__)


def load_data(d: DatasetConfig) -> Dataset:
    """Load the configured dataset (or its synthetic stand-in), apply max_train and the augmentation overrides."""
    if d.synthetic is not None:
        from elfs.data.synthetic import load_synthetic_like

        ds = load_synthetic_like(d.name, d.synthetic, root=d.root, split_seed=d.split_seed)
    else:
        ds = load_dataset(
            d.name,
            path=d.path,
            root=d.root,
            download=d.download,
            test_fraction=d.test_fraction,
            split_seed=d.split_seed,
        )
    if d.max_train is not None and d.max_train < len(ds.train):
        from elfs.data import GroundTruth, ImageSet

        n = int(d.max_train)
        train = ds.train.subset(np.arange(n)) if is_streamed(ds.train) else ImageSet(ds.train.images[:n], ds.train.name)
        truth = None if ds.truth is None else GroundTruth(ds.truth.train[:n], ds.truth.test, ds.truth.num_classes)
        ds = dataclasses.replace(ds, train=train, truth=truth)
    if d.hflip is not None:
        ds = dataclasses.replace(ds, hflip=bool(d.hflip))
    if d.crop_padding is not None:
        ds = dataclasses.replace(ds, crop_padding=int(d.crop_padding))
    return ds


def prepare_data(cfg: ElfsConfig) -> tuple[Dataset, int, float]:
    """Load the data and run every check that needs it, before any expensive stage (or any run output).

    Returns the dataset, the number of clusters to use, and the seconds it took."""
    from elfs.preflight import check_data

    t0 = time.perf_counter()
    ds = _streamed_augmentation(cfg, load_data(cfg.dataset))
    num_clusters = check_data(cfg, ds)
    if cfg.selection.exclude:  # read once; every listed image must be one of the data's, checked before any stage
        from elfs.stages.select import exclude_indices, read_exclude

        ids = image_ids(ds.train)
        root = Path(ds.train.root) if is_streamed(ds.train) else None
        found = exclude_indices(read_exclude(cfg.selection.exclude), ids, root)
        ds = dataclasses.replace(ds, excluded=frozenset(ids[i] for i in found.tolist()))
    return ds, num_clusters, time.perf_counter() - t0


def _streamed_augmentation(cfg: ElfsConfig, ds: Dataset) -> Dataset:
    """A streamed source's crop padding scales with the side its images are decoded to for training (side/8, as
    CIFAR's 4 of 32) unless dataset.crop_padding sets it; a quarter of the side or more is warned about once."""
    from elfs.data.datasets import streamed_crop_padding
    from elfs.data.types import crop_padding_warning

    size = cfg.evaluate.image_size or cfg.dynamics.image_size
    if not is_streamed(ds.train) or size is None:
        return ds
    if cfg.dataset.crop_padding is None:
        ds = dataclasses.replace(ds, crop_padding=streamed_crop_padding(size))
    warning = crop_padding_warning(ds.crop_padding, int(size))
    if warning:
        log.warning(warning)
    return ds


def decodable_only(ds: Dataset, emb: Artifact) -> Dataset:
    """A streamed dataset cut down to the images its embedding stage could decode (labels cut alike)."""
    from elfs.data import GroundTruth

    train_idx = emb["valid"]
    test_idx = emb.arrays.get("test_valid")
    changes: dict[str, Any] = {}
    if len(train_idx) < len(ds.train):
        changes["train"] = ds.train.subset(train_idx)
    if test_idx is not None and len(test_idx) < len(ds.test):
        changes["test"] = ds.test.subset(test_idx)
    if changes and ds.truth is not None:
        y_te = ds.truth.test if test_idx is None else ds.truth.test[test_idx]
        changes["truth"] = GroundTruth(ds.truth.train[train_idx], y_te, ds.truth.num_classes)
    return dataclasses.replace(ds, **changes) if changes else ds
