"""The GPU k-means (elfs/method/kmeans.py, run here on the CPU) against brute force and against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from elfs.method.kmeans import _assign, _centres, kmeans, kmeans_backend


def test_assignment_and_update_equal_brute_force():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 7)).astype(np.float32)
    c = x[rng.choice(500, 6, replace=False)] + 0.01
    xt, ct = torch.from_numpy(x), torch.from_numpy(c)
    labels, d2 = _assign(xt, (xt * xt).sum(1), ct, chunk=37)  # several chunks, one ragged
    brute = ((x[:, None, :].astype(np.float64) - c[None].astype(np.float64)) ** 2).sum(-1)
    np.testing.assert_array_equal(labels.numpy(), brute.argmin(1))
    np.testing.assert_allclose(d2.numpy(), brute.min(1), rtol=1e-4, atol=1e-4)
    far = torch.cat([ct, torch.full((1, 7), 1e3)])  # a centre no point is nearest to keeps its place
    lab = _assign(xt, (xt * xt).sum(1), far, chunk=64)[0]
    new = _centres(xt, lab, 7, far).numpy()
    for j in range(6):
        np.testing.assert_allclose(new[j], x[lab.numpy() == j].mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(new[6], far[6].numpy())


def test_torch_kmeans_matches_sklearn_quality_and_is_seeded():
    x, truth = make_blobs(n_samples=3000, centers=8, n_features=16, cluster_std=1.5, random_state=0)
    ref_labels, _, ref_inertia = kmeans(x, 8, seed=0, backend="sklearn")
    labels, centres, inertia = kmeans(x, 8, seed=0, backend="torch", device="cpu", chunk=1000)
    assert inertia <= ref_inertia * 1.01
    assert adjusted_rand_score(ref_labels, labels) > 0.99 and adjusted_rand_score(truth, labels) > 0.99
    assert labels.dtype == np.int64 and centres.shape == (8, 16)
    np.testing.assert_allclose(inertia, ((x - centres[labels]) ** 2).sum(), rtol=1e-4)
    again = kmeans(x, 8, seed=0, backend="torch", device="cpu", chunk=1000)
    np.testing.assert_array_equal(again[0], labels)


def test_backend_choice_and_bad_input():
    assert kmeans_backend("cpu") == "sklearn"
    assert kmeans_backend("auto") == ("torch" if torch.cuda.is_available() else "sklearn")
    with pytest.raises(ValueError, match="backend"):
        kmeans(np.zeros((10, 2)), 2, 0, backend="faiss")
    with pytest.raises(ValueError, match="2 <= k <= N"):
        kmeans(np.zeros((3, 2)), 5, 0)
