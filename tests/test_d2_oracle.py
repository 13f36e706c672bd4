"""D2 pruning against a slow, literal port of the authors' reference (adymaharana/d2pruning @ bf1ea46).

The oracle follows ``core/data/sampling.py`` (GraphDensitySampler, non-precomputed branch, graph_mode="sum",
graph_sampling_mode="weighted") and ``core/data/Coreset.py`` (stratified_sampling) line by line, with dense
matrices, scikit-learn's ``kneighbors_graph`` and plain loops. It shares only the project's CCS strata
conventions (equal-width bins over [min, max], last bin closed) and allocation helpers (water_fill + top_up).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import pairwise_distances
from sklearn.neighbors import kneighbors_graph

from elfs.select.ccs import top_up, water_fill
from elfs.select.d2 import d2_forward, d2_reverse, d2_select, knn_graph
from elfs.select.ordering import subset_sizes

EPSILON = 0.0000001  # sampling.py:249


# ------------------------------------------------------------------------------------------------- oracle
class OracleSampler:
    """Port of GraphDensitySampler.compute_graph_density ("sum") and select_batch_ ("weighted")."""

    def __init__(self, x: np.ndarray, scores: np.ndarray, gamma: float, n_neighbor: int) -> None:
        self.gamma = gamma
        self.distances = pairwise_distances(x, x)  # euclidean
        connect = np.asarray(kneighbors_graph(x, n_neighbor, p=2).todense(), dtype=np.float64)
        rows, cols = connect.nonzero()
        for i, j in zip(rows.tolist(), cols.tolist(), strict=True):  # symmetrise, weight by the sender's score
            distance = self.distances[i, j]
            connect[i, j] = math.exp(-distance) * max(float(scores[j]), EPSILON)
            connect[j, i] = math.exp(-distance) * max(float(scores[i]), EPSILON)
        self.connect = connect
        self.graph_density = np.zeros(x.shape[0])
        for i in range(x.shape[0]):
            self.graph_density[i] = connect[i, :].sum() + float(scores[i])
        self.starting_density = self.graph_density.copy()

    def step(self, batch: list[int]) -> None:
        """One reverse step: pick the first maximum, lower its neighbours, push every pick below the minimum."""
        density = self.graph_density
        selected = 0
        for i in range(density.size):
            if density[i] > density[selected]:
                selected = i
        neighbors = [j for j in range(density.size) if self.connect[selected, j] > 0]
        for j in neighbors:
            density[j] = density[j] - math.exp(-self.distances[selected, j] * self.gamma) * density[selected]
        batch.append(selected)
        density[batch] = density.min() - 1

    def select_batch(self, n: int) -> list[int]:
        batch: list[int] = []
        while len(batch) < n:
            self.step(batch)
        return batch


def oracle_bins(values: np.ndarray, strata: int) -> list[int]:
    """Equal-width bins over [min, max], last bin closed (the project's CCS convention), by plain arithmetic."""
    lo, hi = float(values.min()), float(values.max())
    return [0 if hi == lo else min(int((float(v) - lo) / (hi - lo) * strata), strata - 1) for v in values]


def oracle_d2(
    h: np.ndarray, x: np.ndarray, budget: float, beta: float, *, mode: str, strata: int, gamma: float, k: int, seed: int
) -> np.ndarray:
    """Hard cut, then per pool (strata, or all survivors): a fresh OracleSampler, or a random pick if pool <= k."""
    n = h.size
    rng = np.random.default_rng(seed)
    n_keep = min(n, max(1, round(budget * n)))
    n_hard = min(round(beta * n), n - n_keep)
    survivors = sorted(sorted(range(n), key=lambda i: (h[i], i))[: n - n_hard])
    if mode == "global":
        pools, budgets = [survivors], [n_keep]
    else:
        bins = oracle_bins(h[survivors], strata)
        pools = [[i for i, b in zip(survivors, bins, strict=True) if b == s] for s in range(strata)]
        sizes = np.array([len(p) for p in pools])
        budgets = top_up(water_fill(sizes, n_keep), sizes, n_keep, rng).tolist()
    picked: list[int] = []
    for pool, count in zip(pools, budgets, strict=True):
        if not pool or count == 0:
            continue
        if len(pool) <= k:  # Coreset.py:281-283
            local = rng.choice(len(pool), size=count, replace=False).tolist()
        else:
            sampler = OracleSampler(x[pool].astype(np.float64), h[pool], gamma, k)
            local = sampler.select_batch(count)
        picked += [pool[i] for i in local]
    return np.array(sorted(picked), dtype=np.int64)


# ------------------------------------------------------------------------------------------ random cases
def problem(n: int, seed: int, positive: bool) -> tuple[np.ndarray, np.ndarray]:
    """Continuous random hardness (exponential, or normal with negatives) and float32 N x 8 embeddings."""
    rng = np.random.default_rng(seed)
    h = rng.exponential(1.0, size=n) if positive else rng.normal(0.5, 1.0, size=n)
    return h, rng.normal(size=(n, 8)).astype(np.float32)


CASES = [
    # n, mode, budget, beta, strata, gamma, k, seed, positive
    (60, "stratified", 0.3, 0.0, 4, 0.1, 5, 0, True),
    (80, "stratified", 0.5, 0.1, 10, 0.1, 5, 1, False),
    (120, "stratified", 0.1, 0.2, 50, 0.1, 5, 2, True),
    (150, "stratified", 0.7, 0.3, 3, 1.0, 3, 3, False),
    (200, "stratified", 0.25, 0.05, 25, 0.0, 7, 4, True),
    (60, "global", 0.3, 0.0, 50, 0.1, 5, 5, True),
    (100, "global", 0.5, 0.2, 50, 0.5, 4, 6, False),
    (200, "global", 0.1, 0.4, 50, 0.1, 10, 7, True),
    (90, "global", 0.9, 0.0, 50, 2.0, 1, 8, False),
]


@pytest.mark.parametrize(("n", "mode", "budget", "beta", "strata", "gamma", "k", "seed", "positive"), CASES)
def test_d2_select_matches_reference_oracle(
    n: int, mode: str, budget: float, beta: float, strata: int, gamma: float, k: int, seed: int, positive: bool
) -> None:
    h, x = problem(n, seed, positive)
    kw = dict(mode=mode, strata=strata, gamma=gamma, k=k, seed=seed)
    kept = d2_select(h, x, budget, beta, **kw)
    np.testing.assert_array_equal(kept, oracle_d2(h, x, budget, beta, **kw))
    n_keep, n_hard = subset_sizes(n, budget, beta)
    assert kept.dtype == np.int64 and kept.shape == (n_keep,) and np.all(np.diff(kept) > 0)
    assert not np.isin(np.argsort(-h, kind="stable")[:n_hard], kept).any(), "a hard-cut example was kept"


def test_reverse_pass_changes_the_picks() -> None:
    """The reverse pass matters on these problems: top forward scores per pool differ from D2's picks."""
    h, x = problem(120, 9, True)
    kept = d2_select(h, x, 0.3, mode="global", gamma=0.1, k=5, seed=0)
    graph = knn_graph(x, 5)
    top = np.sort(np.argsort(-d2_forward(h, graph), kind="stable")[: kept.size])
    assert not np.array_equal(kept, top)
    np.testing.assert_array_equal(kept, np.sort(d2_reverse(d2_forward(h, graph), graph, kept.size, 0.1)))


# ------------------------------------------------------------------------------------ hand-checked tiny cases
LN2 = math.log(2.0)
# four points on a line: d01 = ln 2, d12 = 2 ln 2, d23 = 3 ln 2; with k = 1 the symmetrised graph is the path
# 0-1-2-3 and exp(-d) = 1/2, 1/4, 1/8
LINE = np.array([[0.0], [LN2], [3 * LN2], [6 * LN2]], dtype=np.float32)
TINY_H = np.array([1.0, 2.0, 3.0, 8.0])
# f0 = 1 + 2/2; f1 = 2 + 1/2 + 3/4; f2 = 3 + 2/4 + 8/8; f3 = 8 + 3/8
TINY_F = np.array([2.0, 3.25, 4.5, 8.375])


def test_tiny_graph_is_the_symmetrised_path() -> None:
    g = knn_graph(LINE, 1)
    np.testing.assert_array_equal(g.ptr, [0, 1, 3, 5, 6])
    np.testing.assert_array_equal(g.nbr, [1, 0, 2, 1, 3, 2])  # 0 -> 3 is not an edge: 3's nearest is 2, not 0
    np.testing.assert_allclose(g.dist, np.array([1, 1, 2, 2, 3, 3]) * LN2, rtol=1e-6)


def test_tiny_forward_pass() -> None:
    g = knn_graph(LINE, 1)
    np.testing.assert_allclose(d2_forward(TINY_H, g), TINY_F, rtol=1e-6)
    np.testing.assert_allclose(OracleSampler(LINE.astype(np.float64), TINY_H, 1.0, 1).starting_density, TINY_F, 1e-6)
    # only the neighbours' scores are clipped at 1e-7: f0 = -1 + 2/2 = 0; f1 = 2 + 1e-7/2 + 3/4
    clipped = d2_forward(np.array([-1.0, 2.0, 3.0, 8.0]), g)
    np.testing.assert_allclose(clipped[:2], [0.0, 2.75 + 0.5e-7], rtol=1e-6, atol=1e-7)


def test_tiny_reverse_step() -> None:
    # gamma = 1/3: picking 3 lowers 2 by exp(-ln 2) * 8.375 = 4.1875 to 0.3125 < f1 = 3.25, so 1 comes next
    g = knn_graph(LINE, 1)
    oracle = OracleSampler(LINE.astype(np.float64), TINY_H, 1.0 / 3.0, 1)
    batch: list[int] = []
    oracle.step(batch)
    assert batch == [3]
    np.testing.assert_allclose(oracle.graph_density[:3], [2.0, 3.25, 0.3125], rtol=1e-6)
    np.testing.assert_array_equal(d2_reverse(TINY_F, g, 2, 1.0 / 3.0), [3, 1])
    # gamma = 30: exp(-30 * 3 ln 2) ~ 0, so the pick barely lowers 2 and the top forward scores win
    np.testing.assert_array_equal(d2_reverse(TINY_F, g, 2, 30.0), [3, 2])
    np.testing.assert_array_equal(d2_select(TINY_H, LINE, 0.5, mode="global", gamma=1 / 3, k=1, seed=0), [1, 3])


def test_ties_go_to_the_lowest_index_in_both() -> None:
    # two far-apart pairs at distance exactly 1, equal hardness: all forward scores tie at 1 + exp(-1);
    # np.argmax (oracle) and the heap (d2_select) both take the lowest index: 0, which lowers 1, then 2
    x = np.array([[0.0], [1.0], [100.0], [101.0]], dtype=np.float32)
    kw = dict(mode="global", strata=1, gamma=0.1, k=1, seed=0)
    np.testing.assert_array_equal(oracle_d2(np.ones(4), x, 0.5, 0.0, **kw), [0, 2])
    np.testing.assert_array_equal(d2_select(np.ones(4), x, 0.5, 0.0, **kw), [0, 2])
