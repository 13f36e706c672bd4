"""Clustering diagnostics against ground truth (Hungarian accuracy, NMI, ARI).

These use ground-truth labels and therefore must only be *logged*; nothing in the label-free stages may
read them to make a decision (see design.md, "label firewall").
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

__all__ = ["contingency", "hungarian_accuracy", "cluster_metrics"]


def _as_labels(x, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of integer labels, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integer labels, got dtype {arr.dtype}")
    return arr


def _check_pair(pred, truth) -> tuple[np.ndarray, np.ndarray]:
    p = _as_labels(pred, "pred")
    t = _as_labels(truth, "truth")
    if p.shape != t.shape:
        raise ValueError(f"pred and truth must have the same length, got {p.shape[0]} and {t.shape[0]}")
    if p.size == 0:
        raise ValueError("pred and truth are empty; need at least one labelled point")
    return p, t


def contingency(pred, truth) -> np.ndarray:
    """Count matrix M[a, b] = #{i : pred_i is the a-th distinct cluster, truth_i the b-th distinct class}."""
    p, t = _check_pair(pred, truth)
    _, pi = np.unique(p, return_inverse=True)
    _, ti = np.unique(t, return_inverse=True)
    m = np.zeros((pi.max() + 1, ti.max() + 1), dtype=np.int64)
    np.add.at(m, (pi, ti), 1)
    return m


def hungarian_accuracy(pred, truth) -> float:
    """Accuracy after the best one-to-one cluster->class matching (works when #clusters != #classes).

    Unmatched clusters (when there are more clusters than classes) count as errors.
    """
    m = contingency(pred, truth)
    rows, cols = linear_sum_assignment(m, maximize=True)
    return float(m[rows, cols].sum() / m.sum())


def cluster_metrics(pred, truth) -> dict[str, float]:
    """Diagnostics dict with keys acc (Hungarian), nmi, ari; uses ground truth, so log it, never decide on it."""
    p, t = _check_pair(pred, truth)
    return {
        "acc": hungarian_accuracy(p, t),
        "nmi": float(normalized_mutual_info_score(t, p)),
        "ari": float(adjusted_rand_score(t, p)),
    }
