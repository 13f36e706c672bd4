"""kNN stage vs an independent brute-force numpy implementation (cosine, self excluded by index)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from elfs.method.knn import drop_self, knn


def brute_force_knn(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference: float64 full similarity matrix, per-row loop, self removed by index."""
    x = x.astype(np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = x @ x.T
    n = x.shape[0]
    ids = np.empty((n, k), dtype=np.int64)
    sims = np.empty((n, k))
    for i in range(n):
        others = [j for j in range(n) if j != i]
        order = sorted(others, key=lambda j: -sim[i, j])[:k]
        ids[i] = order
        sims[i] = sim[i, order]
    return ids, sims


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    rng = np.random.default_rng(0)
    # shifted so that cosine differs from a plain dot product and rows have unequal norms
    return (rng.standard_normal((103, 16)) * rng.uniform(0.5, 3.0, (103, 1)) + 0.3).astype(np.float32)


@pytest.mark.parametrize("backend", ["faiss", "torch"])
@pytest.mark.parametrize("chunk_size", [4096, 103, 10, 3])  # 10 does not divide 103; 3 < k
def test_matches_brute_force(data: np.ndarray, backend: str, chunk_size: int) -> None:
    k = 7
    ref_ids, ref_sims = brute_force_knn(data, k)
    ids, sims = knn(data, k, backend=backend, chunk_size=chunk_size)
    assert ids.shape == (103, k) and sims.shape == (103, k)
    assert ids.dtype == np.int64 and sims.dtype == np.float32
    for i in range(len(data)):
        assert set(ids[i]) == set(ref_ids[i]), f"row {i}"
        assert i not in ids[i]
    np.testing.assert_allclose(sims, ref_sims, atol=1e-5)
    assert np.all(np.diff(sims, axis=1) <= 1e-6), "most similar first"
    # returned similarities are the cosines of the returned pairs
    xn = data / np.linalg.norm(data, axis=1, keepdims=True)
    np.testing.assert_allclose(sims, np.einsum("nd,nkd->nk", xn, xn[ids]), atol=1e-5)


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_self_excluded_in_every_chunk(backend: str) -> None:
    # well separated points: without self-exclusion every row's top-1 would be itself (sim 1);
    # chunks of 4 cover the "reference code bug" region (rows beyond the first chunk).
    rng = np.random.default_rng(1)
    x = rng.standard_normal((30, 8)).astype(np.float32)
    ids, sims = knn(x, 29, backend=backend, chunk_size=4)
    for i in range(30):
        assert sorted(ids[i].tolist()) == [j for j in range(30) if j != i]
    assert sims.max() < 0.999


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_exact_duplicates(backend: str) -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((20, 5)).astype(np.float32)
    x[7] = x[3]
    x[15] = 2.5 * x[11]  # same direction, different norm: cosine 1
    ids, sims = knn(x, 3, backend=backend, chunk_size=6)
    for a, b in [(3, 7), (7, 3), (11, 15), (15, 11)]:
        assert ids[a, 0] == b
        assert sims[a, 0] == pytest.approx(1.0, abs=1e-5)
        assert a not in ids[a]
    # three identical points, k = 1: self may be absent from the k+1 results; never returned anyway
    y = np.repeat(rng.standard_normal((1, 4)), 3, axis=0).astype(np.float32)
    y = np.concatenate([y, rng.standard_normal((3, 4)).astype(np.float32)])
    ids1, sims1 = knn(y, 1, backend=backend)
    for i in range(3):
        assert ids1[i, 0] in {0, 1, 2} - {i}
        assert sims1[i, 0] == pytest.approx(1.0, abs=1e-5)


def test_backends_agree(data: np.ndarray) -> None:
    a_ids, a_sims = knn(data, 5, backend="faiss", chunk_size=16)
    b_ids, b_sims = knn(data, 5, backend="torch", chunk_size=33)
    np.testing.assert_allclose(a_sims, b_sims, atol=1e-5)
    assert all(set(a) == set(b) for a, b in zip(a_ids, b_ids, strict=True))


def test_drop_self_hand_case() -> None:
    ids = np.array([[0, 5, 6], [4, 1, 9], [3, 8, 2]])  # self (query ids 0, 1, 2) first, middle, last
    sims = np.array([[1.0, 0.9, 0.8], [1.0, 0.99, 0.7], [0.9, 0.8, 0.7]], dtype=np.float32)
    out_ids, out_sims = drop_self(ids, sims, np.array([0, 1, 2]))
    np.testing.assert_array_equal(out_ids, [[5, 6], [4, 9], [3, 8]])
    np.testing.assert_array_equal(out_sims, np.array([[0.9, 0.8], [1.0, 0.7], [0.9, 0.8]], dtype=np.float32))
    # self absent (a duplicate tie pushed it out): the last column is dropped
    out_ids, out_sims = drop_self(np.array([[4, 5, 6]]), np.array([[1.0, 1.0, 0.5]]), np.array([0]))
    np.testing.assert_array_equal(out_ids, [[4, 5]])


def test_validation(data: np.ndarray) -> None:
    with pytest.raises(ValueError, match="k must be"):
        knn(data, 0)
    with pytest.raises(ValueError, match=r"\[1, 102\]"):
        knn(data, 103)
    with pytest.raises(ValueError, match="backend"):
        knn(data, 3, backend="annoy")
    with pytest.raises(ValueError, match="chunk_size"):
        knn(data, 3, chunk_size=0)
    bad = data.copy()
    bad[4] = 0.0
    with pytest.raises(ValueError, match=r"rows \[4\]"):
        knn(bad, 3)
    bad[4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        knn(bad, 3)
    with pytest.raises(ValueError, match="shape"):
        knn(data[0], 3)


def test_ivf_recall_against_exact_and_every_row_complete() -> None:
    """The approximate backend: high recall of the exact neighbours on clustered data, self never returned, k
    real neighbours in every row (including rows its probed cells could not fill), most similar first."""
    rng = np.random.default_rng(2)
    centers = rng.standard_normal((40, 32)) * 3
    x = (centers[rng.integers(0, 40, 6000)] + rng.standard_normal((6000, 32))).astype(np.float32)
    exact, _ = knn(x, 10, backend="faiss")
    ids, sims = knn(x, 10, backend="faiss_ivf", nprobe=8, chunk_size=1000)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids.tolist(), exact.tolist(), strict=True)])
    assert recall > 0.9, recall
    assert (ids >= 0).all() and not (ids == np.arange(6000)[:, None]).any()
    assert np.all(np.diff(sims, axis=1) <= 1e-6)
    again, _ = knn(x, 10, backend="faiss_ivf", nprobe=8, chunk_size=1000)
    np.testing.assert_array_equal(ids, again)  # seeded cells: deterministic
    # one probed cell of many tiny cells cannot hold k+1 points for every row: those rows are searched exactly
    # (10 cells of ~40 points, 61 results asked for): those rows are searched exactly, so they equal exact search
    small, small_sims = knn(x[:400], 60, backend="faiss_ivf", nlist=10, nprobe=1)
    ref, _ = knn(x[:400], 60, backend="faiss")
    assert (small >= 0).all() and not (small == np.arange(400)[:, None]).any() and np.isfinite(small_sims).all()
    assert [set(r) for r in small.tolist()] == [set(r) for r in ref.tolist()]


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU auto resolves to an exact GPU backend at any size")
def test_auto_is_exact_up_to_approx_above_then_ivf_on_a_cpu() -> None:
    """backend=auto on a CPU: exact faiss up to knn.approx_above rows, the approximate IVF index above it; the
    neighbours it returns are the ones of the backend it resolved to."""
    from elfs.method.knn import resolve_backend

    assert resolve_backend("auto", 1000, None) == "faiss"
    assert resolve_backend("auto", 1000, 1000) == "faiss"
    assert resolve_backend("auto", 1001, 1000) == "faiss_ivf"
    assert resolve_backend("faiss", 10**7, 1000) == "faiss"  # a named backend is never replaced
    rng = np.random.default_rng(3)
    x = rng.standard_normal((20, 16))[rng.integers(0, 20, 2000)] * 3 + rng.standard_normal((2000, 16))
    x = x.astype(np.float32)
    ivf, _ = knn(x, 5, backend="faiss_ivf")
    auto, _ = knn(x, 5, backend="auto", approx_above=1999)
    np.testing.assert_array_equal(auto, ivf)
    exact, _ = knn(x, 5, backend="faiss")
    np.testing.assert_array_equal(knn(x, 5, backend="auto", approx_above=2000)[0], exact)


def test_rescoring_equals_float64_cosine_of_the_candidates_and_keeps_missing_ones_last() -> None:
    """The 8-bit index's candidates are re-scored from the float16 rows, scaled by each row's inverse norm instead
    of normalising every gathered row: the same cosines as float64 on those rows, most similar first, -1 last."""
    from elfs.method.knn import _NormalisedRows, _rescore

    rng = np.random.default_rng(4)
    x16 = (rng.standard_normal((300, 48)) * rng.uniform(0.5, 3, (300, 1))).astype(np.float16)
    rows = _NormalisedRows(x16)
    rows.compute_norms()
    ids = rng.integers(0, 300, (40, 7))
    ids[3, [1, 5]] = -1  # a query whose cells held too few candidates
    sims, order = _rescore(rows, ids, start=100, block=16)
    x = x16.astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    for i in range(40):
        real = order[i] >= 0
        assert sorted(order[i][real].tolist()) == sorted(ids[i][ids[i] >= 0].tolist())
        np.testing.assert_allclose(sims[i][real], x[order[i][real]] @ x[100 + i], rtol=0, atol=1e-6)
        assert np.all(np.diff(sims[i][real]) <= 0)
    assert order[3, -2:].tolist() == [-1, -1] and np.isneginf(sims[3, -2:]).all()
    with pytest.raises(ValueError, match=r"rows \[7\]"):
        zero = x16.copy()
        zero[7] = 0
        _NormalisedRows(zero).compute_norms()
