"""Near-duplicates from the kNN graph: an image and an encoder neighbour whose pixel signatures (32 x 32 grey
thumbnails, embed.pixel_signature) match are near-copies. They match when the 16 x 16 thumbnails (zero mean, unit
norm) have cosine similarity >= a threshold, or, for a copy cropped by a few percent (which shifts and rescales the
thumbnail, so the plain cosine can fall to 0.73), when one thumbnail cropped to the box that best aligns it with the
other (:func:`aligned_similarity`) does, against a stricter threshold. Around the images the method ranks best,
groups form in which every member is a near-copy of the group's representative and no two representatives are
near-copies (:func:`groups_around_representatives`): only the representatives stay in the candidate pool, so no two
images ever proposed are a near-copy pair (duplicates.csv lists the others). The signature and not the embedding
decides, since the offline encoder at 64 px finds distinct photos as alike as re-encoded copies
(experiments/duplicate_threshold.py measures both).

Pure functions on arrays; the pipeline calls them, elfs/handback/near_copies.py writes what they return.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "aligned_similarity",
    "crop_boxes",
    "groups_around_representatives",
    "near_copy_pairs",
    "pair_similarity",
    "plain_signature",
    "pool",
    "preference",
]

#: pixels a side at which signatures are compared
SIDE = 16
#: crop boxes tried by aligned_similarity: side lengths 1, 1 - SCALE_STEP, ... and offsets OFFSET_STEP apart
SCALE_STEP, OFFSET_STEP = 0.01, 0.01


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows (float32) with zero mean and unit norm (an all-constant row stays zero)."""
    x = x - x.mean(axis=-1, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-6)


def _side(signature: np.ndarray) -> int:
    side = int(round(signature.shape[-1] ** 0.5))
    if side * side != signature.shape[-1] or side % SIDE:
        raise ValueError(f"signatures must be square thumbnails a multiple of {SIDE} px a side, got {signature.shape}")
    return side


def plain_signature(signature: np.ndarray) -> np.ndarray:
    """``[..., side^2]`` thumbnails (any dtype; embed.pixel_signature's int8) as ``[..., 256]`` float32 rows: the
    16 x 16 area average, zero mean and unit norm, what the plain cosine compares."""
    sig = np.asarray(signature)
    side = _side(sig)
    f = side // SIDE
    x = sig.astype(np.float32).reshape(*sig.shape[:-1], SIDE, f, SIDE, f).mean(axis=(-3, -1))
    return _unit(x.reshape(*sig.shape[:-1], SIDE * SIDE))


def pair_similarity(signature: np.ndarray, idx: np.ndarray, block: int = 4096) -> np.ndarray:
    """Plain cosine similarity of each image's 16 x 16 signature to each of its kNN neighbours' (``[N, k]``
    float32; -1 neighbours get 0). Every image's 16 x 16 signature is made once (float16, 512 bytes an image),
    then the pairs ``block`` rows at a time (memory: block x k x 256 floats, never N x N)."""
    sig = np.asarray(signature)
    plain = np.empty((len(sig), SIDE * SIDE), dtype=np.float16)
    for start in range(0, len(sig), block):
        plain[start : start + block] = plain_signature(sig[start : start + block])
    out = np.empty(idx.shape, dtype=np.float32)
    for start in range(0, len(idx), block):
        rows = plain[start : start + block].astype(np.float32)
        nb = plain[np.maximum(idx[start : start + block], 0)].astype(np.float32)  # [b, k, 256]
        out[start : start + block] = np.einsum("bd,bkd->bk", rows, nb)
    out[idx < 0] = 0.0
    return out


def _area_matrix(offset: float, length: float, side: int) -> np.ndarray:
    """``[SIDE, side]``: the SIDE cells covering [offset, offset + length] of a 1-D signal of ``side`` pixels over
    [0, 1], each the average of the pixels it overlaps (weighted by the overlap)."""
    cells = offset + length * np.arange(SIDE + 1) / SIDE
    px = np.arange(side + 1) / side
    lo, hi = cells[:-1, None], cells[1:, None]
    overlap = np.clip(np.minimum(hi, px[None, 1:]) - np.maximum(lo, px[None, :-1]), 0.0, None)
    return overlap / (hi - lo)


def crop_boxes(max_crop: float) -> list[tuple[float, float]]:
    """The 1-D boxes (offset, length) of a side that aligned_similarity tries: lengths from 1 down to
    ``1 - max_crop`` in SCALE_STEP steps, each at offsets OFFSET_STEP apart within [0, 1]."""
    boxes = []
    for k in range(int(round(max_crop / SCALE_STEP)) + 1):
        length = 1.0 - k * SCALE_STEP
        for j in range(int(round((1.0 - length) / OFFSET_STEP)) + 1):
            boxes.append((j * OFFSET_STEP, length))
    return boxes


def aligned_similarity(
    signature: np.ndarray, a: np.ndarray, b: np.ndarray, max_crop: float, block: int = 128
) -> np.ndarray:
    """For each pair (``a[p]``, ``b[p]``) of signature rows (square thumbnails, ``[N, side^2]``): the largest cosine
    between one thumbnail's square crop box (side 1 down to ``1 - max_crop`` of the picture, anywhere inside it),
    resampled to 16 x 16, and the other's plain 16 x 16 thumbnail, either way round (``[P]`` float32; the
    uncropped box is among them, so it is never below the plain cosine up to rounding). A copy cropped by a few
    percent a side, then resized, is its original's box: the best box undoes the shift and the scale. Memory:
    block x 81 x 256 floats; about 0.5 ms a pair on 2 cores with max_crop 0.08 (285 boxes)."""
    import torch

    sig = np.asarray(signature)
    side = _side(sig)
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    by_length: dict[float, list[float]] = {}
    for offset, length in crop_boxes(max_crop):
        by_length.setdefault(length, []).append(offset)
    # per length, every offset's cells stacked: R [k*16, side]; R @ img @ R.T holds all k x k boxes of that length
    mats = [
        torch.from_numpy(np.concatenate([_area_matrix(o, n, side) for o in offs]).astype(np.float32))
        for n, offs in by_length.items()
    ]
    out = np.empty(len(a), dtype=np.float32)
    for start in range(0, len(a), block):
        pa, pb = a[start : start + block], b[start : start + block]
        best = torch.full((len(pa),), -1.0)
        for x, y in ((pa, pb), (pb, pa)):
            img = torch.from_numpy(sig[x].astype(np.float32)).reshape(len(x), side, side)
            other = torch.from_numpy(plain_signature(sig[y]))  # zero mean: a crop's mean drops out of the dot
            for r in mats:
                k = r.shape[0] // SIDE
                crops = (r @ img @ r.T).reshape(len(x), k, SIDE, k, SIDE).transpose(2, 3).reshape(len(x), k * k, -1)
                dot = torch.einsum("pcd,pd->pc", crops, other)
                var = (crops * crops).sum(dim=2) - crops.sum(dim=2) ** 2 / (SIDE * SIDE)
                best = torch.maximum(best, (dot / var.clamp_min(1e-12).sqrt()).amax(dim=1))
        out[start : start + block] = best.numpy()
    return out


def _edges(idx: np.ndarray, sims: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, ...]:
    """The kNN edges under ``mask`` as pairs ``(a, b, similarity)``, ``a < b``, each pair once, sorted."""
    rows, cols = np.nonzero(mask)
    a, b, w = rows.astype(np.int64), idx[rows, cols].astype(np.int64), sims[rows, cols]
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    _, one = np.unique(lo * len(idx) + hi, return_index=True)  # a pair found from both sides once (same weight)
    one = one[lo[one] != hi[one]]
    return lo[one], hi[one], w[one]


def near_copy_pairs(
    idx: np.ndarray,
    signature: np.ndarray,
    threshold: float,
    crop_threshold: float | None = None,
    *,
    crop_gate: float | None = None,
    crop_candidates: int | None = None,
    max_crop: float | None = None,
) -> tuple[np.ndarray, ...]:
    """The near-copy pairs ``(a, b, similarity)`` (``a < b``, each pair once, sorted) among the kNN graph's edges
    (``idx``, ``[N, k]`` neighbours by embedding, -1 = none): those whose plain 16 x 16 signatures have cosine
    similarity >= ``threshold``; and, with ``crop_threshold``, of each image's neighbours below it but at or above
    ``crop_gate`` the ``crop_candidates`` most alike, if their :func:`aligned_similarity` (boxes down to
    ``1 - max_crop``) is >= ``crop_threshold``. The similarity is the one that admitted the pair. The encoder's
    neighbours are the candidates: what confirms a near-copy is that its pixels match. Aligning costs about
    0.5 ms a pair, so it is spent on the few pairs a crop can explain: a copy is its original's most alike
    neighbour."""
    idx, signature = np.asarray(idx), np.asarray(signature)
    if idx.ndim != 2 or signature.ndim != 2 or len(idx) != len(signature):
        raise ValueError(f"idx [N, k] and signature [N, dim] must have N rows, got {idx.shape}, {signature.shape}")
    for name, v in (("threshold", threshold), ("crop_threshold", crop_threshold), ("crop_gate", crop_gate)):
        if v is not None and not 0.0 < float(v) <= 1.0:
            raise ValueError(f"{name} must be a cosine similarity in (0, 1], got {v!r}")
    if crop_threshold is not None and None in (crop_gate, crop_candidates, max_crop):
        raise ValueError("crop_threshold needs crop_gate, crop_candidates and max_crop")
    if max_crop is not None and not 0.0 <= float(max_crop) < 0.5:
        raise ValueError(f"max_crop must be a fraction of the side in [0, 0.5), got {max_crop!r}")
    if crop_candidates is not None and (not isinstance(crop_candidates, int) or crop_candidates < 1):
        raise ValueError(f"crop_candidates must be a positive int, got {crop_candidates!r}")
    sims = pair_similarity(signature, idx)
    ok = (idx >= 0) & (idx != np.arange(len(idx))[:, None])
    plain = _edges(idx, sims, ok & (sims >= threshold))
    if crop_threshold is None:
        return plain
    band = ok & (sims >= crop_gate) & (sims < threshold)
    if crop_candidates < idx.shape[1]:  # each image's most alike candidates only (in blocks: bounded memory)
        for start in range(0, len(idx), 65536):
            part = band[start : start + 65536]
            alike = np.where(part, -sims[start : start + 65536], np.inf)
            top = np.argpartition(alike, crop_candidates - 1, axis=1)[:, :crop_candidates]
            chosen = np.zeros_like(part)
            np.put_along_axis(chosen, top, True, axis=1)
            part &= chosen
    lo, hi, _ = _edges(idx, sims, band)
    aligned = aligned_similarity(signature, lo, hi, max_crop)
    keep = aligned >= crop_threshold
    lo, hi, w = (np.concatenate(x) for x in zip(plain, (lo[keep], hi[keep], aligned[keep]), strict=True))
    order = np.argsort(lo * len(idx) + hi)
    return lo[order], hi[order], w[order]


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
