"""Clustering diagnostics against ground truth: logged beside the run, never used by any decision."""

from __future__ import annotations

from typing import Any

from elfs.cache import Artifact
from elfs.data import Dataset


def clustering_diagnostics(ds: Dataset, clus: Artifact) -> dict[str, Any]:
    """ACC (Hungarian), NMI, ARI of the pseudo-labels and of k-means against ground truth: logged, never used."""
    from elfs.cluster.metrics import cluster_metrics

    out: dict[str, Any] = {"pseudo_labels": cluster_metrics(clus["pseudo_labels"], ds.truth.train)}
    if "kmeans_labels" in clus.arrays:
        out["kmeans"] = cluster_metrics(clus["kmeans_labels"], ds.truth.train)
    if "best_head" in clus.meta:
        out["best_head"] = clus.meta["best_head"]
    return out
