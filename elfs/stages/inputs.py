"""What a classifier training reads: its labels (and what names them in a key), its inputs (images, a streamed
source, or the embeddings) and the label-free facts about the images."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from elfs.cache import Artifact, array_hash
from elfs.data import Dataset, UnlabelledData, is_streamed
from elfs.infra.names import uses_embeddings

if TYPE_CHECKING:  # the classifier (and Lightning) load when a training needs them, not to check a config
    from elfs.training.classifier import ImageFacts


@dataclass(frozen=True)
class Labels:
    """The labels a proxy or a beta-search candidate trains on, and what identifies them in a cache key.

    ``source`` is "pseudo" (TEMI / k-means clusters: label-free) or "ground_truth" (only with the explicit opt-in
    selection.labels=ground_truth, the supervised reference)."""

    values: np.ndarray
    num_classes: int
    source: str
    key: dict[str, Any]
    accuracy: float | None = None  # against ground truth: the mixed-labels diagnostic only

    @classmethod
    def mixed(cls, ds: Dataset, clus: Artifact, replaced: float, seed: int) -> Labels:
        """Ground truth with ``replaced`` of it (a seeded random part) swapped for the clusters' labels aligned to
        the classes: labels of a controlled accuracy, for the diagnostic "when does ELFS help" (reads labels)."""
        from elfs.method.mixed_labels import mixed_labels

        values, acc = mixed_labels(clus["pseudo_labels"], ds.truth.train, 1.0 - float(replaced), seed)
        key = {"cluster": clus.key, "ground_truth": array_hash(ds.truth.train), "mixed_replaced": float(replaced)}
        return cls(values, int(ds.num_classes), "mixed", key, acc)

    @classmethod
    def pseudo(cls, clus: Artifact) -> Labels:
        return cls(clus["pseudo_labels"], int(clus.meta["num_clusters"]), "pseudo", {"cluster": clus.key})

    @classmethod
    def ground_truth(cls, ds: Dataset) -> Labels:
        return cls(ds.truth.train, int(ds.num_classes), "ground_truth", {"ground_truth": array_hash(ds.truth.train)})


def model_inputs(model: str, ds: Dataset | UnlabelledData, emb: Artifact | None, split: str) -> Any:
    """What `model` trains on for `split`: the embeddings, the in-memory uint8 images, or, for a streamed source
    (a folder), the source itself, which train_classifier decodes batch by batch at the config's image_size."""
    if uses_embeddings(model):
        return emb[split]
    images = ds.train if split == "train" else ds.test
    if is_streamed(images):  # never read whole
        return images
    return images.images


def embed_input(model: str, emb: Artifact | None) -> dict[str, str]:
    """The embedding's key as a cache input, only for a model that trains on embeddings: a classifier on images
    does not depend on the encoder, so (e.g.) random's evaluation is computed once for every encoder."""
    return {"embed": emb.key} if uses_embeddings(model) else {}


def image_facts(ds: Dataset | UnlabelledData) -> ImageFacts:
    """What a training needs to know about the images: augmentation and channel statistics (label-free)."""
    from elfs.training.classifier import ImageFacts

    mean, std = ds.train.channel_stats()
    return ImageFacts(crop_padding=ds.crop_padding, hflip=ds.hflip, mean=mean, std=std)


def augmentation_key(ds: Dataset | UnlabelledData) -> dict[str, Any]:
    """The dataset's augmentation as key data (the channel statistics follow from the images' fingerprint)."""
    return {"crop_padding": ds.crop_padding, "hflip": ds.hflip}
