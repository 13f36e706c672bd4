"""D2 pruning (Maharana, Yadav, Bansal, ICLR 2024; method.md §8.3), as the authors' reference code runs it.

Reference: ``adymaharana/d2pruning`` @ bf1ea46 — ``selection_mp.py`` (modes), ``core/data/Coreset.py``
(``stratified_sampling``, ``bin_allocate``) and ``core/data/sampling.py`` (``GraphDensitySampler``, the
non-precomputed branch used by the README commands: ``--graph-mode sum --graph-sampling-mode weighted``).

Steps: hard cut of the round(beta*N) highest ``hardness``; then for each POOL, a fresh graph and message passing:

* ``mode="stratified"`` (the label-free ``--coreset-mode stratified``, selection_mp.py:86-163): the pools are
  ``strata`` equal-width bins of the survivors' RAW hardness (Coreset.py:169-184; ``--graph-score`` is off by
  default, train.py:64), the budget is water-filled over them (Coreset.py:186-187, ``bin_allocate``);
* ``mode="global"`` (ImageNet, ``--coreset-mode graph``, selection_mp.py:238-266): one pool, all survivors.

Inside a pool of m examples (Coreset.py:280-292, sampling.py:242-288, 378-402):

1. k-NN graph (self excluded) on the raw embeddings, Euclidean, symmetrised: j is i's neighbour when either is
   among the other's k nearest (sampling.py:252, 259-274);
2. forward pass: f_i = h_i + sum_{j in N(i)} exp(-d_ij) * max(h_j, 1e-7) (sampling.py:271, 283; no gamma; only
   the neighbours' scores are clipped, the node's own h_i is not);
3. reverse pass, ``count`` times: pick the unpicked node with the highest f (ties: lowest index, ``np.argmax``
   over the pool in ascending index order), then f_j -= exp(-gamma*d_ij) * f_i for every neighbour j
   (sampling.py:388-401; f_i is not clipped, so a negative pick raises its neighbours).

A pool of at most k examples is too small for the graph; the reference samples it uniformly at random
(Coreset.py:281-283), here with the seeded Generator that also breaks the water-fill top-up ties.
Deviation: an edge whose message ``exp(-d)*max(h_j, 1e-7)`` underflows to 0 (d > ~730) still counts as an edge
in the reverse pass here, while the reference's ``connect > 0`` test (sampling.py:392) drops it.
"""

from __future__ import annotations

import heapq
import numbers
from typing import NamedTuple

import numpy as np

from elfs.select.ccs import _validate_strata, stratum_ids, top_up, water_fill
from elfs.select.ordering import (
    as_kept,
    as_real,
    check_hardness,
    easy_to_hard_order,
    subset_sizes,
    validate_budget_beta,
    validate_seed,
)

#: The reference clips a neighbour's score at this floor inside the forward message (sampling.py:249, 271).
SCORE_FLOOR = 1e-7
#: Extra faiss candidates per node, re-ranked by exact float64 distance, so float32 rounding cannot swap the k-th.
CANDIDATE_MARGIN = 8
#: Rows per chunk when checking or differencing embeddings (bounds temporary memory at ImageNet scale).
CHUNK = 65536
MODES = ("stratified", "global")


class Graph(NamedTuple):
    """Symmetrised k-NN graph of one pool in CSR form: node i's neighbours are ``nbr[ptr[i]:ptr[i+1]]``."""

    ptr: np.ndarray  # int64 [m + 1]
    nbr: np.ndarray  # int64 [E], ascending within each row
    dist: np.ndarray  # float64 [E], Euclidean distance of each edge


def _check_mode(mode: object) -> str:
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not valid; choose one of {list(MODES)} (global = one graph, no strata)")
    return str(mode)


def _check_k(k: object) -> int:
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, numbers.Integral) or int(k) < 1:
        raise ValueError(f"k={k!r} must be a positive integer (neighbours per node in the k-NN graph)")
    return int(k)


def _check_gamma(gamma: object) -> float:
    g = as_real("gamma", gamma)
    if not (np.isfinite(g) and g >= 0.0):
        raise ValueError(f"gamma={g!r} must be a finite real >= 0 (reverse kernel exp(-gamma*d))")
    return g


def _check_embeddings(embeddings: object, n: int) -> np.ndarray:
    """Return ``embeddings`` as a C-contiguous float32 [N, D] array; ValueError on a bad shape or a non-finite row."""
    try:
        x = np.ascontiguousarray(embeddings, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise ValueError(f"embeddings must be a float array [N={n}, D], got {type(embeddings).__name__}") from err
    if x.ndim != 2 or x.shape[0] != n or x.shape[1] == 0:
        raise ValueError(f"embeddings must have shape [N={n}, D>=1] (one row per hardness value), got {x.shape}")
    for start in range(0, n, CHUNK):
        bad = ~np.isfinite(x[start : start + CHUNK]).all(axis=1)
        if bad.any():
            raise ValueError(f"embeddings row {start + int(np.argmax(bad))} is not finite; every value must be finite")
    return x


def pair_distance(x: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Euclidean distance ||x_i - x_j|| of each index pair, in float64, computed in chunks."""
    out = np.empty(i.size, dtype=np.float64)
    for s in range(0, i.size, CHUNK):
        diff = x[i[s : s + CHUNK]].astype(np.float64) - x[j[s : s + CHUNK]]
        out[s : s + CHUNK] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    return out


def knn(x: np.ndarray, k: int) -> np.ndarray:
    """k nearest neighbours of each row (self excluded) by exact Euclidean distance, ties to the lowest index.

    faiss ``IndexFlatL2`` proposes ``k + 1 + CANDIDATE_MARGIN`` candidates in float32; they are re-ranked by
    float64 distance. Requires ``k < len(x)``.
    """
    m = x.shape[0]
    c = min(m, k + 1 + CANDIDATE_MARGIN)
    import faiss

    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    _, cand = index.search(x, c)
    cand = cand.astype(np.int64)
    rows = np.repeat(np.arange(m, dtype=np.int64), c)
    d = pair_distance(x, rows, cand.ravel()).reshape(m, c)
    d[cand == np.arange(m)[:, None]] = np.inf  # self is never its own neighbour
    order = np.lexsort((cand, d), axis=-1)[:, :k]
    return np.take_along_axis(cand, order, axis=1)


def knn_graph(x: np.ndarray, k: int) -> Graph:
    """Symmetrised k-NN graph of the rows of ``x`` with exact float64 edge distances (sampling.py:252-274)."""
    m = x.shape[0]
    nn = knn(x, k)
    src = np.repeat(np.arange(m, dtype=np.int64), k)
    dst = nn.ravel()
    key = np.unique(np.concatenate([src * m + dst, dst * m + src]))  # both directions, deduplicated, sorted
    rows, nbr = key // m, key % m
    ptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=m))]).astype(np.int64)
    return Graph(ptr, nbr, pair_distance(x, rows, nbr))


def d2_forward(hardness: np.ndarray, graph: Graph) -> np.ndarray:
    """Forward pass ("sum"): f_i = h_i + sum_{j in N(i)} exp(-d_ij) * max(h_j, SCORE_FLOOR)."""
    h = np.asarray(hardness, dtype=np.float64)
    rows = np.repeat(np.arange(h.size), np.diff(graph.ptr))
    msg = np.exp(-graph.dist) * np.maximum(h[graph.nbr], SCORE_FLOOR)
    return h + np.bincount(rows, weights=msg, minlength=h.size)


def d2_reverse(score: np.ndarray, graph: Graph, count: int, gamma: float) -> np.ndarray:
    """Greedy reverse pass ("weighted"): ``count`` picks, each lowering its neighbours by exp(-gamma*d) * its score.

    Returns the picked positions in pick order. Lazy max-heap, ties to the lowest position: O((m + count*deg) log m).
    """
    value = np.array(score, dtype=np.float64)
    weight = np.exp(-gamma * graph.dist)
    picked = np.zeros(value.size, dtype=bool)
    heap = [(-v, i) for i, v in enumerate(value.tolist())]
    heapq.heapify(heap)
    chosen: list[int] = []
    while len(chosen) < count:
        neg, i = heapq.heappop(heap)
        if picked[i] or -neg != value[i]:  # already picked, or a stale entry (the value changed since the push)
            continue
        picked[i] = True
        chosen.append(i)
        lo, hi = int(graph.ptr[i]), int(graph.ptr[i + 1])
        for j, w in zip(graph.nbr[lo:hi].tolist(), weight[lo:hi].tolist(), strict=True):
            if not picked[j]:
                value[j] -= w * value[i]
                heapq.heappush(heap, (-float(value[j]), j))
    return np.asarray(chosen, dtype=np.int64)


def d2_pool(h: np.ndarray, x: np.ndarray, count: int, k: int, gamma: float, rng: np.random.Generator) -> np.ndarray:
    """D2 inside one pool (fresh graph, forward, reverse); positions of the ``count`` picks within the pool."""
    m = h.size
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    if m <= k:  # too small for a k-NN graph: uniform random, as the reference (Coreset.py:281-283)
        return rng.choice(m, size=count, replace=False).astype(np.int64)
    graph = knn_graph(x, k)
    return d2_reverse(d2_forward(h, graph), graph, count, gamma)


def d2_select(
    hardness: np.ndarray,
    embeddings: np.ndarray,
    budget: float,
    beta: float = 0.0,
    *,
    mode: str = "stratified",
    strata: int = 50,
    gamma: float = 0.1,
    k: int = 5,
    seed: int,
) -> np.ndarray:
    """D2 pruning: keep exactly round(budget*N) examples (sorted int64 indices) balancing difficulty and diversity.

    ``hardness`` (N, higher = harder) is the node score; ``embeddings`` (N x D) are used RAW, not L2-normalised:
    the reference builds its graph on unnormalised features (np.load, selection_mp.py:98; sampling.py:245, 252)
    and its gamma (0.1 in the README) and forward kernel exp(-d) are calibrated to those Euclidean distances.
    ``strata`` is ignored when ``mode="global"``. ``seed`` only drives the top-up ties and pools of <= k examples.
    """
    m = _check_mode(mode)
    n_strata = _validate_strata(strata)
    g = _check_gamma(gamma)
    kk = _check_k(k)
    rng = np.random.default_rng(validate_seed(seed))
    budget, beta = validate_budget_beta(budget, beta)
    h = check_hardness(hardness, finite=True)
    x = _check_embeddings(embeddings, h.size)
    n_keep, n_hard = subset_sizes(h.size, budget, beta)
    survivors = np.sort(easy_to_hard_order(h)[: h.size - n_hard])  # ascending global index, as the reference's pool
    if m == "global":
        pools, alloc = [survivors], np.array([n_keep])
    else:
        bins = stratum_ids(h[survivors], n_strata)
        sizes = np.bincount(bins, minlength=n_strata)
        alloc = top_up(water_fill(sizes, n_keep), sizes, n_keep, rng)
        pools = [survivors[bins == b] for b in range(n_strata)]
    chosen = [p[d2_pool(h[p], x[p], int(c), kk, g, rng)] for p, c in zip(pools, alloc, strict=True) if c > 0]
    kept = as_kept(np.concatenate(chosen))
    if kept.size != n_keep or np.unique(kept).size != n_keep:  # pragma: no cover - guarded by top_up
        raise AssertionError(f"d2_select selected {kept.size} examples, expected {n_keep} distinct")
    return kept


__all__ = ["MODES", "Graph", "d2_forward", "d2_pool", "d2_reverse", "d2_select", "knn", "knn_graph", "pair_distance"]
