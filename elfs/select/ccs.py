"""Coverage-centric coreset selection (CCS, ICLR 2023; method.md §6.2), seeded and with an exact budget.

Steps: drop the round(beta*N) hardest; split the remaining hardness range into ``strata`` equal-width bins;
allocate the budget by water-filling (smallest bin first, ``avg = remaining // bins_left``); top up any
shortfall; sample uniformly without replacement inside each bin with one seeded numpy Generator.
"""

from __future__ import annotations

import numbers

import numpy as np

from elfs.select.ordering import (
    as_kept,
    check_hardness,
    easy_to_hard_order,
    subset_sizes,
    validate_seed,
)


def _validate_strata(strata: object) -> int:
    if isinstance(strata, (bool, np.bool_)) or not isinstance(strata, numbers.Integral) or int(strata) < 1:
        raise ValueError(f"strata={strata!r} must be a positive integer (number of equal-width bins)")
    return int(strata)


def stratum_ids(values: np.ndarray, strata: int) -> np.ndarray:
    """Bin id in [0, strata) of each value for ``strata`` equal-width bins over [min, max].

    Bin i is [lo + i*w, lo + (i+1)*w) and the last bin is closed, so the maximum is always binned
    (the reference's ``1.0001*max`` upper edge loses the maximum when max <= 0). Constant input -> bin 0.
    """
    k = _validate_strata(strata)
    v = check_hardness(values, name="values", finite=True)
    lo, hi = float(v.min()), float(v.max())
    if hi == lo:
        return np.zeros(v.size, dtype=np.int64)
    edges = np.linspace(lo, hi, k + 1)
    return np.searchsorted(edges[1:-1], v, side="right").astype(np.int64)


def water_fill(sizes: np.ndarray, budget: int) -> np.ndarray:
    """CCS budget allocation: visit bins smallest first, give each min(size, remaining // bins_left).

    Returns the per-bin allocation in the original bin order. Ties in size are visited in bin order.
    """
    s = np.asarray(sizes, dtype=np.int64)
    if s.ndim != 1 or np.any(s < 0):
        raise ValueError(f"sizes must be a 1-D array of non-negative counts, got {s!r}")
    if not (0 <= int(budget)):
        raise ValueError(f"budget={budget!r} must be a non-negative count")
    alloc = np.zeros_like(s)
    remaining = int(budget)
    order = np.argsort(s, kind="stable")
    for i, b in enumerate(order):
        take = min(int(s[b]), remaining // (s.size - i))
        alloc[b] = take
        remaining -= take
    return alloc


def top_up(alloc: np.ndarray, sizes: np.ndarray, target: int, rng: np.random.Generator) -> np.ndarray:
    """Raise ``alloc`` to sum exactly ``target`` without exceeding ``sizes``.

    Round-robin, one slot per bin per round, over bins that still have room, largest remaining capacity
    first (ties in a seeded random order). No-op (and no random draw) when nothing is missing.
    """
    a = np.asarray(alloc, dtype=np.int64).copy()
    s = np.asarray(sizes, dtype=np.int64)
    if a.shape != s.shape or np.any(a < 0) or np.any(a > s):
        raise ValueError(f"alloc={a!r} must be a non-negative allocation within sizes={s!r}")
    if int(target) > int(s.sum()) or int(target) < int(a.sum()):
        raise ValueError(f"target={target!r} must lie in [sum(alloc)={int(a.sum())}, sum(sizes)={int(s.sum())}]")
    missing = int(target) - int(a.sum())
    while missing > 0:
        room = s - a
        tiebreak = rng.permutation(s.size)
        # lexsort: last key is primary -> descending room, then the random tiebreak
        order = np.lexsort((tiebreak, -room))
        for b in order:
            if missing == 0 or room[b] == 0:
                break
            a[b] += 1
            missing -= 1
    return a


def ccs(hardness: np.ndarray, budget: float, beta: float = 0.0, *, strata: int = 50, seed: int) -> np.ndarray:
    """CCS: hard cut of round(beta*N), stratified (equal-width bins) uniform sampling of exactly round(budget*N).

    Returns the kept indices (sorted int64). Deterministic given ``seed``.
    """
    k = _validate_strata(strata)
    rng = np.random.default_rng(validate_seed(seed))
    h = check_hardness(hardness, finite=True)
    n_keep, n_hard = subset_sizes(h.size, budget, beta)
    survivors = np.sort(easy_to_hard_order(h)[: h.size - n_hard])  # global indices, ascending
    bins = stratum_ids(h[survivors], k)
    sizes = np.bincount(bins, minlength=k)
    alloc = top_up(water_fill(sizes, n_keep), sizes, n_keep, rng)
    chosen = [rng.choice(survivors[bins == b], size=int(alloc[b]), replace=False) for b in range(k) if alloc[b] > 0]
    kept = as_kept(np.concatenate(chosen))
    if kept.size != n_keep:  # pragma: no cover - guarded by top_up
        raise AssertionError(f"ccs selected {kept.size} examples, expected {n_keep}")
    return kept


__all__ = ["ccs", "stratum_ids", "water_fill", "top_up"]
