"""Label-free pseudo-labels from trained TEMI heads (no ground truth is read anywhere in this file).

``best_head``: the teacher head with the lowest epoch-mean loss at the end of training (method.md §11).
``ensemble``: every head's cluster ids aligned to the best head's by Hungarian matching on co-occurrence
counts, then a per-point majority vote (ties go to the best head's label).
``aligned_mean`` (the paper text's rule): the same alignment, then per point the argmax of the teacher
probabilities softmax(logits / teacher_temp) averaged over heads, each head's columns moved to the best head's
ids (ties go to the smallest id). It needs the heads' probabilities, not only their argmax, so it is
:func:`aligned_mean_labels` (module + embeddings, streamed in batches), not :func:`pseudo_labels`.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from elfs.infra.names import PSEUDO_LABEL_RULES

__all__ = [
    "PSEUDO_LABEL_RULES",
    "head_assignments",
    "aligned_mean_labels",
    "alignment_mapping",
    "align_to_reference",
    "pseudo_labels",
]


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


@torch.no_grad()
def aligned_mean_labels(
    module, embeddings, assignments: np.ndarray, head_losses: np.ndarray, *, batch_size: int = 1024
) -> np.ndarray:
    """Rule "aligned_mean": pseudo-labels int64 [N] = argmax over ids of the teacher probabilities
    softmax(logits / teacher_temp) averaged over heads, every head's columns first moved to the best head's ids.

    ``assignments`` [H, N] are :func:`head_assignments` of the same ``module`` and ``embeddings``; the best head
    is the lowest of ``head_losses`` [H]. The alignment permutations come from the [H, N] assignments
    (:func:`alignment_mapping` against the best head), then the embeddings are streamed in batches, so memory is
    O(H * batch_size * C), never [H, N, C] (ImageNet: N = 1.28 M, H = 50, C = 1000). Probabilities are summed over
    heads in float64, head 0 first (float32 on MPS, which has no float64); the argmax of that sum is the argmax
    of the mean, and a tie goes to the smallest id. Label-free: only the module's own outputs are used.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    a, best = _checked(assignments, head_losses)
    x = torch.from_numpy(np.ascontiguousarray(embeddings)) if isinstance(embeddings, np.ndarray) else embeddings
    if x.ndim != 2:
        raise ValueError(f"embeddings must be [N, D], got shape {tuple(x.shape)}")
    num_heads, n = a.shape
    if n != x.shape[0]:
        raise ValueError(f"assignments are for N={n} points but embeddings have N={x.shape[0]}")
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    temp = float(module.cfg.teacher_temp)
    device = next(module.teacher.parameters()).device
    acc_dtype = torch.float32 if device.type == "mps" else torch.float64
    was_training = module.training
    module.eval()
    out: list[torch.Tensor] = []
    gather: torch.Tensor | None = None  # [H, C]: column c of aligned head h = column gather[h, c] of head h
    try:
        for i in range(0, n, batch_size):
            logits = module(x[i : i + batch_size].to(device))  # [H, B, C]
            if logits.ndim != 3 or logits.shape[0] != num_heads:
                raise ValueError(f"module output must be [H={num_heads}, B, C], got {tuple(logits.shape)}")
            if gather is None:
                c = logits.shape[-1]
                if a.max() >= c:
                    raise ValueError(f"assignments hold id {int(a.max())} >= C={c} (the heads' number of clusters)")
                # mapping[h, j] = best-head id of head h's id j; its inverse permutation picks the columns
                mapping = np.stack([alignment_mapping(a[h], a[best], c) for h in range(num_heads)])
                mapping[best] = np.arange(c)
                gather = torch.from_numpy(np.argsort(mapping, axis=1)).to(device)
            acc = torch.zeros(logits.shape[1:], dtype=acc_dtype, device=device)
            for h in range(num_heads):
                probs = torch.softmax(logits[h].float() / temp, dim=-1)
                acc += probs.index_select(1, gather[h]).to(acc_dtype)
            out.append(acc.argmax(dim=1).cpu())  # first maximum = smallest id on ties
    finally:
        module.train(was_training)
    return torch.cat(out).numpy().astype(np.int64)


def alignment_mapping(labels: np.ndarray, reference: np.ndarray, num_labels: int) -> np.ndarray:
    """The permutation int64 [num_labels] that relabels ``labels`` to match ``reference`` best: ``mapping[j]``
    is the reference id given to label id j (Hungarian matching maximising co-occurrence counts; ids in
    [0, num_labels)). Ids that never occur are matched among themselves in an arbitrary but fixed way."""
    lab = np.asarray(labels, dtype=np.int64)
    ref = np.asarray(reference, dtype=np.int64)
    if lab.shape != ref.shape or lab.ndim != 1:
        raise ValueError(f"labels and reference must be 1-D of the same length, got {lab.shape} and {ref.shape}")
    if lab.size and (min(lab.min(), ref.min()) < 0 or max(lab.max(), ref.max()) >= num_labels):
        raise ValueError(f"label ids must be in [0, num_labels={num_labels})")
    # bincount, not np.add.at: same counts, much faster at N = 1.28 M
    counts = np.bincount(lab * num_labels + ref, minlength=num_labels * num_labels).reshape(num_labels, num_labels)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    mapping = np.empty(num_labels, dtype=np.int64)
    mapping[rows] = cols
    return mapping


def align_to_reference(labels: np.ndarray, reference: np.ndarray, num_labels: int) -> np.ndarray:
    """Relabel ``labels`` so that its ids match ``reference`` as well as possible (Hungarian matching that
    maximises co-occurrence counts, see :func:`alignment_mapping`); ids in [0, num_labels)."""
    return alignment_mapping(labels, reference, num_labels)[np.asarray(labels, dtype=np.int64)]


def _checked(assignments: np.ndarray, head_losses: np.ndarray) -> tuple[np.ndarray, int]:
    """Validated int64 assignments [H, N] and the best (lowest-loss, NaN-ignoring) head index."""
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
    return a.astype(np.int64, copy=False), int(np.nanargmin(losses))


def pseudo_labels(assignments: np.ndarray, head_losses: np.ndarray, rule: str = "best_head") -> np.ndarray:
    """Pseudo-labels int64 [N] from per-head assignments [H, N] and per-head losses [H] (lower = better).

    rule "best_head": the lowest-loss head's assignment. rule "ensemble": heads aligned to that head, then
    majority vote; a tie that includes the best head's label keeps it, other ties take the smallest id.
    rule "aligned_mean" needs the heads' probabilities, which argmax assignments no longer hold: ValueError,
    use :func:`aligned_mean_labels`.
    """
    if rule == "aligned_mean":
        raise ValueError(
            "rule 'aligned_mean' averages the heads' probabilities, which assignments do not hold: use "
            "aligned_mean_labels(module, embeddings, assignments, head_losses)"
        )
    if rule not in PSEUDO_LABEL_RULES:
        raise ValueError(f"rule must be one of {PSEUDO_LABEL_RULES}, got {rule!r}")
    a, best = _checked(assignments, head_losses)
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
