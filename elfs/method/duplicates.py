"""Near-duplicates from the kNN graph: an image and an encoder neighbour whose pixel signatures (16 x 16 grey
thumbnails, zero mean, unit norm: embed.pixel_signature) have cosine similarity above a threshold are near-copies.
Around the images the method ranks best, groups form in which every member is a near-copy of the group's
representative and no two representatives are near-copies (:func:`groups_around_representatives`): only the
representatives stay in the candidate pool, so no two images ever proposed are a near-copy pair (duplicates.csv
lists the others). The signature and not the embedding decides, since the offline encoder at 64 px finds distinct
photos as alike as re-encoded copies (experiments/duplicate_threshold.py measures both).

Pure functions on arrays; the pipeline calls them, elfs/handback/near_copies.py writes what they return.
"""

from __future__ import annotations

import numpy as np

__all__ = ["groups_around_representatives", "near_copy_pairs", "pair_similarity", "pool", "preference"]


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


def near_copy_pairs(idx: np.ndarray, signature: np.ndarray, threshold: float) -> tuple[np.ndarray, ...]:
    """The near-copy pairs ``(a, b, similarity)`` (``a < b``, each pair once): the kNN graph's edges (``idx``,
    ``[N, k]`` neighbours by embedding, -1 = none) whose pixel signatures (unit rows, ``[N, dim]``) have cosine
    similarity >= ``threshold``. The encoder's neighbours are the candidates: what confirms a near-copy is that its
    pixels match."""
    idx, signature = np.asarray(idx), np.asarray(signature)
    if idx.ndim != 2 or signature.ndim != 2 or len(idx) != len(signature):
        raise ValueError(f"idx [N, k] and signature [N, dim] must have N rows, got {idx.shape}, {signature.shape}")
    if not 0.0 < float(threshold) <= 1.0:
        raise ValueError(f"threshold must be a cosine similarity in (0, 1], got {threshold!r}")
    sims = pair_similarity(signature, idx)
    rows, cols = np.nonzero((sims >= threshold) & (idx >= 0))
    a, b, w = rows.astype(np.int64), idx[rows, cols].astype(np.int64), sims[rows, cols]
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    _, one = np.unique(lo * len(idx) + hi, return_index=True)  # a pair found from both sides once (same weight)
    one = one[lo[one] != hi[one]]
    return lo[one], hi[one], w[one]


def preference(n: int, hardness: np.ndarray | None, *, hardest: bool = False) -> np.ndarray:
    """The ``n`` images in the order the method prefers them as representatives: easiest first by ``hardness``
    (``hardest=True``: hardest first), ties and ``hardness=None`` (random) by index."""
    idx = np.arange(n)
    if hardness is None:
        return idx
    h = np.asarray(hardness, dtype=np.float64)
    return np.lexsort((idx, -h if hardest else h))


def groups_around_representatives(
    n: int, a: np.ndarray, b: np.ndarray, weight: np.ndarray, order: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(group label per image, representative per group) from the near-copy pairs (``a[e]``, ``b[e]``, similarity
    ``weight[e]``). The images with a pair are taken in ``order`` (the method's preference, :func:`preference`): one
    that is a near-copy of a representative chosen before joins the most similar such representative's group; any
    other becomes a representative. So every member is a near-copy of its group's representative, the
    representative is the member the method prefers, and no two representatives are near-copies: pairs cannot chain
    distinct images into one group (connected components put 22,856 of 200,000 synthetic photos into one), nor can
    two images the pool keeps be copies. Labels: -1 (no pair, or a representative nobody joined) or 0, 1, ... in
    order of each group's smallest member."""
    from scipy.sparse import coo_matrix

    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    w = np.asarray(weight, dtype=np.float32)
    g = coo_matrix((np.concatenate([w, w]), (np.concatenate([a, b]), np.concatenate([b, a]))), shape=(n, n)).tocsr()
    indptr, indices, data = g.indptr, g.indices, g.data
    order = np.asarray(order, dtype=np.int64)
    owner = np.full(n, -1, dtype=np.int64)  # the representative whose group an image is in
    is_rep = np.zeros(n, dtype=bool)
    for c in order[np.diff(indptr)[order] > 0].tolist():
        nb, sim = indices[indptr[c] : indptr[c + 1]], data[indptr[c] : indptr[c + 1]]
        near = is_rep[nb]
        if near.any():
            owner[c] = nb[near][int(np.argmax(sim[near]))]
        else:
            is_rep[c], owner[c] = True, c
    size = np.bincount(owner[owner >= 0], minlength=n)
    owner[size[np.maximum(owner, 0)] < 2] = -1  # a representative nobody joined is no group
    label = np.full(n, -1, dtype=np.int64)
    grouped = np.flatnonzero(owner >= 0)
    if not len(grouped):
        return label, np.zeros(0, dtype=np.int64)
    reps, first = np.unique(owner[grouped], return_index=True)  # first: each group's smallest member (sorted)
    by_first = np.argsort(grouped[first])
    number = np.empty(len(reps), dtype=np.int64)
    number[by_first] = np.arange(len(reps))
    label[grouped] = number[np.searchsorted(reps, owner[grouped])]
    return label, reps[by_first]


def pool(
    groups: np.ndarray,
    rep: np.ndarray,
    excluded: np.ndarray | None = None,
    pairs: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """The candidate pool (sorted int64): every image not in a group, plus each group's representative; with
    ``excluded`` images (already labelled), they, every member of a group holding one, and (given the near-copy
    ``pairs``) every near-copy of one are left out."""
    groups = np.asarray(groups)
    n = len(groups)
    keep = groups < 0
    keep[rep[rep >= 0]] = True
    if excluded is not None and len(excluded):
        out = np.zeros(n, dtype=bool)
        out[excluded] = True
        hit = np.unique(groups[excluded][groups[excluded] >= 0])
        out |= np.isin(groups, hit)
        if pairs is not None:
            a, b = np.asarray(pairs[0], dtype=np.int64), np.asarray(pairs[1], dtype=np.int64)
            ex = np.zeros(n, dtype=bool)
            ex[excluded] = True
            out[b[ex[a]]] = True
            out[a[ex[b]]] = True
        keep &= ~out
    return np.flatnonzero(keep).astype(np.int64)
