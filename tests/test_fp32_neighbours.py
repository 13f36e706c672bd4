"""kNN and k-means compute in full fp32 whatever the training set the process's matmul precision to: a case where
TF32's rounding (inputs to a 10-bit mantissa) swaps the nearest neighbour, and the precision seen inside."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from elfs.method.knn import knn, l2_normalise


def tf32_round(x: np.ndarray) -> np.ndarray:
    """float32 values rounded to TF32's 10-bit mantissa (round to nearest), as tensor cores read their inputs."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((bits + 0x1000) & 0xFFFFE000).astype(np.uint32).view(np.float32)


def flip_case() -> np.ndarray:
    """Rows [query, a, b, far...] where the exact nearest neighbour of the query is not TF32's."""
    rng = np.random.default_rng(0)
    for _ in range(10000):
        q = rng.standard_normal(32)
        a = q + 0.05 * rng.standard_normal(32)
        b = a + 2e-4 * rng.standard_normal(32)
        x = l2_normalise(np.stack([q, a, b, -q, -a]).astype(np.float32))
        exact = x.astype(np.float64) @ x[0].astype(np.float64)
        r = tf32_round(x)
        rounded = r.astype(np.float64) @ r[0].astype(np.float64)
        if np.argmax(exact[1:3]) != np.argmax(rounded[1:3]):
            return x
    raise AssertionError("no flipping case found")


@pytest.fixture
def tf32_process():
    """The process set to TF32 matmuls, as trainer.matmul_precision=high does; restored afterwards."""
    saved = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    yield
    torch.set_float32_matmul_precision(saved)


def test_tf32_rounding_flips_the_neighbour_and_knn_keeps_the_exact_one(tf32_process, monkeypatch):
    x = flip_case()
    exact_first = 1 + int(np.argmax(x[1:3].astype(np.float64) @ x[0].astype(np.float64)))
    seen = []
    topk = torch.topk

    def spy(*a, **k):
        seen.append(torch.get_float32_matmul_precision())
        return topk(*a, **k)

    monkeypatch.setattr(torch, "topk", spy)
    ids, _ = knn(x, 2, backend="torch")
    assert ids[0, 0] == exact_first
    assert seen and set(seen) == {"highest"}, seen  # the products ran in full fp32 ...
    assert torch.get_float32_matmul_precision() == "high"  # ... and the process's setting is back


def test_torch_kmeans_runs_in_full_fp32(tf32_process, monkeypatch):
    import elfs.method.kmeans as km

    seen = []
    assign = km._assign

    def spy(*a, **k):
        seen.append(torch.get_float32_matmul_precision())
        return assign(*a, **k)

    monkeypatch.setattr(km, "_assign", spy)
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal((50, 4)) + 5 * c for c in range(3)]).astype(np.float32)
    labels, _, _ = km.kmeans(x, 3, 0, backend="torch", device="cpu", n_init=2)
    assert set(seen) == {"highest"}
    assert torch.get_float32_matmul_precision() == "high"
    assert sorted(np.bincount(labels).tolist()) == [50, 50, 50]
