"""k-means for the comparison baselines (the TEMI-vs-k-means pseudo-labels, prototypicality): scikit-learn on the
CPU; on a GPU, Lloyd's algorithm in torch, because scikit-learn's k-means over ImageNet's 1.28 M x 768 embeddings
with k = 1000 and 10 restarts takes hours of CPU.

The torch version follows scikit-learn's recipe (greedy k-means++ seeding with 2 + ln k candidates per centre,
Lloyd iterations until the centres move less than ``tol`` x the mean feature variance, the best of ``n_init``
restarts by inertia) but draws its own random numbers, so the two agree in quality, not label for label; the cache
key names the implementation that made an artifact.
"""

from __future__ import annotations

import math

import numpy as np


def kmeans_backend(device: str = "auto") -> str:
    """Which k-means runs for a trainer on ``device``: "torch" (on CUDA) when a GPU is usable, else "sklearn"."""
    if str(device).lower() == "cpu":
        return "sklearn"
    import torch

    return "torch" if torch.cuda.is_available() else "sklearn"


def kmeans(
    x: np.ndarray,
    k: int,
    seed: int,
    *,
    n_init: int = 10,
    max_iter: int = 300,
    tol: float = 1e-4,
    backend: str = "sklearn",
    device: str | None = None,
    chunk: int = 65536,
) -> tuple[np.ndarray, np.ndarray, float]:
    """(labels int64 [N], centres float64 [k, D], inertia) of the best of ``n_init`` runs on ``x`` [N, D]."""
    x = np.asarray(x)
    if x.ndim != 2 or not 2 <= k <= x.shape[0]:
        raise ValueError(f"need x [N, D] and 2 <= k <= N, got shape {x.shape} and k={k}")
    if backend == "sklearn":
        from sklearn.cluster import KMeans

        km = KMeans(n_clusters=k, n_init=n_init, max_iter=max_iter, tol=tol, random_state=seed).fit(x)
        return km.labels_.astype(np.int64), km.cluster_centers_.astype(np.float64), float(km.inertia_)
    if backend != "torch":
        raise ValueError(f"k-means backend must be 'sklearn' or 'torch', got {backend!r}")
    from elfs.infra.fp32 import full_fp32

    with full_fp32():  # ‖x‖² − 2x·c + ‖c‖² cancels: TF32's rounding of x·c would move points between centres
        return _torch_kmeans(x, k, seed, n_init=n_init, max_iter=max_iter, tol=tol, device=device, chunk=chunk)


def _torch_kmeans(x, k, seed, *, n_init, max_iter, tol, device, chunk):
    import torch

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    xt = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32), device=dev)
    sq = (xt * xt).sum(1)
    threshold = tol * float(xt.var(0).mean())  # scikit-learn's tolerance: relative to the data's variance
    gen = torch.Generator(device=dev).manual_seed(int(seed))
    best = None
    for _ in range(int(n_init)):
        centres = _kmeans_pp(xt, sq, k, gen, chunk)
        for _ in range(int(max_iter)):
            labels, _ = _assign(xt, sq, centres, chunk)
            new = _centres(xt, labels, k, centres)
            shift = float(((new - centres) ** 2).sum())
            centres = new
            if shift <= threshold:
                break
        labels, d2 = _assign(xt, sq, centres, chunk)
        inertia = float(d2.sum())
        if best is None or inertia < best[2]:
            best = (labels, centres, inertia)
    labels, centres, inertia = best
    return labels.cpu().numpy().astype(np.int64), centres.double().cpu().numpy(), inertia


def _assign(xt, sq, centres, chunk):
    """Nearest centre of every row and its squared distance, in row chunks (never an N x k matrix at once)."""
    import torch

    c2 = (centres * centres).sum(1)
    labels = torch.empty(xt.shape[0], dtype=torch.int64, device=xt.device)
    d2 = torch.empty(xt.shape[0], dtype=xt.dtype, device=xt.device)
    for s in range(0, xt.shape[0], chunk):
        d = sq[s : s + chunk, None] - 2.0 * xt[s : s + chunk] @ centres.T + c2[None, :]
        d2[s : s + chunk], labels[s : s + chunk] = d.min(1)
    return labels, d2.clamp_min(0)


def _centres(xt, labels, k, old):
    """Cluster means; an emptied cluster keeps its old centre."""
    import torch

    sums = torch.zeros(k, xt.shape[1], dtype=xt.dtype, device=xt.device).index_add_(0, labels, xt)
    counts = torch.bincount(labels, minlength=k).to(xt.dtype)
    return torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], old)


def _kmeans_pp(xt, sq, k, gen, chunk):
    """Greedy k-means++: each new centre is the best (lowest potential) of 2 + ln k candidates drawn with
    probability proportional to the squared distance to the nearest centre so far."""
    import torch

    n = xt.shape[0]
    trials = 2 + int(math.log(k))
    first = int(torch.randint(0, n, (1,), generator=gen, device=xt.device))
    chosen = [first]
    closest = _assign(xt, sq, xt[first : first + 1], chunk)[1]
    for _ in range(1, k):
        total = closest.sum()
        if float(total) <= 0:  # fewer distinct points than k: any point will do
            cand = torch.randint(0, n, (trials,), generator=gen, device=xt.device)
        else:
            cand = torch.multinomial(closest / total, trials, replacement=True, generator=gen)
        c = xt[cand]
        c2 = (c * c).sum(1)
        mins = torch.empty(n, trials, dtype=xt.dtype, device=xt.device)  # [N, trials]: small (trials ~ 2 + ln k)
        for s in range(0, n, chunk):
            d = (sq[s : s + chunk, None] - 2.0 * xt[s : s + chunk] @ c.T + c2[None, :]).clamp_min(0)
            mins[s : s + chunk] = torch.minimum(closest[s : s + chunk, None], d)
        best = int(mins.sum(0).argmin())
        chosen.append(int(cand[best]))
        closest = mins[:, best].contiguous()
    return xt[torch.tensor(chosen, device=xt.device)].clone()
