"""Labels of a controlled accuracy for the diagnostic "when does ELFS help?": ground truth with a chosen part
replaced by a clustering's labels, renamed as the classes they match. Reads ground truth: diagnostics only.
(Not in elfs.cluster: the proxy's stages import this, and must not depend on the clustering's code.)"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def _check_pair(pred, truth) -> tuple[np.ndarray, np.ndarray]:
    p, t = np.asarray(pred), np.asarray(truth)
    if p.ndim != 1 or p.shape != t.shape or p.size == 0:
        raise ValueError(f"pred and truth must be non-empty 1-D arrays of one length, got {p.shape} and {t.shape}")
    if not (np.issubdtype(p.dtype, np.integer) and np.issubdtype(t.dtype, np.integer)):
        raise ValueError(f"pred and truth must hold integer labels, got {p.dtype} and {t.dtype}")
    return p, t


def aligned_to_classes(pred, truth) -> np.ndarray:
    """The clusters renamed as classes: the Hungarian matching, and each unmatched cluster (more clusters than
    classes) as its majority class. Reads ground truth: for diagnostics only."""
    p, t = _check_pair(pred, truth)
    clusters, pi = np.unique(p, return_inverse=True)
    classes, ti = np.unique(t, return_inverse=True)
    m = np.zeros((len(clusters), len(classes)), dtype=np.int64)
    np.add.at(m, (pi, ti), 1)
    to_class = m.argmax(1)
    rows, cols = linear_sum_assignment(m, maximize=True)
    to_class[rows] = cols
    return classes[to_class[pi]].astype(np.int64)


def mixed_labels(pred, truth, true_fraction: float, seed: int) -> tuple[np.ndarray, float]:
    """Ground truth with a random (1 - ``true_fraction``) of it replaced by the clusters' labels (aligned to the
    classes); also the result's accuracy. The diagnostic "when does ELFS help": labels of a controlled accuracy."""
    if not 0.0 <= float(true_fraction) <= 1.0:
        raise ValueError(f"true_fraction={true_fraction!r} must be in [0, 1]")
    p, t = _check_pair(pred, truth)
    out = aligned_to_classes(p, t)
    keep = np.random.default_rng(seed).permutation(len(t))[: round(float(true_fraction) * len(t))]
    out[keep] = t[keep]
    return out, float(np.mean(out == t))


__all__ = ["aligned_to_classes", "mixed_labels"]
