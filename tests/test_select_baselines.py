"""Label-free baselines: prototypicality (k-means distance) and D2 pruning, against hand-worked cases and slow refs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from elfs.select.ccs import top_up, water_fill
from elfs.select.d2 import cosine_to_distance, d2_forward, d2_select
from elfs.select.monotonic import hardest
from elfs.select.prototypicality import prototypicality_distance, prototypicality_select
from elfs.select.validate import subset_sizes


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
def random_graph(n: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random score, directed kNN rows (distinct, self excluded, most similar first) and cosine similarities."""
    rng = np.random.default_rng(seed)
    idx = np.stack([rng.choice(np.delete(np.arange(n), i), size=width, replace=False) for i in range(n)])
    sim = -np.sort(-rng.uniform(-0.2, 1.0, size=(n, width)), axis=1)
    return rng.normal(size=n), idx, sim


def ref_d2(
    score: np.ndarray,
    knn_idx: np.ndarray,
    knn_sim: np.ndarray,
    budget: float,
    beta: float,
    *,
    strata: int,
    gamma: float,
    k: int,
    seed: int,
    same_stratum_only: bool = True,
) -> np.ndarray:
    """Slow reference: plain loops, argmax recomputed at each step. Only the CCS allocation helpers are shared."""
    n = len(score)
    n_keep = min(n, max(1, round(budget * n)))
    n_hard = min(round(beta * n), n - n_keep)
    survivors = sorted(sorted(range(n), key=lambda i: (score[i], i))[: n - n_hard])
    alive = set(survivors)
    dist = [[math.sqrt(max(0.0, 2.0 - 2.0 * float(knn_sim[i][c]))) for c in range(k)] for i in range(n)]
    fwd = {}
    for i in survivors:
        fwd[i] = float(score[i]) + sum(
            math.exp(-dist[i][c]) * float(score[knn_idx[i][c]]) for c in range(k) if int(knn_idx[i][c]) in alive
        )
    lo, hi = min(fwd.values()), max(fwd.values())
    bin_of = {i: (0 if hi == lo else min(int((fwd[i] - lo) / (hi - lo) * strata), strata - 1)) for i in survivors}
    sizes = np.bincount([bin_of[i] for i in survivors], minlength=strata)
    alloc = top_up(water_fill(sizes, n_keep), sizes, n_keep, np.random.default_rng(seed))
    value = dict(fwd)
    picked: set[int] = set()
    for b in range(strata):
        pool = [i for i in survivors if bin_of[i] == b]
        for _ in range(int(alloc[b])):
            best = None
            for i in pool:  # highest value, then lowest index
                if i not in picked and (best is None or value[i] > value[best]):
                    best = i
            picked.add(best)
            for c in range(k):
                j = int(knn_idx[best][c])
                receives = bin_of.get(j) == b if same_stratum_only else j in alive
                if receives and j not in picked:
                    value[j] -= math.exp(-gamma * dist[best][c]) * value[best]
    return np.array(sorted(picked), dtype=np.int64)


def test_cosine_to_distance() -> None:
    np.testing.assert_allclose(cosine_to_distance(np.array([1.0, 0.0, -1.0, 1.0000001])), [0, math.sqrt(2), 2, 0])
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 50, 8))
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    np.testing.assert_allclose(cosine_to_distance((a * b).sum(axis=1)), np.linalg.norm(a - b, axis=1), atol=1e-7)
    with pytest.raises(ValueError, match=r"sim\[1\]=1\.5 is not a cosine similarity"):
        cosine_to_distance(np.array([0.5, 1.5]))
    with pytest.raises(ValueError, match=r"sim\[0, 1\]=nan"):
        cosine_to_distance(np.array([[0.5, np.nan]]))


# 4 nodes, directed rows; exp(-0) = 1, exp(-ln 2) = 1/2, exp(-ln 4) = 1/4
FWD_SCORE = np.array([1.0, 2.0, 3.0, 4.0])
FWD_IDX = np.array([[1, 2], [0, 3], [3, 0], [2, 1]])
FWD_DIST = np.array([[0.0, math.log(2)], [math.log(2), 0.0], [0.0, math.log(4)], [math.log(2), math.log(2)]])


def test_d2_forward_hand_computed() -> None:
    # s'0 = 1 + 2 + 3/2; s'1 = 2 + 1/2 + 4; s'2 = 3 + 4 + 1/4; s'3 = 4 + 3/2 + 2/2
    np.testing.assert_allclose(d2_forward(FWD_SCORE, FWD_IDX, FWD_DIST), [4.5, 6.5, 7.25, 6.5], rtol=1e-14)
    # node 3 removed from the graph: it sends nothing (nodes 1, 2 lose its message), but still receives
    active = np.array([True, True, True, False])
    got = d2_forward(FWD_SCORE, FWD_IDX, FWD_DIST, active=active)
    np.testing.assert_allclose(got, [4.5, 2.5, 3.25, 6.5], rtol=1e-14)


def test_d2_forward_bad_inputs() -> None:
    with pytest.raises(ValueError, match=r"knn_dist\[1, 0\]=-0\.5 is negative"):
        d2_forward(FWD_SCORE, FWD_IDX, np.where(np.arange(8).reshape(4, 2) == 2, -0.5, FWD_DIST))
    with pytest.raises(ValueError, match=r"knn_dist has shape \(4, 1\) but knn_idx has shape \(4, 2\)"):
        d2_forward(FWD_SCORE, FWD_IDX, FWD_DIST[:, :1])
    with pytest.raises(ValueError, match=r"active must be a bool array of shape \(4,\)"):
        d2_forward(FWD_SCORE, FWD_IDX, FWD_DIST, active=np.ones(4))
    with pytest.raises(ValueError, match=r"score has 1 non-finite"):
        d2_forward(np.array([1.0, np.inf, 3.0, 4.0]), FWD_IDX, FWD_DIST)


CASES = [
    # n, width, k, budget, beta, strata, gamma, seed
    (40, 5, 5, 0.3, 0.0, 4, 0.1, 0),
    (40, 6, 3, 0.5, 0.1, 5, 0.1, 1),
    (57, 5, 5, 0.1, 0.2, 25, 0.1, 2),
    (60, 8, 8, 0.7, 0.3, 3, 1.0, 3),
    (33, 4, 2, 0.25, 0.05, 1, 0.0, 4),
    (80, 5, 5, 0.9, 0.0, 10, 0.5, 5),
    (50, 10, 7, 0.2, 0.4, 6, 2.0, 6),
    (25, 3, 3, 1.0, 0.0, 5, 0.1, 7),
]


@pytest.mark.parametrize(("n", "width", "k", "budget", "beta", "strata", "gamma", "seed"), CASES)
def test_d2_select_matches_slow_reference(
    n: int, width: int, k: int, budget: float, beta: float, strata: int, gamma: float, seed: int
) -> None:
    score, idx, sim = random_graph(n, width, seed)
    kw = dict(strata=strata, gamma=gamma, k=k, seed=seed)
    kept = d2_select(score, idx, sim, budget, beta, **kw)
    np.testing.assert_array_equal(kept, ref_d2(score, idx, sim, budget, beta, **kw))
    n_keep, n_hard = subset_sizes(n, budget, beta)
    assert kept.dtype == np.int64 and kept.shape == (n_keep,) and np.all(np.diff(kept) > 0)
    hardest_cut = np.argsort(-score, kind="stable")[:n_hard]
    assert not np.isin(hardest_cut, kept).any(), "a hard-cut example was kept"
    np.testing.assert_array_equal(kept, d2_select(score, idx, sim, budget, beta, **kw))  # deterministic


def test_d2_updates_stay_inside_the_stratum() -> None:
    """Across the random cases, letting a pick lower neighbours in other strata changes some selection;
    d2_select follows the reference (fresh graph per stratum), i.e. same-stratum updates only."""
    differs = 0
    for n, width, k, budget, beta, strata, gamma, seed in CASES:
        score, idx, sim = random_graph(n, width, seed)
        kw = dict(strata=strata, gamma=gamma, k=k, seed=seed)
        global_updates = ref_d2(score, idx, sim, budget, beta, **kw, same_stratum_only=False)
        differs += not np.array_equal(d2_select(score, idx, sim, budget, beta, **kw), global_updates)
    assert differs > 0


def test_d2_hard_cut_removes_exactly_the_highest_scores() -> None:
    score, idx, sim = random_graph(50, 5, 11)
    kept = d2_select(score, idx, sim, 0.6, 0.4, strata=5, seed=0)  # budget + beta = 1: keep = all survivors
    np.testing.assert_array_equal(kept, np.sort(np.argsort(score)[:30]))


def test_d2_hard_cut_nodes_send_no_messages() -> None:
    score, idx, sim = random_graph(60, 5, 12)
    kept = d2_select(score, idx, sim, 0.3, 0.2, strata=4, seed=0)
    cut = np.argsort(-score)[:12]
    louder = score.copy()
    louder[cut] *= 1000.0  # still the 12 hardest, so still cut; if they sent messages the forward scores would move
    np.testing.assert_array_equal(d2_select(louder, idx, sim, 0.3, 0.2, strata=4, seed=0), kept)


@pytest.mark.parametrize(
    ("budget", "beta"),
    [(b, 0.0) for b in (0.01, 0.1, 0.37, 0.5, 0.93, 1.0)] + [(b, 0.05) for b in (0.01, 0.1, 0.37, 0.5, 0.93, 0.95)],
)
def test_d2_exact_size(budget: float, beta: float) -> None:
    score, idx, sim = random_graph(101, 5, 13)
    kept = d2_select(score, idx, sim, budget, beta, strata=25, seed=3)
    assert kept.size == subset_sizes(101, budget, beta)[0]
    assert np.unique(kept).size == kept.size


def test_d2_uses_only_first_k_columns() -> None:
    score, idx, sim = random_graph(45, 8, 14)
    kw = dict(strata=5, gamma=0.1, seed=0)
    full = d2_select(score, idx, sim, 0.3, 0.1, k=3, **kw)
    np.testing.assert_array_equal(full, d2_select(score, idx[:, :3], sim[:, :3], 0.3, 0.1, k=3, **kw))
    assert not np.array_equal(full, d2_select(score, idx, sim, 0.3, 0.1, k=8, **kw))


# nodes 0, 1: near-duplicates (cosine 0.999) with the top scores; 2, 3: far apart (cosine 0)
DUP_SCORE = np.array([10.0, 9.9, 5.0, 1.0])
DUP_IDX = np.array([[1], [0], [3], [2]])
DUP_SIM = np.array([[0.999], [0.999], [0.0], [0.0]])


def test_d2_reverse_pass_drops_a_near_duplicate() -> None:
    # forward: s' ~ [19.47, 19.46, 5.24, 2.22]; picking 0 lowers 1 to ~0.08, so 2 comes next
    kept = d2_select(DUP_SCORE, DUP_IDX, DUP_SIM, 0.5, strata=1, gamma=0.1, k=1, seed=0)
    np.testing.assert_array_equal(kept, [0, 2])
    np.testing.assert_array_equal(hardest(DUP_SCORE, 0.5), [0, 1])  # plain top-score pick keeps both duplicates
    fwd = d2_forward(DUP_SCORE, DUP_IDX, cosine_to_distance(DUP_SIM))
    np.testing.assert_array_equal(hardest(fwd, 0.5), [0, 1])  # so does the forward score alone
    # a large gamma makes the reverse kernel exp(-gamma*d) ~ 0: no diversity push, both duplicates are kept
    np.testing.assert_array_equal(
        d2_select(DUP_SCORE, DUP_IDX, DUP_SIM, 0.5, strata=1, gamma=500.0, k=1, seed=0), [0, 1]
    )


def test_d2_tie_goes_to_lowest_index() -> None:
    score = np.ones(6)
    idx = np.array([[1], [2], [3], [4], [5], [0]])
    sim = np.full((6, 1), -1.0)  # d = 2 for every edge
    # all forward scores equal; pick 0 lowers only 1, then 2 lowers 3, then 4
    np.testing.assert_array_equal(d2_select(score, idx, sim, 0.5, strata=3, k=1, seed=0), [0, 2, 4])


BAD_D2 = [
    (dict(k=6), r"k=6 must be an integer in \[1, 5\]"),
    (dict(k=0), r"k=0 must be an integer in \[1, 5\]"),
    (dict(gamma=-0.1), r"gamma=-0\.1 must be a finite real >= 0"),
    (dict(gamma=float("nan")), r"gamma=nan must be a finite real >= 0"),
    (dict(strata=0), r"strata=0 must be a positive integer"),
    (dict(seed=-1), r"seed=-1 must be a non-negative integer"),
    (dict(budget=1.5), r"budget=1\.5 is outside \(0, 1\]"),
    (dict(budget=0.8, beta=0.3), r"beta=0\.3 \+ budget=0\.8"),
]


@pytest.mark.parametrize(("override", "match"), BAD_D2)
def test_d2_select_bad_parameters(override: dict, match: str) -> None:
    score, idx, sim = random_graph(20, 5, 15)
    args = dict(budget=0.5, beta=0.0, strata=5, gamma=0.1, k=5, seed=0) | override
    with pytest.raises(ValueError, match=match):
        d2_select(score, idx, sim, **args)


def test_d2_select_bad_graph() -> None:
    score, idx, sim = random_graph(20, 5, 16)

    def run(s: np.ndarray = score, i: np.ndarray = idx, c: np.ndarray = sim) -> np.ndarray:
        return d2_select(s, i, c, 0.5, strata=5, seed=0)

    bad = idx.copy()
    bad[3, 2] = 20
    with pytest.raises(ValueError, match=r"knn_idx\[3, 2\]=20 is outside \[0, N=20\)"):
        run(i=bad)
    bad = idx.copy()
    bad[4, 1] = 4
    with pytest.raises(ValueError, match=r"knn_idx\[4, 1\]=4 is the row itself"):
        run(i=bad)
    bad = idx.copy()
    bad[5, 1] = bad[5, 0]
    with pytest.raises(ValueError, match=r"knn_idx row 5 repeats a neighbour"):
        run(i=bad)
    with pytest.raises(ValueError, match=r"knn_idx must be an integer array"):
        run(i=idx.astype(float))
    with pytest.raises(ValueError, match=r"knn_idx must have shape \[N=20, k>=1\].*got \(19, 5\)"):
        run(i=idx[:19], c=sim[:19])
    with pytest.raises(ValueError, match=r"knn_sim has shape \(20, 4\) but knn_idx has shape \(20, 5\)"):
        run(c=sim[:, :4])
    bad = sim.copy()
    bad[2, 3] = 3.0
    with pytest.raises(ValueError, match=r"sim\[2, 3\]=3\.0 is not a cosine similarity"):
        run(c=bad)
    bad = sim.copy()
    bad[1, 0] = np.nan
    with pytest.raises(ValueError, match=r"knn_sim\[1, 0\]=nan is not finite"):
        run(c=bad)
    with pytest.raises(ValueError, match=r"score has 1 NaN|score has 1 non-finite"):
        run(s=np.where(np.arange(20) == 7, np.nan, score))
