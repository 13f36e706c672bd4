"""ZCore's per-sample work on a CPU, compiled (numba): one sample a row, the rows split over the threads torch uses.

Each row scans every example once in the sample's subspace, in cache, with no Python between the steps; the rules
are those of the matrix form in :mod:`elfs.select.zcore` (float32 L1 distances, exact ties to the example whose
(id, salt) hashes lowest), so both find the same examples and the same penalties up to float64 rounding.
"""

from __future__ import annotations

import os

import numba
import numpy as np
import torch

_MASK = 0xFFFFFFFF

if "NUMBA_THREADING_LAYER" not in os.environ:
    # numba's OpenMP layer shares libgomp with torch, and its idle worker kept spinning at a third of a core through
    # every later torch training of the process (a proxy step took 20x longer); the work queue has no idle spin
    numba.config.THREADING_LAYER = "workqueue"


@numba.njit(cache=True, inline="always")
def _mix(v: int) -> int:
    """murmur3's 32-bit finaliser (as zcore._mix): distinct ids under one salt never hash alike."""
    v = v & _MASK
    v = ((v ^ (v >> 16)) * 0x85EBCA6B) & _MASK
    v = ((v ^ (v >> 13)) * 0xC2B2AE35) & _MASK
    return v ^ (v >> 16)


@numba.njit(cache=True)
def _nearest(dist, ids, salt) -> int:
    """The example of the smallest distance in ``dist`` (examples ``ids``); exact ties to the lowest hash."""
    best, pick, h = np.inf, -1, 0
    for m in range(len(dist)):
        v = dist[m]
        if v < best:
            best, pick, h = v, ids[m], _mix(ids[m] ^ salt)
        elif v == best:
            hm = _mix(ids[m] ^ salt)
            if hm < h:
                pick, h = ids[m], hm
    return pick


@numba.njit(cache=True)
def _row_distances(x, row, centre, out) -> None:
    """``out`` [N] = float32 L1 distances from ``centre`` over the dimensions ``row`` (added in their order)."""
    r0, c0 = row[0], centre[0]
    for m in range(x.shape[1]):
        out[m] = abs(x[r0, m] - c0)
    for j in range(1, len(row)):
        rj, cj = row[j], centre[j]
        for m in range(x.shape[1]):
            out[m] += abs(x[rj, m] - cj)


@numba.njit(cache=True)
def _spans(rows: int, parts: int) -> np.ndarray:
    """``parts`` + 1 bounds splitting ``rows`` into contiguous runs, one per thread."""
    return (np.arange(parts + 1) * rows) // parts


@numba.njit(cache=True)
def _kth(a, k: int):
    """The k-th smallest (0-based) of ``a``, reordering it in place (quickselect, median of three): numba's
    np.partition copies and runs about ten times slower on these rows."""
    lo, hi = 0, len(a) - 1
    while hi > lo:
        mid = (lo + hi) >> 1
        if a[mid] < a[lo]:
            a[mid], a[lo] = a[lo], a[mid]
        if a[hi] < a[lo]:
            a[hi], a[lo] = a[lo], a[hi]
        if a[hi] < a[mid]:
            a[hi], a[mid] = a[mid], a[hi]
        pivot, i, j = a[mid], lo, hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            return a[k]
    return a[k]


@numba.njit(cache=True)
def _by_shared_dimension(dims) -> np.ndarray:
    """The rows in order of their smallest dimension: consecutive rows then scan one column in common, which stays
    in the core's cache (each row's scan reads two columns of N floats, more than L1 and often more than L2)."""
    key = np.empty(len(dims), dtype=np.int64)
    for i in range(len(dims)):
        key[i] = dims[i].min()
    return np.argsort(key, kind="mergesort")


@numba.njit(parallel=True, cache=True)
def covered_rows(x, dims, points, salt, values, order, width: int, threads: int) -> np.ndarray:
    """Per sample, the example nearest its point (L1 over its dimensions ``dims``): among the ``width`` ranks
    around the point in its first dimension (``values``/``order``: each dimension sorted) where the window's edge
    proves it, else over every example. x [D, N] float32, points [B, dim] float32."""
    n, b = x.shape[1], dims.shape[0]
    out = np.empty(b, dtype=np.int64)
    parts = max(1, min(threads, b))
    span = _spans(b, parts)
    for t in numba.prange(parts):
        dist = np.empty(n, dtype=np.float32)
        window = np.empty(min(width, n), dtype=np.float32)
        everyone = np.arange(n)
        for i in range(span[t], span[t + 1]):
            row, p = dims[i], points[i]
            if width < n:
                first = min(max(np.searchsorted(values[row[0]], p[0]) - width // 2, 0), n - width)
                ids = order[row[0], first : first + width]
                for m in range(width):
                    window[m] = abs(values[row[0], first + m] - p[0])
                for j in range(1, len(row)):
                    for m in range(width):
                        window[m] += abs(x[row[j], ids[m]] - p[j])
                left = p[0] - values[row[0], first] if first > 0 else np.float32(np.inf)
                right = values[row[0], first + width - 1] - p[0] if first + width < n else np.float32(np.inf)
                if window.min() < min(left, right):  # everything outside is at least that far
                    out[i] = _nearest(window, ids, salt[i])
                    continue
            _row_distances(x, row, p, dist)
            out[i] = _nearest(dist, everyone, salt[i])
    return out


@numba.njit(cache=True, inline="always")
def _distance(x, row, centre, m: int):
    """float32 L1 distance of example ``m`` from ``centre`` over the dimensions ``row`` (added in their order)."""
    d = abs(x[row[0], m] - centre[0])
    for j in range(1, len(row)):
        d += abs(x[row[j], m] - centre[j])
    return d


@numba.njit(cache=True)
def _rank_limit(x, row, centre, covered: int, subset, rank: int, heap):
    """The ``rank``-th smallest distance to the examples ``subset`` (the covered one counts as infinitely far), in
    one pass with a max-heap of the ``rank`` smallest: far cheaper than selecting over the subset."""
    size = 0
    for s in subset:
        v = np.float32(np.inf) if s == covered else _distance(x, row, centre, s)
        if size < rank:  # fill: sift up
            j = size
            size += 1
            while j > 0 and heap[(j - 1) >> 1] < v:
                heap[j] = heap[(j - 1) >> 1]
                j = (j - 1) >> 1
            heap[j] = v
        elif v < heap[0]:  # replace the largest: sift down
            j = 0
            while True:
                child = 2 * j + 1
                if child >= rank:
                    break
                if child + 1 < rank and heap[child + 1] > heap[child]:
                    child += 1
                if heap[child] <= v:
                    break
                heap[j] = heap[child]
                j = child
            heap[j] = v
    return heap[0]


@numba.njit(cache=True)
def _within(x, row, centre, covered: int, limit, near, at) -> int:
    """The examples other than ``covered`` within ``limit``: their distances into ``near``, their indices into
    ``at`` (increasing); returns how many (one pass, the distance computed and tested together)."""
    c = 0
    if len(row) == 2:  # the reference's subspaces: both dimensions in one fused loop
        r0, r1, c0, c1 = row[0], row[1], centre[0], centre[1]
        for m in range(x.shape[1]):
            v = abs(x[r0, m] - c0) + abs(x[r1, m] - c1)
            if v <= limit and m != covered:
                near[c], at[c] = v, m
                c += 1
        return c
    for m in range(x.shape[1]):
        v = _distance(x, row, centre, m)
        if v <= limit and m != covered:
            near[c], at[c] = v, m
            c += 1
    return c


@numba.njit(cache=True, inline="always")
def _power(r, exponent):
    """r ** exponent, by repeated squaring for a small whole exponent (the reference's 4: a tenth of pow's time,
    within a few ulp of it)."""
    if exponent == np.floor(exponent) and 0 <= exponent <= 64:
        e, out = int(exponent), 1.0
        while e:
            if e & 1:
                out *= r
            r *= r
            e >>= 1
        return out
    return r**exponent


@numba.njit(cache=True)
def _members(near, at, k: int, salt, chosen, scratch) -> int:
    """The ``k`` nearest of the candidates (distances ``near`` to examples ``at``), exact ties at the k-th distance
    to the lowest hashes: their positions into ``chosen``; returns k."""
    scratch[: len(near)] = near
    kth = _kth(scratch[: len(near)], k - 1)
    c = 0
    for m in range(len(near)):
        if near[m] < kth:
            chosen[c] = m
            c += 1
    tied = np.flatnonzero(near == kth)
    need = k - c
    if len(tied) > need:
        h = np.empty(len(tied), dtype=np.int64)
        for m in range(len(tied)):
            h[m] = _mix(at[tied[m]] ^ salt)
        tied = tied[np.argsort(h)[:need]]
    for m in range(need):
        chosen[c + m] = tied[m]
    return k


@numba.njit(parallel=True, cache=True)
def penalty_rows(x, dims, centre, covered, k: int, exponent: float, salt, bound, out, threads: int):
    """Each sample's redundancy penalty where a bound settles it: its ``k`` nearest among the examples within the
    ``rank``-th smallest distance to ``subset`` (``bound`` = (subset, rank); an empty subset: every other example)
    share one point by 1 / distance ** exponent (an exact twin takes it whole). Writes the examples and weights
    into row i of ``out`` = (hit, weight) [B, k] each; returns how many each row holds (0: fewer than k within
    the bound: the caller runs that row again without one)."""
    n, b = x.shape[1], dims.shape[0]
    (subset, rank), (hit, weight) = bound, out
    count = np.zeros(b, dtype=np.int64)
    parts = max(1, min(threads, b))
    span = _spans(b, parts)
    order = _by_shared_dimension(dims)
    for t in numba.prange(parts):
        near = np.empty(n, dtype=np.float32)
        at = np.empty(n, dtype=np.int64)
        heap = np.empty(max(rank, 1), dtype=np.float32)
        chosen = np.empty(k, dtype=np.int64)
        scratch = np.empty(n, dtype=np.float32)
        for i in order[span[t] : span[t + 1]]:
            limit = np.float32(np.inf)  # no subset: every other example is a candidate
            if len(subset):
                limit = _rank_limit(x, dims[i], centre[i], covered[i], subset, rank, heap)
            c = _within(x, dims[i], centre[i], covered[i], limit, near, at)
            if c < k:
                continue  # too few within the bound
            _members(near[:c], at[:c], k, salt[i], chosen, scratch)
            low = np.inf
            for m in range(k):
                low = min(low, near[chosen[m]])
            if low == 0:  # an exact twin takes the whole point: one of every twin, by the same hash
                zero = np.flatnonzero(near[:c] == 0)
                hit[i, 0], weight[i, 0], count[i] = _nearest(np.zeros(len(zero)), at[zero], salt[i]), 1.0, 1
                continue
            total = 0.0
            for m in range(k):
                w = _power(np.float64(low) / np.float64(near[chosen[m]]), exponent)  # scaled by the nearest's
                weight[i, m], hit[i, m] = w, at[chosen[m]]
                total += w
            for m in range(k):
                weight[i, m] /= total
            count[i] = k
    return count


@numba.njit(cache=True)
def accumulate(delta, hit, weight, count) -> None:
    """``delta`` -= the rows' weights at their examples, row after row: the same sums for any thread count."""
    for i in range(len(count)):
        for m in range(count[i]):
            delta[hit[i, m]] -= weight[i, m]


def use_torch_threads() -> int:
    """Run the kernels on as many threads as torch (the project's one thread setting: one per xdist worker); the
    row runs to split them into (passed in: a compiled function that asks numba for it cannot be cached)."""
    threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(threads)
    return threads
