"""Label-free signs of weak pseudo-labels, read off the clustering alone (no ground truth): clusters that are empty
or tiny, and heads that disagree. Each sign is one line; the run logs them with one line of what to try."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import normalized_mutual_info_score

#: a cluster with fewer than this share of an even split (N / K) counts as tiny
TINY_SHARE = 0.1
#: mean NMI between the chosen head and the others below which the heads disagree
HEADS_AGREE = 0.5
#: what to try, in one line, when the pseudo-labels look weak
WHAT_TO_TRY = (
    "the pseudo-labels look weak: try fewer clusters (--clusters / cluster.num_clusters), a stronger encoder "
    "(backbone=dino_vits16), or ZCore, which needs no pseudo-labels (--method zcore / selection=zcore)"
)


def cluster_size_signals(pseudo_labels: np.ndarray, num_clusters: int) -> list[str]:
    """Empty clusters, and clusters under TINY_SHARE of an even split."""
    counts = np.bincount(np.asarray(pseudo_labels, dtype=np.int64), minlength=num_clusters)[:num_clusters]
    out = []
    empty = int((counts == 0).sum())
    if empty:
        out.append(f"{empty} of the {num_clusters} clusters are empty")
    below = int(np.ceil(TINY_SHARE * len(pseudo_labels) / num_clusters))
    tiny = int(((counts > 0) & (counts < below)).sum())
    if tiny:
        out.append(f"{tiny} of the {num_clusters} clusters hold fewer than {below} images")
    return out


def head_agreement(head_assignments: np.ndarray, best_head: int) -> float | None:
    """Mean NMI between the chosen head's clusters and each other head's (1 = every head agrees); None for one head."""
    heads = np.asarray(head_assignments)
    if heads.ndim != 2 or heads.shape[0] < 2:
        return None
    others = [h for h in range(heads.shape[0]) if h != best_head]
    return float(np.mean([normalized_mutual_info_score(heads[best_head], heads[h]) for h in others]))


def weak_label_signals(
    pseudo_labels: np.ndarray, num_clusters: int, head_assignments: np.ndarray | None, best_head: int | None
) -> list[str]:
    """Every label-free sign of weak pseudo-labels in one clustering, one line each (empty: none)."""
    out = cluster_size_signals(pseudo_labels, num_clusters)
    if head_assignments is not None and best_head is not None:
        agree = head_agreement(head_assignments, best_head)
        if agree is not None and agree < HEADS_AGREE:
            out.append(f"the clustering heads disagree (mean NMI {agree:.2f} between the chosen head and the others)")
    return out
