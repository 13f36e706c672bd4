"""Label-free pseudo-labels from trained TEMI heads (no ground truth is read anywhere in this file).

``best_head``: the teacher head with the lowest epoch-mean loss at the end of training (method.md §11).
``ensemble``: every head's cluster ids aligned to the best head's by Hungarian matching on co-occurrence
counts, then a per-point majority vote (ties go to the best head's label).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

__all__ = ["PSEUDO_LABEL_RULES", "head_assignments", "align_to_reference", "pseudo_labels"]

PSEUDO_LABEL_RULES = ("best_head", "ensemble")


@torch.no_grad()
def head_assignments(module, embeddings, *, batch_size: int = 8192) -> np.ndarray:
    """Teacher argmax cluster id of every head for every embedding: int64 [H, N] (batched, no grad).

    ``module`` is a :class:`~elfs.cluster.module.TEMIModule` (its ``forward`` gives teacher logits [H, B, C]).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    x = torch.from_numpy(np.ascontiguousarray(embeddings)) if isinstance(embeddings, np.ndarray) else embeddings
    if x.ndim != 2:
        raise ValueError(f"embeddings must be [N, D], got shape {tuple(x.shape)}")
    device = next(module.teacher.parameters()).device
    was_training = module.training
    module.eval()
    try:
        out = [module(x[i : i + batch_size].to(device)).argmax(dim=-1).cpu() for i in range(0, x.shape[0], batch_size)]
    finally:
        module.train(was_training)
    if not out:
        return np.zeros((module.cfg.num_heads, 0), dtype=np.int64)
    return torch.cat(out, dim=1).numpy().astype(np.int64)


def align_to_reference(labels: np.ndarray, reference: np.ndarray, num_labels: int) -> np.ndarray:
    """Relabel ``labels`` so that its ids match ``reference`` as well as possible (Hungarian matching that
    maximises co-occurrence counts); ids in [0, num_labels)."""
    counts = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(counts, (labels, reference), 1)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    mapping = np.empty(num_labels, dtype=np.int64)
    mapping[rows] = cols
    return mapping[labels]


def pseudo_labels(assignments: np.ndarray, head_losses: np.ndarray, rule: str = "best_head") -> np.ndarray:
    """Pseudo-labels int64 [N] from per-head assignments [H, N] and per-head losses [H] (lower = better).

    rule "best_head": the lowest-loss head's assignment. rule "ensemble": heads aligned to that head, then
    majority vote; a tie that includes the best head's label keeps it, other ties take the smallest id.
    """
    if rule not in PSEUDO_LABEL_RULES:
        raise ValueError(f"rule must be one of {PSEUDO_LABEL_RULES}, got {rule!r}")
    a = np.asarray(assignments)
    losses = np.asarray(head_losses, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] < 1:
        raise ValueError(f"assignments must be [H, N] with H >= 1, got shape {a.shape}")
    if losses.shape != (a.shape[0],):
        raise ValueError(f"head_losses must have shape [H]=({a.shape[0]},), got {losses.shape}")
    if np.isnan(losses).all():
        raise ValueError("head_losses are all NaN (was the module trained for at least one epoch?)")
    if a.size and (not np.issubdtype(a.dtype, np.integer) or a.min() < 0):
        raise ValueError("assignments must hold non-negative integer cluster ids")
    a = a.astype(np.int64, copy=False)
    best = int(np.nanargmin(losses))
    ref = a[best]
    if rule == "best_head" or a.shape[0] == 1 or a.shape[1] == 0:
        return ref.copy()
    k = int(a.max()) + 1
    n = a.shape[1]
    aligned = np.stack([ref if h == best else align_to_reference(a[h], ref, k) for h in range(a.shape[0])])
    votes = np.zeros((n, k), dtype=np.int64)
    np.add.at(votes, (np.broadcast_to(np.arange(n), aligned.shape), aligned), 1)
    top = votes.max(axis=1)
    winner = votes.argmax(axis=1)  # smallest id among the tied maxima
    keep_ref = votes[np.arange(n), ref] == top
    return np.where(keep_ref, ref, winner).astype(np.int64)
