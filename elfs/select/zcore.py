"""ZCore (Griffin, Marks, Corso: "Zero-Shot Coreset Selection via Iterative Subspace Sampling", WACV 2026):
label-free and training-free scores over the embeddings alone; the selection keeps the highest scores.

Each of ``samples`` draws picks ``dim`` random embedding dimensions and a point in them from a triangular
distribution between the per-dimension minimum, median and maximum of the data. The example nearest to that point
(L1 in the subspace) gains one coverage credit; its ``neighbours`` nearest examples in the same subspace lose one
credit between them, each in proportion to 1 / distance ** ``exponent`` (an exact duplicate takes the whole
penalty). Scores start from uniform noise (``rand_init``) and are min-max normalised at the end.

:func:`zcore_scores` draws a block of samples at once and scores them as matrices (torch, on the GPU when given
one); :func:`zcore_scores_per_sample` is the plain one-sample-at-a-time form, as the reference code loops, kept
for the equivalence test and the benchmark. The reference's forked workers share numpy's global random state,
so each of them draws the same samples; here every sample is an independent draw from one seeded generator.
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
        v = self.values.double()
        low, span = float(v.min()), float(v.max() - v.min()) + 1.0
        # one increasing array of every row, each row shifted above the last: one searchsorted for rows that differ
        self.flat = (v - low) + torch.arange(len(v), device=v.device, dtype=torch.float64)[:, None] * 2 * span
        self.flat, self.low, self.span = self.flat.flatten(), low, span

    def window(self, dim, centre, width: int):
        """For rows (dimension ``dim`` [B], value ``centre`` [B]): the examples of the ``width`` ranks around the
        centre [B, W], their values in that dimension [B, W], and the guard: every example outside the window lies
        at least that far from the centre in this dimension [B]."""
        import torch

        n = self.values.shape[1]
        key = (centre.double() - self.low) + dim.double() * 2 * self.span
        pos = torch.searchsorted(self.flat, key) - dim * n
        first = (pos - width // 2).clamp(0, n - width)
        cols = first[:, None] + torch.arange(width, device=dim.device)
        vals = self.values[dim[:, None], cols]
        left = torch.where(first > 0, centre - vals[:, 0], torch.full_like(centre, float("inf")))
        right = torch.where(first + width < n, vals[:, -1] - centre, torch.full_like(centre, float("inf")))
        return self.order[dim[:, None], cols], vals, torch.minimum(left, right)


def _window_l1(xt, d, ex, vals, centre):
    """L1 distances [B, W] over the subspaces ``d`` [B, dim] from ``centre`` [B, dim] to the window's examples
    ``ex`` (their values in d[:, 0] given as ``vals``)."""
    out = (vals - centre[:, :1]).abs_()
    for j in range(1, d.shape[1]):
        out += (xt[d[:, j : j + 1], ex] - centre[:, j : j + 1]).abs_()
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
        rows = [xt[d[todo, j]] for j in range(d.shape[1])]
        everyone = torch.arange(n, device=xt.device).expand(int(todo.sum()), n)
        covered[todo] = _first_of_ties(_l1(rows, p[todo]), everyone, salt[todo])
    return covered


def _neighbours(xt, d, covered, k: int):
    """The ``k`` nearest others of each covered example in its subspace: (distances, examples) [B, k], ascending.
    Over every example: a window of ranks rarely holds them (the strip around a point in one dimension holds far
    more than its L1 ball, most of all around the outlying examples that coverage favours; measured)."""
    import torch

    centre = xt[d, covered[:, None]]  # [B, dim]
    nn_dist = xt[d[:, 0]].sub_(centre[:, :1]).abs_()  # [B, N], in place: one fresh matrix per dimension
    for j in range(1, d.shape[1]):
        nn_dist.add_(xt[d[:, j]].sub_(centre[:, j : j + 1]).abs_())
    nn_dist.scatter_(1, covered[:, None], float("inf"))
    return torch.topk(nn_dist, k, dim=1, largest=False, sorted=True)


def block_scores(xt, dims: np.ndarray, points: np.ndarray, neighbours: int, exponent: float, salt=None, index=None):
    """The score change [N] (float64 torch tensor on xt's device) from samples at ``points`` [B, dim] in the
    subspaces ``dims`` [B, dim]; ``xt`` is the transposed embedding [D, N] as a torch tensor. ``salt`` [B, 2]
    (int64) breaks exact ties between examples at random (the reference takes the first index); 0 without it.
    ``index`` (a :class:`SortedIndex` of xt) finds the covered examples in a window of ranks first: the same
    result, less work."""
    import torch

    n = xt.shape[1]
    d = torch.as_tensor(dims, device=xt.device)
    p = torch.as_tensor(points, device=xt.device, dtype=xt.dtype)
    salt = torch.zeros((len(d), 2), dtype=torch.int64) if salt is None else torch.as_tensor(salt)
    salt = salt.to(xt.device)
    covered = _covered(xt, d, p, salt[:, 0], index, min(n, 1024))
    # its neighbours are the others: the reference drops the first of its sort, which is the covered example or,
    # for an exact twin, either of the two
    dist, idx = _neighbours(xt, d, covered, neighbours)
    dist = dist.double()
    dup = dist[:, 0] == 0  # a twin at distance 0 takes the whole penalty; among several, one at random
    if bool(dup.any()):
        twin = _first_of_ties(dist[dup], idx[dup], salt[dup, 1])
        idx[dup, 0] = idx[dup].gather(1, twin[:, None]).flatten()  # the penalised one (weights below: 1, 0, ...)
    safe = torch.where(dup[:, None], torch.ones_like(dist), dist)
    w = (safe[:, :1] / safe) ** exponent  # 1 / d**exponent, scaled by the nearest's d**exponent: no overflow
    w = torch.where(dup[:, None], torch.zeros_like(w), w / w.sum(1, keepdim=True))
    w[:, 0] = torch.where(dup, torch.ones_like(w[:, 0]), w[:, 0])
    delta = torch.zeros(n, dtype=torch.float64, device=xt.device)
    delta.index_add_(0, covered, torch.ones(len(covered), dtype=torch.float64, device=xt.device))
    delta.index_add_(0, idx.reshape(-1), -w.reshape(-1))
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
    xt = torch.as_tensor(x.T.astype(np.float32)).contiguous().to(device)
    # rows of about 16 MiB on a CPU (they stay in cache), 1 GiB on a GPU
    per = batch_size or max(1, (1 << (28 if xt.device.type == "cuda" else 22)) // (n * dim))
    index = SortedIndex(xt)
    total = torch.zeros(n, dtype=torch.float64, device=xt.device)
    for start in range(0, samples, DRAW_BLOCK):
        count = min(DRAW_BLOCK, samples - start)
        dims = distinct_dims(rng, count, n_dim, dim)
        points = triangular(rng.uniform(0.0, 1.0, (count, dim)), lo[dims], med[dims], hi[dims])
        salt = rng.integers(0, 1 << 32, size=(count, 2), dtype=np.int64)
        for b in range(0, count, per):
            part = slice(b, b + per)
            total += block_scores(xt, dims[part], points[part], neighbours, exponent, salt[part], index)
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
