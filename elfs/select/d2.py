"""D2 pruning (Maharana, Yadav, Bansal, ICLR 2024; method.md §8.3) over a precomputed kNN graph.

Steps: hard cut of the round(beta*N) highest scores; forward message passing ("sum") over the survivors' graph;
CCS strata over the forward scores (water-fill + top-up, exact budget); inside each stratum, greedy reverse message
passing ("weighted"). Conventions follow the reference ``adymaharana/d2pruning`` (``core/data/sampling.py``
``GraphDensitySampler`` precomputed-graph branch, ``core/data/Coreset.py`` ``stratified_sampling``):

* neighbour lists are DIRECTED: node i's neighbours are row i of ``knn_idx`` (its first ``k`` columns);
* the forward kernel is exp(-d) with no gamma; the reverse kernel is exp(-gamma*d);
* the reference builds a fresh graph per stratum, so a pick only lowers unpicked neighbours in the SAME stratum;
  hard-cut nodes are out of the graph (they neither send nor receive messages).
"""

from __future__ import annotations

import heapq
import numbers

import numpy as np

from elfs.select.ccs import _validate_strata, stratum_ids, top_up, water_fill
from elfs.select.validate import (
    as_kept,
    as_real,
    check_hardness,
    easy_to_hard_order,
    subset_sizes,
    validate_budget_beta,
    validate_seed,
)

#: Cosine similarities may exceed [-1, 1] by float32 rounding; anything beyond this slack is not a cosine.
SIM_TOLERANCE = 1e-3


def _check_knn_idx(knn_idx: object, n: int) -> np.ndarray:
    idx = np.asarray(knn_idx)
    if not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"knn_idx must be an integer array [N, k], got dtype {idx.dtype}")
    if idx.ndim != 2 or idx.shape[0] != n or idx.shape[1] == 0:
        raise ValueError(f"knn_idx must have shape [N={n}, k>=1] (one neighbour row per example), got {idx.shape}")
    out = (idx < 0) | (idx >= n)
    if out.any():
        r, c = (int(v[0]) for v in np.nonzero(out))
        raise ValueError(f"knn_idx[{r}, {c}]={int(idx[r, c])} is outside [0, N={n})")
    self_loop = idx == np.arange(n)[:, None]
    if self_loop.any():
        r, c = (int(v[0]) for v in np.nonzero(self_loop))
        raise ValueError(f"knn_idx[{r}, {c}]={r} is the row itself; neighbour lists must exclude self")
    srt = np.sort(idx, axis=1)
    dup = srt[:, 1:] == srt[:, :-1]
    if dup.any():
        r = int(np.nonzero(dup.any(axis=1))[0][0])
        raise ValueError(f"knn_idx row {r} repeats a neighbour ({idx[r].tolist()}); neighbours must be distinct")
    return idx.astype(np.int64, copy=False)


def _check_pair_array(name: str, values: object, shape: tuple[int, ...]) -> np.ndarray:
    try:
        v = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a float array of shape {shape}, got {type(values).__name__}") from err
    if v.shape != shape:
        raise ValueError(f"{name} has shape {v.shape} but knn_idx has shape {shape}; they must match")
    bad = ~np.isfinite(v)
    if bad.any():
        r, c = (int(x[0]) for x in np.nonzero(bad))
        raise ValueError(f"{name}[{r}, {c}]={float(v[r, c])!r} is not finite")
    return v


def _check_k(k: object, width: int) -> int:
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, numbers.Integral) or not (1 <= int(k) <= width):
        raise ValueError(f"k={k!r} must be an integer in [1, {width}] (knn_idx has {width} neighbour columns)")
    return int(k)


def _check_gamma(gamma: object) -> float:
    g = as_real("gamma", gamma)
    if not (np.isfinite(g) and g >= 0.0):
        raise ValueError(f"gamma={g!r} must be a finite real >= 0 (reverse kernel exp(-gamma*d))")
    return g


def cosine_to_distance(sim: np.ndarray) -> np.ndarray:
    """Euclidean distance between L2-normalised vectors from their cosine similarity: sqrt(max(0, 2 - 2*sim))."""
    s = np.asarray(sim, dtype=np.float64)
    bad = ~np.isfinite(s) | (np.abs(s) > 1.0 + SIM_TOLERANCE)
    if bad.any():
        first = tuple(int(x[0]) for x in np.nonzero(bad)) if s.ndim else ()
        raise ValueError(
            f"sim{list(first)}={float(s[first])!r} is not a cosine similarity: values must be finite and in [-1, 1]"
        )
    return np.sqrt(np.maximum(0.0, 2.0 - 2.0 * s))


def d2_forward(
    score: np.ndarray, knn_idx: np.ndarray, knn_dist: np.ndarray, *, active: np.ndarray | None = None
) -> np.ndarray:
    """Forward message passing, mode "sum": s'_i = s_i + sum_{j in row i} exp(-d_ij) * s_j (no gamma).

    ``active`` (bool [N], optional) removes nodes from the graph: inactive neighbours send nothing.
    """
    s = check_hardness(score, name="score", finite=True)
    idx = _check_knn_idx(knn_idx, s.size)
    dist = _check_pair_array("knn_dist", knn_dist, idx.shape)
    if np.any(dist < 0):
        r, c = (int(x[0]) for x in np.nonzero(dist < 0))
        raise ValueError(f"knn_dist[{r}, {c}]={float(dist[r, c])!r} is negative; distances must be >= 0")
    msg = np.exp(-dist) * s[idx]
    if active is not None:
        a = np.asarray(active)
        if a.dtype != np.bool_ or a.shape != s.shape:
            raise ValueError(f"active must be a bool array of shape {s.shape}, got {a.dtype} {a.shape}")
        msg = np.where(a[idx], msg, 0.0)
    return s + msg.sum(axis=1)


def _reverse_pick(
    members: np.ndarray,
    count: int,
    value: np.ndarray,
    stratum: np.ndarray,
    b: int,
    nbr: np.ndarray,
    weight: np.ndarray,
    picked: np.ndarray,
) -> list[int]:
    """Greedy reverse message passing inside stratum ``b`` with a lazy max-heap; mutates ``value`` and ``picked``.

    Picks the unpicked member with the highest current value (ties: lowest index); then for each neighbour j of
    the pick k in the same stratum and unpicked: value[j] -= weight[k, j] * value[k]. O(size * k * log size).
    """
    heap = [(-float(value[i]), int(i)) for i in members]
    heapq.heapify(heap)
    chosen: list[int] = []
    while len(chosen) < count:
        neg, i = heapq.heappop(heap)
        if picked[i] or -neg != value[i]:  # already picked or a stale entry (the value changed since the push)
            continue
        picked[i] = True
        chosen.append(i)
        vi = value[i]
        for j, w in zip(nbr[i].tolist(), weight[i].tolist(), strict=True):
            if stratum[j] == b and not picked[j]:
                value[j] -= w * vi
                heapq.heappush(heap, (-float(value[j]), j))
    return chosen


def d2_select(
    score: np.ndarray,
    knn_idx: np.ndarray,
    knn_sim: np.ndarray,
    budget: float,
    beta: float = 0.0,
    *,
    strata: int = 25,
    gamma: float = 0.1,
    k: int = 5,
    seed: int,
) -> np.ndarray:
    """D2 pruning: keep exactly round(budget*N) examples, balancing difficulty (``score``, higher = harder) and
    diversity over the kNN graph (first ``k`` columns of ``knn_idx`` / cosine ``knn_sim``).

    Returns the kept indices (sorted int64). Deterministic given ``seed`` (used only by the CCS top-up); greedy
    ties go to the lowest index, as the reference's ``np.argmax`` does.
    """
    n_strata = _validate_strata(strata)
    g = _check_gamma(gamma)
    rng = np.random.default_rng(validate_seed(seed))
    budget, beta = validate_budget_beta(budget, beta)
    s = check_hardness(score, name="score", finite=True)
    n = s.size
    idx_full = np.asarray(knn_idx)
    if idx_full.ndim != 2:
        raise ValueError(f"knn_idx must have shape [N={n}, k>=1], got {idx_full.shape}")
    kk = _check_k(k, idx_full.shape[1])
    sim_full = np.asarray(knn_sim)
    if sim_full.shape != idx_full.shape:
        raise ValueError(f"knn_sim has shape {sim_full.shape} but knn_idx has shape {idx_full.shape}; they must match")
    nbr = _check_knn_idx(idx_full[:, :kk], n)
    dist = cosine_to_distance(_check_pair_array("knn_sim", sim_full[:, :kk], nbr.shape))

    n_keep, n_hard = subset_sizes(n, budget, beta)
    survivors = np.sort(easy_to_hard_order(s)[: n - n_hard])
    active = np.zeros(n, dtype=bool)
    active[survivors] = True
    forward = d2_forward(s, nbr, dist, active=active)

    bins = stratum_ids(forward[survivors], n_strata)
    sizes = np.bincount(bins, minlength=n_strata)
    alloc = top_up(water_fill(sizes, n_keep), sizes, n_keep, rng)
    stratum = np.full(n, -1, dtype=np.int64)
    stratum[survivors] = bins
    weight = np.exp(-g * dist)
    value = forward.copy()
    picked = np.zeros(n, dtype=bool)
    chosen: list[int] = []
    for b in range(n_strata):
        if alloc[b] > 0:
            chosen += _reverse_pick(survivors[bins == b], int(alloc[b]), value, stratum, b, nbr, weight, picked)
    kept = as_kept(np.asarray(chosen, dtype=np.int64))
    if kept.size != n_keep:  # pragma: no cover - guarded by top_up
        raise AssertionError(f"d2_select selected {kept.size} examples, expected {n_keep}")
    return kept


__all__ = ["cosine_to_distance", "d2_forward", "d2_select"]
