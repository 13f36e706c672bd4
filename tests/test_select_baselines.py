"""Label-free baselines: prototypicality (k-means distance) and D2 pruning, against hand-worked cases and slow refs."""

from __future__ import annotations

import numpy as np
import pytest

from elfs.select.d2 import d2_select
from elfs.select.monotonic import hardest
from elfs.select.ordering import subset_sizes
from elfs.select.prototypicality import prototypicality_distance, prototypicality_select


# ------------------------------------------------------------------------------------------- prototypicality
def blobs(seed: int = 0, sizes: tuple[int, ...] = (30, 20, 25), dim: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated Gaussian blobs (centres 100 apart, std 1) and their blob ids."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(100.0 * c, 1.0, size=(m, dim)) for c, m in enumerate(sizes)])
    return x, np.repeat(np.arange(len(sizes)), sizes)


def blob_distance(x: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Independent numpy score: distance to the mean of the example's own blob."""
    centres = np.stack([x[label == c].mean(axis=0) for c in range(label.max() + 1)])
    return np.linalg.norm(x - centres[label], axis=1)


def test_prototypicality_hand_computed() -> None:
    a = [(-1, 0), (1, 0), (0, 2), (0, -2)]  # centroid (0, 0): distances 1, 1, 2, 2
    b = [(100, 101), (100, 99), (103, 100), (97, 100)]  # centroid (100, 100): distances 1, 1, 3, 3
    d = prototypicality_distance(np.array(a + b, dtype=np.float32), num_clusters=2, seed=0)
    assert d.dtype == np.float64 and d.shape == (8,)
    np.testing.assert_allclose(d, [1, 1, 2, 2, 1, 1, 3, 3], rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 3])
def test_prototypicality_matches_numpy(seed: int) -> None:
    x, label = blobs(seed)
    np.testing.assert_allclose(prototypicality_distance(x, 3, seed), blob_distance(x, label), rtol=1e-10)


def test_prototypicality_return_labels() -> None:
    x, label = blobs(2)
    dist, found = prototypicality_distance(x, 3, 0, return_labels=True)
    assert found.dtype == np.int64 and found.shape == label.shape
    # the found clusters are the blobs (up to renaming): each blob maps to one cluster id, all ids distinct
    mapping = {int(b): set(found[label == b].tolist()) for b in range(3)}
    assert all(len(v) == 1 for v in mapping.values()) and len(set.union(*mapping.values())) == 3
    np.testing.assert_array_equal(dist, prototypicality_distance(x, 3, 0))


def test_prototypicality_raw_embeddings_not_normalised() -> None:
    x = np.array([[0.0, 1.0], [0.0, 3.0], [50.0, 0.0], [70.0, 0.0]])
    # L2-normalising would collapse each pair onto one point (distance 0); raw k-means gives 1, 1, 10, 10
    np.testing.assert_allclose(prototypicality_distance(x, 2, 0), [1, 1, 10, 10], atol=1e-12)


@pytest.mark.parametrize("budget", [0.1, 0.33, 0.5, 1.0])
def test_prototypicality_select_keeps_farthest(budget: float) -> None:
    x, label = blobs(1)
    kept = prototypicality_select(x, budget, num_clusters=3, seed=0)
    n_keep, _ = subset_sizes(len(x), budget)
    assert kept.dtype == np.int64 and kept.shape == (n_keep,) and np.all(np.diff(kept) > 0)
    farthest = np.sort(np.argsort(-blob_distance(x, label))[:n_keep])
    np.testing.assert_array_equal(kept, farthest)
    np.testing.assert_array_equal(kept, hardest(prototypicality_distance(x, 3, 0), budget))


@pytest.mark.parametrize(
    ("embeddings", "num_clusters", "match"),
    [
        (np.zeros(5), 2, r"embeddings must be a non-empty 2-D array \[N, D\], got shape \(5,\)"),
        (np.zeros((0, 3)), 2, r"got shape \(0, 3\)"),
        (np.array([[0.0, 1.0], [np.nan, 0.0], [1.0, 1.0]]), 2, r"non-finite value\(s\) \(first in row 1\)"),
        (np.zeros((4, 2)), 1, r"num_clusters=1 is outside \[2, N=4\]"),
        (np.zeros((4, 2)), 5, r"num_clusters=5 is outside \[2, N=4\]"),
        (np.zeros((4, 2)), 2.0, r"num_clusters=2\.0 must be an integer"),
        (np.zeros((4, 2)), True, r"num_clusters=True must be an integer"),
    ],
)
def test_prototypicality_bad_inputs(embeddings: np.ndarray, num_clusters: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        prototypicality_distance(embeddings, num_clusters, 0)  # type: ignore[arg-type]


def test_prototypicality_select_bad_budget_and_seed() -> None:
    x, _ = blobs(0)
    with pytest.raises(ValueError, match=r"budget=0\.0 is outside \(0, 1\]"):
        prototypicality_select(x, 0.0, num_clusters=3, seed=0)
    with pytest.raises(ValueError, match=r"seed=-1 must be a non-negative integer"):
        prototypicality_select(x, 0.5, num_clusters=3, seed=-1)


# ------------------------------------------------------------------------------------------------------- D2
# (the line-by-line comparison with the authors' reference lives in tests/test_d2_oracle.py)
def d2_problem(n: int, seed: int, dim: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Continuous random hardness and float32 embeddings."""
    rng = np.random.default_rng(seed)
    return rng.exponential(1.0, size=n), rng.normal(size=(n, dim)).astype(np.float32)


@pytest.mark.parametrize("mode", ["stratified", "global"])
def test_d2_hard_cut_removes_exactly_the_highest_scores(mode: str) -> None:
    h, x = d2_problem(50, 11)
    kept = d2_select(h, x, 0.6, 0.4, mode=mode, strata=5, seed=0)  # budget + beta = 1: keep = all survivors
    np.testing.assert_array_equal(kept, np.sort(np.argsort(h)[:30]))


@pytest.mark.parametrize("mode", ["stratified", "global"])
def test_d2_hard_cut_nodes_are_out_of_the_graph(mode: str) -> None:
    h, x = d2_problem(60, 12)
    kept = d2_select(h, x, 0.3, 0.2, mode=mode, strata=4, seed=0)
    cut = np.argsort(-h)[:12]
    louder, moved = h.copy(), x.copy()
    louder[cut] *= 1000.0  # still the 12 hardest, so still cut
    moved[cut] = x[kept[:12]]  # cut nodes now sit on kept ones: if they were in the graph, picks would move
    np.testing.assert_array_equal(d2_select(louder, moved, 0.3, 0.2, mode=mode, strata=4, seed=0), kept)


@pytest.mark.parametrize(
    ("budget", "beta"),
    [(b, 0.0) for b in (0.01, 0.1, 0.37, 0.5, 0.93, 1.0)] + [(b, 0.05) for b in (0.01, 0.1, 0.37, 0.5, 0.93, 0.95)],
)
@pytest.mark.parametrize("mode", ["stratified", "global"])
def test_d2_exact_size_and_deterministic(budget: float, beta: float, mode: str) -> None:
    h, x = d2_problem(101, 13)
    kept = d2_select(h, x, budget, beta, mode=mode, strata=25, seed=3)
    assert kept.dtype == np.int64 and kept.size == subset_sizes(101, budget, beta)[0]
    assert np.all(np.diff(kept) > 0)
    np.testing.assert_array_equal(kept, d2_select(h, x, budget, beta, mode=mode, strata=25, seed=3))


def test_d2_modes_differ() -> None:
    h, x = d2_problem(120, 14)
    assert not np.array_equal(
        d2_select(h, x, 0.3, mode="stratified", seed=0), d2_select(h, x, 0.3, mode="global", seed=0)
    )


# nodes 0, 1: near-duplicates (distance 0.01) with the top scores; 2, 3: far from everything
DUP_H = np.array([10.0, 9.9, 5.0, 1.0])
DUP_X = np.array([[0.0], [0.01], [50.0], [120.0]], dtype=np.float32)


def test_d2_reverse_pass_drops_a_near_duplicate() -> None:
    # forward: f ~ [19.80, 19.80, 5.0, 1.0]; picking 0 lowers 1 by exp(-0.1*0.01)*19.8 to ~0.02, so 2 comes next
    kept = d2_select(DUP_H, DUP_X, 0.5, mode="global", gamma=0.1, k=1, seed=0)
    np.testing.assert_array_equal(kept, [0, 2])
    np.testing.assert_array_equal(hardest(DUP_H, 0.5), [0, 1])  # plain top-score pick keeps both duplicates
    # a large gamma makes the reverse kernel exp(-gamma*d) ~ 0: no diversity push, both duplicates are kept
    np.testing.assert_array_equal(d2_select(DUP_H, DUP_X, 0.5, mode="global", gamma=2000.0, k=1, seed=0), [0, 1])


def test_d2_tie_goes_to_lowest_index() -> None:
    # two far-apart pairs at distance exactly 1, equal hardness: every forward score is 1 + exp(-1)
    x = np.array([[0.0], [1.0], [100.0], [101.0]], dtype=np.float32)
    np.testing.assert_array_equal(d2_select(np.ones(4), x, 0.5, mode="global", k=1, seed=0), [0, 2])


def test_d2_small_pool_is_sampled_at_random() -> None:
    # 4 survivors <= k = 5: no graph can be built; the reference samples uniformly (seeded here)
    h, x = d2_problem(4, 15)
    picks = {tuple(d2_select(h, x, 0.5, mode="global", k=5, seed=s)) for s in range(20)}
    assert len(picks) > 1 and all(len(p) == 2 for p in picks)


BAD_D2 = [
    (dict(mode="class"), r"mode='class' is not valid; choose one of \['stratified', 'global'\]"),
    (dict(k=0), r"k=0 must be a positive integer"),
    (dict(k=2.5), r"k=2\.5 must be a positive integer"),
    (dict(gamma=-0.1), r"gamma=-0\.1 must be a finite real >= 0"),
    (dict(gamma=float("nan")), r"gamma=nan must be a finite real >= 0"),
    (dict(strata=0), r"strata=0 must be a positive integer"),
    (dict(seed=-1), r"seed=-1 must be a non-negative integer"),
    (dict(budget=1.5), r"budget=1\.5 is outside \(0, 1\]"),
    (dict(budget=0.8, beta=0.3), r"beta=0\.3 \+ budget=0\.8"),
]


@pytest.mark.parametrize(("override", "match"), BAD_D2)
def test_d2_select_bad_parameters(override: dict, match: str) -> None:
    h, x = d2_problem(20, 16)
    args = dict(budget=0.5, beta=0.0, mode="stratified", strata=5, gamma=0.1, k=5, seed=0) | override
    with pytest.raises(ValueError, match=match):
        d2_select(h, x, **args)


def test_d2_select_bad_arrays() -> None:
    h, x = d2_problem(20, 17)

    def run(hh: np.ndarray = h, xx: np.ndarray = x) -> np.ndarray:
        return d2_select(hh, xx, 0.5, strata=5, seed=0)

    with pytest.raises(ValueError, match=r"embeddings must have shape \[N=20, D>=1\].*got \(19, 8\)"):
        run(xx=x[:19])
    with pytest.raises(ValueError, match=r"embeddings must have shape \[N=20, D>=1\].*got \(20,\)"):
        run(xx=x[:, 0])
    bad = x.copy()
    bad[7, 3] = np.inf
    with pytest.raises(ValueError, match=r"embeddings row 7 is not finite"):
        run(xx=bad)
    with pytest.raises(ValueError, match=r"embeddings must be a float array"):
        run(xx=[["a"] * 8] * 20)
    with pytest.raises(ValueError, match=r"hardness has 1 non-finite"):
        run(hh=np.where(np.arange(20) == 7, np.nan, h))
