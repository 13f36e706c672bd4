"""Near-duplicates from the kNN graph: an image and an encoder neighbour whose pixel signatures (16 x 16 grey
thumbnails, zero mean, unit norm: embed.pixel_signature) have cosine similarity above a threshold are near-copies;
each group of them (every member a copy of its centre: star_groups) keeps one representative in the candidate pool
and the others are never proposed (duplicates.csv lists them). The signature and not the embedding decides, since
the offline encoder at 64 px finds distinct photos as alike as re-encoded copies (experiments/duplicate_threshold.py
measures both).

Pure functions on arrays; the pipeline calls them, elfs/handback/near_copies.py writes what they return.
"""

from __future__ import annotations

import numpy as np

__all__ = ["duplicate_groups", "pair_similarity", "pool", "representatives", "star_groups"]


def pair_similarity(signature: np.ndarray, idx: np.ndarray, block: int = 2048) -> np.ndarray:
    """Cosine similarity of each image's signature to each of its kNN neighbours' (``[N, k]`` float32), computed
    ``block`` rows at a time (memory: block x k x dim floats, never N x N)."""
    sig = np.asarray(signature)
    out = np.empty(idx.shape, dtype=np.float32)
    for start in range(0, len(idx), block):
        rows = sig[start : start + block].astype(np.float32)
        nb = sig[idx[start : start + block]].astype(np.float32)  # [b, k, dim]
        out[start : start + block] = np.einsum("bd,bkd->bk", rows, nb)
    return out


def duplicate_groups(idx: np.ndarray, signature: np.ndarray, threshold: float) -> np.ndarray:
    """Group label per image (``-1`` for an image with no near-copy), numbered 0, 1, ... in order of their smallest
    member: the kNN graph's edges (``idx``, ``[N, k]`` neighbours by embedding) whose pixel signatures (unit rows,
    ``[N, dim]``) have cosine similarity >= ``threshold`` are near-copy pairs, grouped by :func:`star_groups`. The
    encoder's neighbours are the candidates: what confirms a near-copy is that its pixels match."""
    idx, signature = np.asarray(idx), np.asarray(signature)
    if idx.ndim != 2 or signature.ndim != 2 or len(idx) != len(signature):
        raise ValueError(f"idx [N, k] and signature [N, dim] must have N rows, got {idx.shape}, {signature.shape}")
    if not 0.0 < float(threshold) <= 1.0:
        raise ValueError(f"threshold must be a cosine similarity in (0, 1], got {threshold!r}")
    sims = pair_similarity(signature, idx)
    rows, cols = np.nonzero((sims >= threshold) & (idx >= 0))
    return star_groups(idx.shape[0], rows, idx[rows, cols], sims[rows, cols])


def star_groups(n: int, a: np.ndarray, b: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
    """Groups of ``n`` nodes from the near-copy pairs (``a[e]``, ``b[e]``) in which every member is a near-copy of
    the group's centre, so that pairs cannot chain distinct images into one group (connected components put 22,856
    of 200,000 synthetic photos in one group, one edge at a time). Greedily, the node with the most pairs (ties to
    the smaller index) left ungrouped becomes a centre, with its ungrouped partners; a node whose partners were all
    grouped before its turn joins the group of its most similar partner (``weight``; else the first), so every node
    with a pair is grouped. Labels ``-1`` (no pair) or 0, 1, ... in order of each group's smallest member."""
    from scipy.sparse import coo_matrix

    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    w = np.ones(len(a), dtype=np.float32) if weight is None else np.asarray(weight, dtype=np.float32)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    _, one = np.unique(lo * n + hi, return_index=True)  # a pair found from both sides once (its weight is symmetric)
    one = one[lo[one] != hi[one]]
    lo, hi, w = lo[one], hi[one], w[one]
    g = coo_matrix((np.concatenate([w, w]), (np.concatenate([lo, hi]), np.concatenate([hi, lo]))), shape=(n, n))
    g = g.tocsr()
    indptr, indices, data = g.indptr, g.indices, g.data
    degree = np.diff(indptr)
    label = np.full(n, -1, dtype=np.int64)
    groups = 0
    leftover = []
    for c in np.lexsort((np.arange(n), -degree))[: int((degree > 0).sum())].tolist():
        if label[c] >= 0:
            continue
        nb = indices[indptr[c] : indptr[c + 1]]
        free = nb[label[nb] < 0]
        if len(free) == 0:
            leftover.append(c)
            continue
        label[c] = groups
        label[free] = groups
        groups += 1
    for c in leftover:  # every partner is in a group already: join the most similar one's
        start, stop = indptr[c], indptr[c + 1]
        label[c] = label[indices[start + int(np.argmax(data[start:stop]))]]
    grouped = label >= 0
    if not grouped.any():
        return label
    # renumber the groups by their first member, so the numbering does not depend on the order they were formed in
    _, first = np.unique(label[grouped], return_index=True)
    order = np.argsort(np.flatnonzero(grouped)[first])
    new = np.empty(len(first), dtype=np.int64)
    new[order] = np.arange(len(first))
    label[grouped] = new[np.unique(label[grouped], return_inverse=True)[1]]
    return label


def representatives(groups: np.ndarray, hardness: np.ndarray | None, *, hardest: bool = False) -> np.ndarray:
    """The representative of each group (index per group id): the member the method ranks best, i.e. the easiest
    (``hardest=True``: the hardest) by ``hardness``, ties and ``hardness=None`` (random) to the first in order."""
    groups = np.asarray(groups)
    g = int(groups.max()) + 1 if groups.size else 0
    members = np.flatnonzero(groups >= 0)
    if hardness is None:
        key = members.astype(np.float64)
    else:
        h = np.asarray(hardness, dtype=np.float64)[members]
        key = -h if hardest else h
    order = members[np.lexsort((members, key))]  # best first, ties by index
    rep = np.full(g, -1, dtype=np.int64)
    first = np.unique(groups[order], return_index=True)[1]
    rep[groups[order][first]] = order[first]
    return rep


def pool(groups: np.ndarray, rep: np.ndarray, excluded: np.ndarray | None = None) -> np.ndarray:
    """The candidate pool (sorted int64): every image not in a group, plus each group's representative; a group
    with an ``excluded`` member (already labelled) is left out whole, and excluded images themselves too."""
    groups = np.asarray(groups)
    n = len(groups)
    keep = groups < 0
    keep[rep[rep >= 0]] = True
    if excluded is not None and len(excluded):
        out = np.zeros(n, dtype=bool)
        out[excluded] = True
        hit = np.unique(groups[excluded][groups[excluded] >= 0])
        out |= np.isin(groups, hit)
        keep &= ~out
    return np.flatnonzero(keep).astype(np.int64)
