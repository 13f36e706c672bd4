"""Datasets: the label-firewall types and the loader registry."""

from elfs.data.datasets import DATASETS, DatasetUnavailableError, check_dataset_name, load_dataset, to_nhwc
from elfs.data.types import Dataset, GroundTruth, ImageSet, UnlabelledData, image_ids, is_streamed

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetUnavailableError",
    "GroundTruth",
    "ImageSet",
    "UnlabelledData",
    "check_dataset_name",
    "image_ids",
    "is_streamed",
    "load_dataset",
    "to_nhwc",
]
