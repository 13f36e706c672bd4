"""ZCore (Griffin, Marks, Corso: "Zero-Shot Coreset Selection via Iterative Subspace Sampling", WACV 2026):
label-free and training-free scores over the embeddings alone; the selection keeps the highest scores.

Each of ``samples`` draws picks ``dim`` random embedding dimensions and a point in them from a triangular
distribution between the per-dimension minimum, median and maximum of the data. The example nearest to that point
(L1 in the subspace) gains one coverage credit; its ``neighbours`` nearest examples in the same subspace lose one
credit between them, each in proportion to 1 / distance ** ``exponent`` (an exact duplicate takes the whole
penalty). Scores start from uniform noise (``rand_init``) and are min-max normalised at the end.

:func:`zcore_scores` draws a block of samples at once and scores them as matrices (torch, on the GPU when given
one): the covered example is found in a window of ranks around the point in one dimension where the window's edge
proves it (:class:`SortedIndex`), and its neighbours among the examples within a distance that a fixed random
subset of the examples bounds (:func:`neighbour_subset`; checked per sample, else every example), so that no row
sorts or takes a top-1000 over every example (on a CPU, one sample a row, compiled with numba:
:mod:`elfs.select.zcore_kernels`). Exact ties (sparse embeddings
tie often) go to a random one of the tied examples by a salted hash, where the reference takes the first index.
:func:`zcore_scores_per_sample` is the plain one-sample-at-a-time form, as the reference code loops, kept for the
equivalence test and the benchmark.
The reference's forked workers share numpy's global random state, so each of them draws the same samples; here
every sample is an independent draw from one seeded generator.
"""

from __future__ import annotations

import numbers

import numpy as np

from elfs.select.monotonic import hardest
from elfs.select.ordering import validate_budget_beta, validate_seed
from elfs.select.prototypicality import _check_embeddings

#: samples drawn at once: the random stream (and so the scores) depends on it, never on the compute batch size
DRAW_BLOCK = 4096


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or int(value) < low:
        raise ValueError(f"{name}={value!r} must be an integer >= {low}")
    return int(value)


def _check_args(x: np.ndarray, samples: object, dim: object, neighbours: object, exponent: object) -> tuple:
    samples = _check_int("samples", samples, 1)
    dim = _check_int("dim", dim, 1)
    neighbours = _check_int("neighbours", neighbours, 1)
    if x.shape[0] < 2:
        raise ValueError(f"ZCore needs at least 2 embeddings, got {x.shape[0]}")
    if dim > x.shape[1]:
        raise ValueError(f"dim={dim} exceeds the embedding's {x.shape[1]} dimensions")
    if isinstance(exponent, bool) or not isinstance(exponent, numbers.Real) or not np.isfinite(exponent):
        raise ValueError(f"exponent={exponent!r} must be a finite real number")
    return samples, dim, min(neighbours, x.shape[0] - 1), float(exponent)


def triangular(u: np.ndarray, lo: np.ndarray, mode: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Triangular(lo, mode, hi) by inverting its CDF at ``u`` in [0, 1) (numpy's own formula); a dimension whose
    values are all equal (lo == hi, which numpy's sampler refuses) gives that value."""
    width = hi - lo
    with np.errstate(invalid="ignore", divide="ignore"):
        left = np.where(width > 0, (mode - lo) / width, 0.0)
    low_side = lo + np.sqrt(u * width * (mode - lo))
    high_side = hi - np.sqrt((1.0 - u) * width * (hi - mode))
    return np.where(u <= left, low_side, high_side)


def distinct_dims(rng: np.random.Generator, count: int, n_dim: int, dim: int) -> np.ndarray:
    """[count, dim] int64: per row ``dim`` distinct dimensions of ``n_dim``, uniformly (each later draw skips the
    earlier ones in increasing order), without drawing a permutation of every dimension per row."""
    out = np.empty((count, dim), dtype=np.int64)
    for j in range(dim):
        r = rng.integers(0, n_dim - j, size=count)
        for prev in np.sort(out[:, :j], axis=1).T:  # ascending: r moves past every earlier pick at or below it
            r = r + (r >= prev)
        out[:, j] = r
    return out


def embedding_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-dimension minimum, median and maximum (float64)."""
    return x.min(axis=0).astype(np.float64), np.median(x, axis=0), x.max(axis=0).astype(np.float64)


def _mix(x):
    """A 32-bit integer hash (murmur3's finaliser) of an int64 tensor: the same on every device."""
    m = 0xFFFFFFFF
    x = x & m
    x = ((x ^ (x >> 16)) * 0x85EBCA6B) & m
    x = ((x ^ (x >> 13)) * 0xC2B2AE35) & m
    return x ^ (x >> 16)


def _first_of_ties(values, ids, salt):
    """Per row, the column of the smallest value; exact ties go to the one whose (id, salt) hashes lowest, so
    that no example wins every tie by its index (sparse embeddings tie often: many exact zeros)."""
    import torch

    if values.shape[1] == 1:
        return torch.zeros(len(values), dtype=torch.int64, device=values.device)
    two = torch.topk(values, 2, dim=1, largest=False, sorted=True)  # one pass: the best and the runner-up
    pick = two.indices[:, 0].clone()
    rows = torch.nonzero(two.values[:, 0] == two.values[:, 1]).flatten()
    if len(rows):
        tied = values[rows] == two.values[rows, :1]
        h = _mix(ids[rows] ^ salt[rows, None])
        h = torch.where(tied, h, torch.full_like(h, 1 << 40))
        pick[rows] = h.argmin(1)
    return pick


def _l1(rows: list, centre):
    """[B, N] L1 distances in the subspace from ``rows`` (per subspace dimension, [B, N] each) to ``centre``."""
    out = (rows[0] - centre[:, :1]).abs_()
    for j in range(1, len(rows)):
        out += (rows[j] - centre[:, j : j + 1]).abs_()
    return out


class SortedIndex:
    """Each dimension's values sorted, for the windowed search of the example nearest a sample point: it is among
    the examples nearest the point in one dimension whenever its L1 distance is below the window's edge (checked per
    sample; else the full search runs)."""

    def __init__(self, xt) -> None:
        import torch

        self.values, self.order = torch.sort(xt, dim=1)  # [D, N] each
        self._flat = None

    @property
    def flat(self):
        """One increasing float64 array of every row, each row shifted above the last: one searchsorted for rows
        that differ (the matrix form's; made on first use, since it is as large as the values and order together)."""
        import torch

        if self._flat is None:
            v = self.values.double()
            self.low, self.span = float(v.min()), float(v.max() - v.min()) + 1.0
            rows = torch.arange(len(v), device=v.device, dtype=torch.float64)[:, None]
            self._flat = ((v - self.low) + rows * 2 * self.span).flatten()
        return self._flat

    def window(self, dim, centre, width: int):
        """For rows (dimension ``dim`` [B], value ``centre`` [B]): the examples of the ``width`` ranks around the
        centre [B, W], their values in that dimension [B, W], and the guard: every example outside the window lies
        at least that far from the centre in this dimension [B]."""
        import torch

        n, flat = self.values.shape[1], self.flat
        key = (centre.double() - self.low) + dim.double() * 2 * self.span
        pos = torch.searchsorted(flat, key) - dim * n
        first = (pos - width // 2).clamp(0, n - width)
        at = (dim * n + first)[:, None] + torch.arange(width, device=dim.device)  # flat: one gather, no index tuple
        vals = torch.take(self.values, at)
        left = torch.where(first > 0, centre - vals[:, 0], torch.full_like(centre, float("inf")))
        right = torch.where(first + width < n, vals[:, -1] - centre, torch.full_like(centre, float("inf")))
        return torch.take(self.order, at), vals, torch.minimum(left, right)


def _window_l1(xt, d, ex, vals, centre):
    """L1 distances [B, W] over the subspaces ``d`` [B, dim] from ``centre`` [B, dim] to the window's examples
    ``ex`` (their values in d[:, 0] given as ``vals``)."""
    import torch

    out = (vals - centre[:, :1]).abs_()
    for j in range(1, d.shape[1]):
        out += (torch.take(xt, d[:, j : j + 1] * xt.shape[1] + ex) - centre[:, j : j + 1]).abs_()
    return out


def _covered(xt, d, p, salt, index, width: int):
    """The example nearest each sample point (ties at random by ``salt``), windowed where the window settles it."""
    import torch

    n = xt.shape[1]
    b = len(d)
    covered = torch.empty(b, dtype=torch.int64, device=xt.device)
    todo = torch.ones(b, dtype=torch.bool, device=xt.device)
    if index is not None and width < n:
        ex, vals, guard = index.window(d[:, 0], p[:, 0], width)
        dist = _window_l1(xt, d, ex, vals, p)
        pick = _first_of_ties(dist, ex, salt)
        ok = dist.gather(1, pick[:, None]).flatten() < guard  # everything outside is at least guard away
        covered[ok] = ex[ok].gather(1, pick[ok][:, None]).flatten()
        todo = ~ok
    if bool(todo.any()):
        rows = [xt.index_select(0, d[todo, j]) for j in range(d.shape[1])]
        everyone = torch.arange(n, device=xt.device).expand(int(todo.sum()), n)
        covered[todo] = _first_of_ties(_l1(rows, p[todo]), everyone, salt[todo])
    return covered


def _covered_by_row(xt, d, p, salt, index: SortedIndex, width: int):
    """:func:`_covered` on a CPU, one sample a row, compiled (:mod:`elfs.select.zcore_kernels`): the same example
    (the window's edge proves it, else every example is scanned)."""
    import torch

    from elfs.select import zcore_kernels

    threads = zcore_kernels.use_torch_threads()
    x, values, order = xt.numpy(), index.values.numpy(), index.order.numpy()
    rows = zcore_kernels.covered_rows(x, d.numpy(), p.numpy(), salt.numpy(), values, order, width, threads)
    return torch.from_numpy(rows)


#: a covered example's neighbours are looked for among the examples within the distance at which a fixed random
#: subset of the examples holds MARGIN times its share of them; a row where they number fewer than the neighbours
#: (checked exactly, rare) takes every example instead. Either way the same neighbours: only the work changes.
MARGIN = 2.0
#: the order statistic taken in that subset (its size follows from it): larger estimates the distance more tightly,
#: smaller costs less per row (on a CPU the subset's distances are gathered from scattered columns: at 128 they took
#: a third of a row's time at 50,000 examples); at 32 with a margin of 2, about one row in 400 falls back
SUBSET_RANK = 32


def neighbour_subset(n: int, neighbours: int, margin: float = MARGIN) -> tuple[np.ndarray, int] | None:
    """The sorted random subset of examples whose distances bound the neighbours' and the order statistic to take in
    it (a fixed generator: it changes the work, never a score), or None where the examples are too few to gain."""
    if n < 6 * margin * neighbours:
        return None
    size = min(n, int(np.ceil(SUBSET_RANK * n / (margin * neighbours))))
    subset = np.sort(np.random.default_rng(0).choice(n, size, replace=False))
    return subset, max(1, min(size - 1, round(margin * neighbours * size / n)))


def _distances(xt, d, centre):
    """[B, N] L1 distances over the subspaces ``d`` [B, dim] from ``centre`` [B, dim] to every example (in place: one
    fresh matrix per dimension)."""
    dist = xt.index_select(0, d[:, 0]).sub_(centre[:, :1]).abs_()
    for j in range(1, d.shape[1]):
        dist.add_(xt.index_select(0, d[:, j]).sub_(centre[:, j : j + 1]).abs_())
    return dist


def _padded(row, dist, ids, b: int, k: int):
    """Rows of candidates from flat (row, distance, example) triples sorted by row: (distances [B, C] padded with inf,
    examples [B, C], and how many each row holds [B])."""
    import torch

    count = torch.bincount(row, minlength=b)
    pos = torch.arange(len(row), device=row.device) - (torch.cumsum(count, 0) - count)[row]
    width = max(int(count.max()) if len(row) else 0, k)
    out = torch.full((b * width,), float("inf"), dtype=dist.dtype, device=dist.device)
    out_ids = torch.zeros(b * width, dtype=torch.int64, device=dist.device)
    at = row * width + pos
    out.index_copy_(0, at, dist)
    out_ids.index_copy_(0, at, ids)
    return out.view(b, width), out_ids.view(b, width), count


def _candidates(dist, k: int, subset, rank: int):
    """The examples within the ``rank``-th smallest distance to ``subset`` [S], from the distances [B, N] to every
    example: (their distances [R, C] padded with inf, their examples [R, C]) for the rows where they number at least
    ``k`` (so the ``k`` nearest and every tie at the k-th distance are among them), and that row mask [B]."""
    import torch

    b, n = dist.shape
    limit = torch.topk(dist.index_select(1, subset), rank, dim=1, largest=False, sorted=True).values[:, -1:]
    at = torch.nonzero((dist <= limit).view(-1)).flatten()  # row-major: each row's examples together
    cand, ids, count = _padded(at // n, dist.view(-1).index_select(0, at), at % n, b, k)
    ok = count >= k
    return cand[ok], ids[ok], ok


def _penalties_by_row(xt, d, centre, covered, k: int, exponent: float, salt, subset=None, rank: int = 0):
    """:func:`_candidates` then :func:`_penalise` on a CPU, one sample a row, compiled
    (:mod:`elfs.select.zcore_kernels`), each row's scan staying in cache: the same float32 distances and the same
    rules for ties, so the same penalties up to float64 rounding. The penalties [N] (float64, numpy) of the rows
    settled, and those rows [B] (a torch mask); without a ``subset`` every other example is a candidate (all
    settled)."""
    import torch

    from elfs.select import zcore_kernels

    threads = zcore_kernels.use_torch_threads()
    b = len(d)
    hit, weight = np.empty((b, k), dtype=np.int64), np.empty((b, k), dtype=np.float64)  # read up to count only
    args = (xt.numpy(), d.numpy(), centre.numpy(), covered.numpy(), k, float(exponent), salt.numpy())
    subset = np.zeros(0, dtype=np.int64) if subset is None else np.asarray(subset, dtype=np.int64)
    count = zcore_kernels.penalty_rows(*args, (subset, rank), (hit, weight), threads)
    delta = np.zeros(xt.shape[1])
    zcore_kernels.accumulate(delta, hit, weight, count)
    return delta, torch.as_tensor(count > 0)


def _members(dist, ids, k: int, salt):
    """Per row of distances [B, C] (inf: no candidate) to examples ``ids`` [B, C]: the mask of the ``k`` nearest;
    exact ties at the k-th distance go to the examples whose (id, salt) hashes lowest, not to the first index."""
    import torch

    kth = torch.kthvalue(dist, k, dim=1, keepdim=True).values
    member = dist < kth
    tied = dist == kth
    need = k - member.sum(1)
    rows = torch.nonzero(tied.sum(1) > need).flatten()
    if len(rows):
        h = torch.where(tied[rows], _mix(ids[rows] ^ salt[rows, None]), torch.full_like(ids[rows], 1 << 40))
        rank = torch.empty_like(h)
        rank.scatter_(1, h.argsort(1), torch.arange(h.shape[1], device=h.device).expand_as(h).contiguous())
        tied[rows] = tied[rows] & (rank < need[rows, None])
    return member | tied


def _penalise(delta, dist, ids, k: int, exponent: float, salt) -> None:
    """Subtract each row's redundancy penalty from ``delta``: its ``k`` nearest (distances ``dist`` [B, C] to the
    examples ``ids`` [B, C], the covered one left out) share one point by 1 / distance ** exponent; where the nearest
    is an exact twin (distance 0) it takes the whole point (one of several at random)."""
    import torch

    member = _members(dist, ids, k, salt)
    d = dist.double()
    near = d.min(1, keepdim=True).values
    twin = near[:, 0] == 0
    w = torch.where(member, (near / d) ** exponent, 0.0)  # 1 / d**exponent scaled by the nearest's: no overflow
    w = w / w.sum(1, keepdim=True)
    if bool(twin.any()):
        pick = _first_of_ties(dist[twin], ids[twin], salt[twin])
        w[twin] = torch.zeros_like(w[twin]).scatter_(1, pick[:, None], 1.0)
    delta.index_add_(0, ids.reshape(-1), -w.reshape(-1))


def block_scores(
    xt, dims: np.ndarray, points: np.ndarray, neighbours: int, exponent: float, salt=None, index=None, bound=None
):
    """The score change [N] (float64 torch tensor on xt's device) from samples at ``points`` [B, dim] in the
    subspaces ``dims`` [B, dim]; ``xt`` is the transposed embedding [D, N] as a torch tensor. ``salt`` [B, 2]
    (int64) breaks exact ties between examples at random (the reference takes the first index); 0 without it.
    ``index`` (a :class:`SortedIndex` of xt) finds the covered examples in a window of ranks first, and ``bound``
    (:func:`neighbour_subset`) their neighbours among the few examples within a bound: the same result, less work.
    On a CPU with an index, each sample is a compiled row whose scans stay in cache; else blocks of rows as matrices
    (the GPU's form)."""
    import torch

    n = xt.shape[1]
    d = torch.as_tensor(dims, device=xt.device)
    p = torch.as_tensor(points, device=xt.device, dtype=xt.dtype)
    salt = torch.zeros((len(d), 2), dtype=torch.int64) if salt is None else torch.as_tensor(salt)
    salt = salt.to(xt.device)
    by_row = xt.device.type == "cpu" and index is not None  # compiled rows, each scan in cache
    if by_row:
        covered = _covered_by_row(xt, d, p, salt[:, 0], index, min(n, 1024))
    else:
        covered = _covered(xt, d, p, salt[:, 0], index, min(n, 1024))
    # its neighbours are the others: the reference drops the first of its sort, which is the covered example or,
    # for an exact twin, either of the two
    centre = xt[d, covered[:, None]]
    delta = torch.zeros(n, dtype=torch.float64, device=xt.device)
    delta.index_add_(0, covered, torch.ones(len(covered), dtype=torch.float64, device=xt.device))
    rest = torch.ones(len(d), dtype=torch.bool, device=xt.device)
    if by_row:
        part, ok = _penalties_by_row(xt, d, centre, covered, neighbours, exponent, salt[:, 1], *(bound or ()))
        if not bool(ok.all()):  # fewer than the neighbours within the bound: every other example is a candidate
            r = ~ok
            part += _penalties_by_row(xt, d[r], centre[r], covered[r], neighbours, exponent, salt[r, 1])[0]
        return delta + torch.from_numpy(part)
    elif bound is not None:
        dist = _distances(xt, d, centre).scatter_(1, covered[:, None], float("inf"))
        cand, ids, ok = _candidates(dist, neighbours, torch.as_tensor(bound[0], device=xt.device), bound[1])
        _penalise(delta, cand, ids, neighbours, exponent, salt[ok, 1])
        rest = ~ok
    if bool(rest.any()):  # every example is a candidate
        dist = _distances(xt, d[rest], centre[rest]).scatter_(1, covered[rest, None], float("inf"))
        _penalise(delta, dist, torch.arange(n, device=xt.device).expand_as(dist), neighbours, exponent, salt[rest, 1])
    return delta


def _normalise(scores: np.ndarray) -> np.ndarray:
    low, high = scores.min(), scores.max()
    return (scores - low) / (high - low) if high > low else np.zeros_like(scores)


def zcore_scores(
    embeddings: np.ndarray,
    *,
    samples: int,
    dim: int,
    neighbours: int,
    exponent: float,
    rand_init: bool = True,
    seed: int = 0,
    batch_size: int | None = None,
    device: str = "cpu",
) -> np.ndarray:
    """ZCore's float64 [N] scores in [0, 1] (higher = keep first), scored a block of samples at a time on
    ``device``; ``batch_size`` samples per matrix (default: by the device), which changes no result."""
    import torch

    x = _check_embeddings(embeddings)
    samples, dim, neighbours, exponent = _check_args(x, samples, dim, neighbours, exponent)
    rng = np.random.default_rng(validate_seed(seed))
    n, n_dim = x.shape
    lo, med, hi = embedding_stats(x)
    scores = rng.uniform(0.0, 1.0, n) if rand_init else np.zeros(n)
    xt = torch.from_numpy(np.ascontiguousarray(x.T, dtype=np.float32)).to(device)  # one copy, transposed
    index = SortedIndex(xt)
    bound = neighbour_subset(n, neighbours)
    if xt.device.type == "cpu":  # compiled rows: a draw block at once, [B, k] results
        per = batch_size or max(1, min(DRAW_BLOCK, (1 << 22) // neighbours))
    else:  # matrices of about 16 MiB on a CPU (they stay in cache), 1 GiB on a GPU
        per = batch_size or max(1, (1 << (28 if xt.device.type == "cuda" else 22)) // (n * dim))
    total = torch.zeros(n, dtype=torch.float64, device=xt.device)
    for start in range(0, samples, DRAW_BLOCK):
        count = min(DRAW_BLOCK, samples - start)
        dims = distinct_dims(rng, count, n_dim, dim)
        points = triangular(rng.uniform(0.0, 1.0, (count, dim)), lo[dims], med[dims], hi[dims])
        salt = rng.integers(0, 1 << 32, size=(count, 2), dtype=np.int64)
        for b in range(0, count, per):
            part = slice(b, b + per)
            total += block_scores(xt, dims[part], points[part], neighbours, exponent, salt[part], index, bound)
    return _normalise(scores + total.cpu().numpy())


def zcore_scores_per_sample(
    embeddings: np.ndarray,
    *,
    samples: int,
    dim: int,
    neighbours: int,
    exponent: float,
    rand_init: bool = True,
    seed: int = 0,
) -> np.ndarray:
    """The same scores one sample at a time, as the reference code loops (numpy, its draws in its order): the
    plain form the batched one is tested and timed against."""
    x = _check_embeddings(embeddings)
    samples, dim, neighbours, exponent = _check_args(x, samples, dim, neighbours, exponent)
    rng = np.random.default_rng(validate_seed(seed))
    n, n_dim = x.shape
    lo, med, hi = embedding_stats(x)
    scores = rng.uniform(0.0, 1.0, n) if rand_init else np.zeros(n)
    for _ in range(samples):
        d = rng.choice(n_dim, dim, replace=False)
        point = rng.triangular(lo[d], med[d], hi[d])
        idx = int(np.argmin(np.abs(x[:, d] - point).sum(axis=1)))
        scores[idx] += 1
        nn_dist = np.abs(x[:, d] - x[idx, d]).sum(axis=1)
        nn = np.argsort(nn_dist)[1:]
        if nn_dist[nn[0]] == 0:
            scores[nn[0]] -= 1
        else:
            nn = nn[:neighbours]
            penalty = 1.0 / nn_dist[nn] ** exponent
            scores[nn] -= penalty / penalty.sum()
    return _normalise(scores)


def zcore_select(scores: np.ndarray, budget: float) -> np.ndarray:
    """Keep the round(budget * N) highest ZCore scores; kept indices (sorted int64)."""
    validate_budget_beta(budget)
    return hardest(np.asarray(scores, dtype=np.float64), budget)


__all__ = ["zcore_scores", "zcore_scores_per_sample", "zcore_select", "block_scores", "triangular", "distinct_dims"]
