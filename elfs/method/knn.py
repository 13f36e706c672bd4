"""kNN stage: top-k cosine neighbours of every embedding among the same set, self excluded (method.md §3).

`faiss` is exact (a flat inner-product index, searched in chunks of queries: memory O(N·d + chunk·k), never an
N x N matrix); `faiss_ivf` is faiss's inverted-file index (k-means cells, `nprobe` of them searched per query),
approximate but far faster at ImageNet size on a CPU; `torch` is a plain chunked matmul + top-k.

Self is excluded by *index*, in every query chunk; the reference code masks the diagonal of each
64 x N chunk instead, which only excludes self in the first chunk (method.md §3, §10 item 8).
"""

from __future__ import annotations

import numbers

import numpy as np

from elfs.infra.heap import trim_heap

__all__ = ["knn", "l2_normalise", "drop_self"]

KNN_BACKENDS = ("faiss", "faiss_ivf", "torch", "auto")  # auto: exact on a GPU; on a CPU, IVF above a size
_IVF_MIN_POINTS_PER_CELL = 39  # faiss warns below this many training points per cell
_IVF_TRAIN_POINTS_PER_CELL = 64  # a sample this size per cell trains the cells (faiss: 39 to 256 per cell)
_IVF_TRAIN_MAX_ROWS = 131_072  # ... but at most this many rows (640 MiB at d = 1280), never under 39 per cell
_FAISS_GPU_MAX_K = 2048  # faiss GPU k-selection limit


_BLOCK_ROWS = 16384  # rows converted at a time from a float16 / memory-mapped input: the only extra memory
#: above this many images faiss_ivf stores its vectors as 8-bit scalar codes (a quarter of a float32 copy) and
#: re-scores the candidates it returns exactly, instead of holding a second full float32 copy (keyed as `storage`)
IVF_SQ8_ABOVE = 100_000


def ivf_storage(n: int) -> str:
    """How faiss_ivf stores its vectors for ``n`` images: ``flat`` (float32) or ``sq8`` (8-bit codes)."""
    return "sq8" if n > IVF_SQ8_ABOVE else "flat"


def _float32(rows: np.ndarray):
    """``rows`` as a float32 torch tensor (torch converts float16 several times faster than numpy does). A read-only
    map's rows are only read: torch's warning about tensors over non-writable arrays does not apply."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(np.ascontiguousarray(rows)).float()


def _normalised(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(``rows`` L2-normalised to float32, their norms): the one computation every backend normalises with."""
    import torch

    x = _float32(rows)
    norms = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    x = x.div_(norms) if rows.dtype != np.float32 else x / norms  # in place only on a converted copy
    return x.numpy(), norms[..., 0].numpy()


def l2_normalise(embeddings: np.ndarray) -> np.ndarray:
    """Row-wise L2-normalised float32 copy, converted block by block (a float16 or memory-mapped input never
    becomes a second full float32 array); ValueError naming the rows whose norm is zero."""
    n = embeddings.shape[0]
    out = np.empty(embeddings.shape, dtype=np.float32)
    zero = []
    for start in range(0, n, _BLOCK_ROWS):
        block, norms = _normalised(embeddings[start : start + _BLOCK_ROWS])
        zero.append(start + np.flatnonzero(norms == 0))
        out[start : start + len(block)] = block
    zero = np.concatenate(zero) if zero else np.zeros(0, np.int64)
    if zero.size:
        raise ValueError(
            f"cosine kNN needs non-zero embeddings; rows {zero[:10].tolist()} ({zero.size} in total) have norm 0"
        )
    return out


class _NormalisedRows:
    """Rows of ``embeddings`` L2-normalised to float32 on demand, a block or a gather at a time (``rows[a:b]``,
    ``rows[ids]``): the approximate backend's view of a float16 / memory-mapped input, which never becomes a whole
    float32 copy. Each row is computed as :func:`l2_normalise` computes it."""

    def __init__(self, embeddings: np.ndarray) -> None:
        self.x = embeddings
        self.shape = (embeddings.shape[0], embeddings.shape[1])
        self.inv_norm: np.ndarray | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        return _normalised(self.x[key])[0]

    def compute_norms(self) -> None:
        """Each row's inverse norm (``inv_norm``, 4 bytes a row: :func:`_rescore` scales raw rows by it instead of
        normalising every gathered candidate), block by block; ValueError naming the rows whose norm is zero
        (cosine similarity is undefined for them)."""
        norms = np.concatenate(
            [_normalised(self.x[s : s + _BLOCK_ROWS])[1] for s in range(0, self.shape[0], _BLOCK_ROWS)]
        )
        zero = np.flatnonzero(norms == 0)
        if zero.size:
            raise ValueError(
                f"cosine kNN needs non-zero embeddings; rows {zero[:10].tolist()} ({zero.size} in total) have norm 0"
            )
        self.inv_norm = (1.0 / norms).astype(np.float32)


def drop_self(ids: np.ndarray, sims: np.ndarray, query_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """From ``[n, k+1]`` search results remove each query's own id wherever it appears, else the last column.

    Self can be missing from the k+1 results when exact duplicates tie with it.
    """
    n, k1 = ids.shape
    is_self = ids == query_ids[:, None]
    has_self = is_self.any(axis=1)
    drop_col = np.where(has_self, is_self.argmax(axis=1), k1 - 1)
    keep = np.ones((n, k1), dtype=bool)
    keep[np.arange(n), drop_col] = False
    return ids[keep].reshape(n, k1 - 1), sims[keep].reshape(n, k1 - 1)


def _validate(embeddings: np.ndarray, k: int, backend: str, chunk_size: int) -> None:
    if not isinstance(embeddings, np.ndarray):
        raise ValueError(f"embeddings must be a numpy array [N, D], got {type(embeddings).__name__}")
    if embeddings.ndim != 2 or embeddings.shape[0] < 2 or embeddings.shape[1] < 1:
        raise ValueError(f"embeddings must have shape [N, D] with N >= 2 and D >= 1, got {embeddings.shape}")
    if not np.issubdtype(embeddings.dtype, np.floating) and not np.issubdtype(embeddings.dtype, np.integer):
        raise ValueError(f"embeddings must be numeric, got dtype {embeddings.dtype}")
    if not all(np.isfinite(embeddings[s : s + _BLOCK_ROWS]).all() for s in range(0, len(embeddings), _BLOCK_ROWS)):
        raise ValueError("embeddings contain NaN or inf")
    n = embeddings.shape[0]
    if not isinstance(k, numbers.Integral) or isinstance(k, bool) or not 1 <= k <= n - 1:
        raise ValueError(f"k must be an int in [1, N-1] = [1, {n - 1}], got {k!r}")
    if backend not in KNN_BACKENDS:
        raise ValueError(f"backend must be one of {list(KNN_BACKENDS)}, got {backend!r}")
    if not isinstance(chunk_size, numbers.Integral) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")


def _knn_faiss(x: np.ndarray, k: int, chunk_size: int) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    n, d = x.shape
    index = faiss.IndexFlatIP(d)
    use_gpu = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0 and k + 1 <= _FAISS_GPU_MAX_K
    if use_gpu:  # pragma: no cover - needs faiss-gpu and a GPU
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    index.add(x)
    ids = np.empty((n, k), dtype=np.int64)
    sims = np.empty((n, k), dtype=np.float32)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        d_chunk, i_chunk = index.search(x[start:stop], k + 1)
        i_out, d_out = drop_self(i_chunk, d_chunk, np.arange(start, stop))
        ids[start:stop], sims[start:stop] = i_out, d_out
    return ids, sims


def _rescore(x: _NormalisedRows, ids: np.ndarray, start: int, block: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner products of rows ``start + i`` with their candidate ``ids`` (-1 = none, kept last), re-sorted
    most similar first; ``block`` rows at a time (block x candidates x d floats). The candidates are gathered raw
    and the products scaled by their inverse norms (``x.inv_norm``): normalising each gathered row took most of
    the stage's time (profiled at 120,000 x 1280)."""
    import torch

    sims = np.empty(ids.shape, dtype=np.float32)
    for b in range(0, len(ids), block):
        rows = torch.from_numpy(x[start + b : start + b + len(ids[b : b + block])])  # normalised: a new array
        cand = np.maximum(ids[b : b + block], 0)
        s = torch.bmm(_float32(x.x[cand]), rows[:, :, None])[..., 0].numpy() * x.inv_norm[cand]
        sims[b : b + block] = np.where(ids[b : b + block] < 0, -np.inf, s)
    order = np.argsort(-sims, axis=1, kind="stable")
    return np.take_along_axis(sims, order, axis=1), np.take_along_axis(ids, order, axis=1)


def _brute_force(x: _NormalisedRows, rows: np.ndarray, k1: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k1`` inner products of ``rows`` against every row, the set read block by block (an index would
    hold a whole copy of it); (similarities, ids) most similar first, ties to the smaller id."""
    import faiss

    q = x[rows]
    best_d = np.full((len(rows), 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(rows), 0), dtype=np.int64)
    for start in range(0, len(x), _BLOCK_ROWS):
        block = x[start : start + _BLOCK_ROWS]
        d, i = faiss.knn(q, block, min(k1, len(block)), metric=faiss.METRIC_INNER_PRODUCT)
        d_all, i_all = np.concatenate([best_d, d], axis=1), np.concatenate([best_i, i + start], axis=1)
        order = _top(d_all, i_all, k1)
        best_d, best_i = np.take_along_axis(d_all, order, axis=1), np.take_along_axis(i_all, order, axis=1)
    return best_d, best_i


def _top(d: np.ndarray, i: np.ndarray, k: int) -> np.ndarray:
    """Column order of the ``k`` largest ``d`` per row, ties to the smaller ``i``."""
    order = np.argsort(i, axis=1, kind="stable")
    order = np.take_along_axis(order, np.argsort(-np.take_along_axis(d, order, axis=1), axis=1, kind="stable"), 1)
    return order[:, :k]


def _knn_faiss_ivf(
    x: _NormalisedRows, k: int, chunk_size: int, nlist: int | None, nprobe: int
) -> tuple[np.ndarray, np.ndarray]:
    """Approximate kNN with faiss IndexIVFFlat (inner product), or above IVF_SQ8_ABOVE rows IndexIVFScalarQuantizer
    (8-bit codes, candidates re-scored exactly); rows the probed cells cannot fill are searched exactly, so every
    row gets k real neighbours. ``x`` is read a block at a time: the memory is the index (a float32 copy for IVFFlat,
    a quarter of one for the 8-bit codes), a bounded training sample while the cells are trained, and one block."""
    import faiss

    n, d = x.shape
    cells = int(nlist) if nlist else int(4 * np.sqrt(n))
    cells = max(1, min(cells, n // _IVF_MIN_POINTS_PER_CELL))
    quantizer = faiss.IndexFlatIP(d)
    sq8 = ivf_storage(n) == "sq8"
    if sq8:
        index = faiss.IndexIVFScalarQuantizer(
            quantizer, d, cells, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
    else:
        index = faiss.IndexIVFFlat(quantizer, d, cells, faiss.METRIC_INNER_PRODUCT)
    per_cell = max(_IVF_MIN_POINTS_PER_CELL * cells, min(_IVF_TRAIN_POINTS_PER_CELL * cells, _IVF_TRAIN_MAX_ROWS))
    n_train = min(n, per_cell)
    rows = np.arange(n) if n_train == n else np.sort(np.random.default_rng(0).choice(n, n_train, replace=False))
    sample = x[rows]
    index.train(sample)  # faiss's k-means is seeded (ClusteringParameters.seed): deterministic
    del sample, rows
    for start in range(0, n, _BLOCK_ROWS):  # added in blocks: one block converted at a time
        index.add(x[start : start + _BLOCK_ROWS])
    index.nprobe = max(1, min(int(nprobe), cells))
    ids = np.empty((n, k), dtype=np.int64)
    sims = np.empty((n, k), dtype=np.float32)
    short: list[np.ndarray] = []
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        d_chunk, i_chunk = index.search(x[start:stop], k + 1)
        if sq8:  # the codes' similarities are approximate: the candidates' exact ones, re-sorted
            d_chunk, i_chunk = _rescore(x, i_chunk, start)
        missing = (i_chunk < 0).any(axis=1)
        if missing.any():
            short.append(start + np.flatnonzero(missing))
            i_chunk[missing], d_chunk[missing] = np.arange(k + 1) + start, 0.0  # placeholders, redone below
        i_out, d_out = drop_self(i_chunk, d_chunk, np.arange(start, stop))
        ids[start:stop], sims[start:stop] = i_out, d_out
        del d_chunk, i_chunk, i_out, d_out
        trim_heap()  # the chunk's blocks freed: measured 190 MiB resident at 200,000 x 1280 without it
    index.reset()  # the codes are freed now, not when the stage's garbage is collected
    del index, quantizer
    if short:
        rows = np.concatenate(short)
        d_rows, i_rows = _brute_force(x, rows, k + 1)
        ids[rows], sims[rows] = drop_self(i_rows, d_rows, rows)
    return ids, sims


def _knn_torch(x: np.ndarray, k: int, chunk_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Chunked matmul + top-k in full fp32 (elfs/infra/fp32.py): TF32's rounding would swap close neighbours."""
    import torch

    from elfs.infra.fp32 import full_fp32

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    n = x.shape[0]
    xt = torch.from_numpy(x).to(dev)
    ids = np.empty((n, k), dtype=np.int64)
    sims = np.empty((n, k), dtype=np.float32)
    with torch.no_grad(), full_fp32():
        for start in range(0, n, chunk_size):
            stop = min(start + chunk_size, n)
            s = xt[start:stop] @ xt.T  # [c, N]
            rows = torch.arange(stop - start, device=dev)
            s[rows, start + rows] = float("-inf")  # self, by global index
            vals, idx = torch.topk(s, k, dim=1, largest=True, sorted=True)
            ids[start:stop] = idx.cpu().numpy()
            sims[start:stop] = vals.cpu().numpy()
    return ids, sims


def resolve_backend(backend: str, n: int | None = None, approx_above: int | None = None) -> str:
    """``auto`` -> an exact backend on the GPU when there is one (faiss with GPUs, else torch on CUDA); on a CPU,
    exact faiss up to ``approx_above`` images and the approximate ``faiss_ivf`` above it (exact search costs N^2:
    hours at a million images on a laptop, where IVF takes minutes). Other names are returned as they are. Both
    exact backends give the same neighbours (up to ties)."""
    if backend != "auto":
        return backend
    import torch

    if not torch.cuda.is_available():
        if approx_above is not None and n is not None and n > approx_above:
            return "faiss_ivf"
        return "faiss"
    try:  # faiss only to ask whether it has GPUs: a GPU box without faiss runs the torch backend
        import faiss
    except ImportError:
        return "torch"
    if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:  # pragma: no cover - needs faiss-gpu
        return "faiss"
    return "torch"


def knn(
    embeddings: np.ndarray,
    k: int,
    *,
    backend: str = "faiss",
    chunk_size: int = 4096,
    nlist: int | None = None,
    nprobe: int = 32,
    approx_above: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k cosine neighbours of each row among all rows, self excluded by index, most similar first.

    Returns (int64 indices ``[N, k]``, float32 cosine similarities ``[N, k]``). Queries run in chunks of
    ``chunk_size`` rows; faiss uses a GPU index when it has GPUs, torch uses CUDA when available, ``auto`` picks
    the one that runs on the GPU, or on a CPU above ``approx_above`` rows the approximate one
    (:func:`resolve_backend`). ``nlist`` (default 4·sqrt(N)) and ``nprobe`` set the cells of ``faiss_ivf``.
    """
    _validate(embeddings, k, backend, chunk_size)
    backend = resolve_backend(backend, embeddings.shape[0], approx_above)
    if backend == "faiss_ivf":  # reads the input a block at a time: no whole float32 copy (millions of images)
        if nlist is not None and int(nlist) < 1 or int(nprobe) < 1:
            raise ValueError(f"nlist must be None or >= 1 and nprobe >= 1, got {nlist} and {nprobe}")
        rows = _NormalisedRows(embeddings)
        rows.compute_norms()
        return _knn_faiss_ivf(rows, int(k), int(chunk_size), nlist, int(nprobe))
    x = l2_normalise(embeddings)  # the exact backends: one float32 copy (they serve up to knn.approx_above images)
    if backend == "faiss":
        return _knn_faiss(x, int(k), int(chunk_size))
    return _knn_torch(x, int(k), int(chunk_size))
