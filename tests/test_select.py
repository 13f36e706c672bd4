"""Coreset selectors: hand-worked cases, exact sizes, determinism, brute-force cross-checks, bad input."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from elfs.select import METHODS_USING_BETA, SELECTORS, select, to_hardness, validate_budget_beta
from elfs.select.ccs import ccs, stratum_ids, top_up, water_fill
from elfs.select.double_end import double_end
from elfs.select.monotonic import easiest, hardest
from elfs.select.ordering import subset_sizes
from elfs.select.random import random_subset

# hardness value of example i; value v sits at index IDX_OF[v]
H10 = np.array([3, 7, 0, 9, 5, 1, 8, 2, 6, 4], dtype=float)
IDX_OF = {int(v): i for i, v in enumerate(H10)}


def idx(*values: int) -> np.ndarray:
    return np.sort(np.array([IDX_OF[v] for v in values], dtype=np.int64))


def assert_kept(kept: np.ndarray, n: int, n_keep: int) -> None:
    assert kept.dtype == np.int64
    assert kept.shape == (n_keep,)
    assert np.all(np.diff(kept) > 0), "must be sorted and unique"
    assert kept.min() >= 0 and kept.max() < n


# ----------------------------------------------------------------------------------------- validation / sizes
def test_validate_budget_beta_messages() -> None:
    with pytest.raises(ValueError, match=r"budget=1\.2 is outside \(0, 1\]"):
        validate_budget_beta(1.2, 0.0)
    with pytest.raises(ValueError, match=r"budget=0\.0 is outside"):
        validate_budget_beta(0.0)
    with pytest.raises(ValueError, match=r"budget=nan"):
        validate_budget_beta(float("nan"))
    with pytest.raises(ValueError, match=r"beta=-0\.1"):
        validate_budget_beta(0.5, -0.1)
    with pytest.raises(ValueError, match=r"beta=0\.6 \+ budget=0\.5 = 1\.1 > 1: beta may be at most 0\.5"):
        validate_budget_beta(0.5, 0.6)
    with pytest.raises(ValueError, match=r"budget='a' is not a real number"):
        validate_budget_beta("a")  # type: ignore[arg-type]
    # float noise from np.arange is tolerated; exact sum 1 is valid
    assert validate_budget_beta(0.7, np.arange(0, 1, 0.1)[3]) == (0.7, 0.30000000000000004)
    assert validate_budget_beta(np.float64(1.0), 0.0) == (1.0, 0.0)


def test_subset_sizes_rounding() -> None:
    assert subset_sizes(100, 0.29) == (29, 0)  # 0.29*100 = 28.999999999999996; int() would give 28
    assert subset_sizes(10, 0.01) == (1, 0)  # at least one example kept
    assert subset_sizes(10, 0.3, 0.2) == (3, 2)
    # round(0.7*5)=4 and round(0.3*5)=2 overshoot N=5: n_keep wins, n_hard is lowered to 1
    assert subset_sizes(5, 0.7, 0.3) == (4, 1)
    with pytest.raises(ValueError, match=r"n=0 must be a positive integer"):
        subset_sizes(0, 0.5)


def test_to_hardness() -> None:
    aum = np.array([0.5, -1.0, 2.0])
    np.testing.assert_array_equal(to_hardness(aum, "low"), [-0.5, 1.0, -2.0])
    forgetting = np.array([0, 3, 1])
    h = to_hardness(forgetting, "high")
    assert h.dtype == np.float64
    np.testing.assert_array_equal(h, [0.0, 3.0, 1.0])
    with pytest.raises(ValueError, match=r"hard_end='hi'"):
        to_hardness(aum, "hi")
    with pytest.raises(ValueError, match=r"1 NaN value\(s\) \(first at index 2"):
        to_hardness(np.array([1.0, 2.0, np.nan]), "high")
    # AUM: the lowest-margin example is the hardest and is dropped first by the hard cut
    kept = double_end(to_hardness(np.array([0.9, -0.4, 0.1, 0.5]), "low"), budget=0.5, beta=0.25)
    np.testing.assert_array_equal(kept, [2, 3])


# ------------------------------------------------------------------------------------------------ hand-worked
def test_double_end_hand_worked() -> None:
    # drop values 8, 9 (hardest 20%), then keep the 3 hardest of the rest: 5, 6, 7
    np.testing.assert_array_equal(double_end(H10, 0.3, 0.2), idx(5, 6, 7))
    # beta + budget == 1: the reference slice [mis:-0] is empty; here the 7 easiest are kept
    np.testing.assert_array_equal(double_end(H10, 0.7, 0.3), idx(0, 1, 2, 3, 4, 5, 6))
    np.testing.assert_array_equal(double_end(H10, 0.3, 0.0), idx(7, 8, 9))
    np.testing.assert_array_equal(double_end(H10, 1.0, 0.0), np.arange(10))
    # ties: order is (hardness, index); the highest index among equals counts as hardest
    np.testing.assert_array_equal(double_end(np.zeros(5), 0.4, 0.2), [2, 3])


def test_monotonic_hand_worked() -> None:
    np.testing.assert_array_equal(easiest(H10, 0.3), idx(0, 1, 2))
    np.testing.assert_array_equal(hardest(H10, 0.3), idx(7, 8, 9))
    np.testing.assert_array_equal(easiest(np.zeros(5), 0.4), [0, 1])
    np.testing.assert_array_equal(hardest(np.zeros(5), 0.4), [3, 4])


def test_ccs_hand_worked() -> None:
    # beta=0.2 drops values 8, 9; remaining 0..7 split into [0, 3.5) and [3.5, 7]; 4 slots -> 2 per bin
    low, high = set(idx(0, 1, 2, 3).tolist()), set(idx(4, 5, 6, 7).tolist())
    for seed in range(20):
        kept = ccs(H10, 0.4, 0.2, strata=2, seed=seed)
        assert_kept(kept, 10, 4)
        assert len(low & set(kept.tolist())) == 2 and len(high & set(kept.tolist())) == 2
    # skewed: 8 easy, 2 hard; smallest bin first takes min(2, 4 // 2) = 2, then the big bin takes 2
    skew = np.array([0.0] * 8 + [10.0] * 2)
    for seed in range(10):
        kept = ccs(skew, 0.4, 0.0, strata=2, seed=seed)
        assert {8, 9} <= set(kept.tolist()) and len(kept) == 4


def test_stratum_ids_equal_width() -> None:
    np.testing.assert_array_equal(stratum_ids(np.arange(8.0), 2), [0, 0, 0, 0, 1, 1, 1, 1])
    # max is in the last bin even when max <= 0 (the reference's 1.0001*max edge drops it)
    np.testing.assert_array_equal(stratum_ids(np.array([-3.0, -2.0, -1.0, 0.0]), 3), [0, 1, 2, 2])
    np.testing.assert_array_equal(stratum_ids(np.full(4, 2.5), 50), [0, 0, 0, 0])
    with pytest.raises(ValueError, match=r"strata=0"):
        stratum_ids(np.arange(3.0), 0)


def test_ccs_within_bin_sampling_is_uniform() -> None:
    # each of the 4 members of each bin is kept with probability 2/4
    counts = np.zeros(10)
    seeds = 1500
    for seed in range(seeds):
        counts[ccs(H10, 0.4, 0.2, strata=2, seed=seed)] += 1
    freq = counts / seeds
    assert freq[idx(8, 9)].sum() == 0  # hard-cut examples never kept
    np.testing.assert_allclose(np.delete(freq, idx(8, 9)), 0.5, atol=0.07)  # 5.5 sigma


# --------------------------------------------------------------------------------------- CCS water-filling
def _reference_water_fill_sorted(sizes: list[int], budget: int) -> int:
    """Total allocated by the reference bin_allocate (independent loop)."""
    order = sorted(range(len(sizes)), key=lambda i: sizes[i])
    rest, total = budget, 0
    for i, b in enumerate(order):
        take = min(sizes[b], rest // (len(sizes) - i))
        total += take
        rest -= take
    return total


def test_sorted_water_fill_matches_reference_and_is_exact() -> None:
    # Finding: smallest-first water-filling never leaves slots unfilled while budget <= population.
    for k in range(1, 5):
        for sizes in itertools.product(range(6), repeat=k):
            for budget in range(sum(sizes) + 1):
                alloc = water_fill(np.array(sizes), budget)
                assert np.all(alloc <= np.array(sizes))
                assert alloc.sum() == budget == _reference_water_fill_sorted(list(sizes), budget)


def test_unsorted_water_fill_is_short_and_top_up_fixes_it() -> None:
    sizes = np.array([10, 1, 1])
    # visiting bins in index order (not smallest first): 9//3=3, then min(1, 6//2), then min(1, 5): 5 < 9
    rest, plain = 9, []
    for i, s in enumerate(sizes):
        plain.append(min(int(s), rest // (len(sizes) - i)))
        rest -= plain[-1]
    assert sum(plain) == 5
    fixed = top_up(np.array(plain), sizes, 9, np.random.default_rng(0))
    np.testing.assert_array_equal(fixed, [7, 1, 1])
    # round robin, largest remaining room first: rooms (8, 4, 0) -> +1,+1 -> rooms (7, 3, 0) -> +1,+1
    np.testing.assert_array_equal(
        top_up(np.array([2, 2, 1]), np.array([10, 6, 1]), 9, np.random.default_rng(0)), [4, 4, 1]
    )
    # equal rooms: the seeded tie-break decides, deterministically per seed, and both bins get picked over seeds
    picks = {tuple(top_up(np.array([0, 0]), np.array([3, 3]), 1, np.random.default_rng(s))) for s in range(20)}
    assert picks == {(1, 0), (0, 1)}
    with pytest.raises(ValueError, match=r"target=20"):
        top_up(np.array([0, 0]), np.array([3, 3]), 20, np.random.default_rng(0))


def test_ccs_exact_where_reference_binning_is_short() -> None:
    # Reference CCS bins scores over [min, 1.0001*max): with max == 0 the 8 examples at 0 fall in no bin,
    # so its allocation for 5 slots can only place 2. Ours bins on a closed range and returns exactly 5.
    score = np.array([-1.0, -0.5] + [0.0] * 8)
    lo, hi = score.min(), score.max() * 1.0001
    step = (hi - lo) / 50
    ref_counts = [int(np.sum((score >= lo + i * step) & (score < lo + (i + 1) * step))) for i in range(50)]
    assert _reference_water_fill_sorted(ref_counts, 5) == 2
    for seed in range(5):
        assert_kept(ccs(score, 0.5, 0.0, seed=seed), 10, 5)


def test_ccs_strata1_beta0_is_uniform_random_sample() -> None:
    h = np.random.default_rng(1).normal(size=37)
    for seed in range(5):
        expect = np.sort(np.random.default_rng(seed).choice(37, size=11, replace=False))
        np.testing.assert_array_equal(ccs(h, 0.3, 0.0, strata=1, seed=seed), expect)


def test_ccs_and_random_determinism_and_seed_sensitivity() -> None:
    h = np.random.default_rng(2).gamma(1.0, size=200)  # skewed
    a = ccs(h, 0.2, 0.1, seed=3)
    np.testing.assert_array_equal(a, ccs(h, 0.2, 0.1, seed=3))
    assert len({tuple(ccs(h, 0.2, 0.1, seed=s)) for s in range(5)}) == 5
    r = random_subset(200, 0.2, seed=3)
    np.testing.assert_array_equal(r, random_subset(200, 0.2, seed=3))
    assert len({tuple(random_subset(200, 0.2, seed=s)) for s in range(5)}) == 5
    assert_kept(r, 200, 40)


# ------------------------------------------------------------------------------------- brute force / sweeps
def _double_end_brute(h: np.ndarray, budget: float, beta: float) -> np.ndarray:
    n = h.size
    n_keep = max(1, int(round(budget * n)))
    n_hard = min(int(round(beta * n)), n - n_keep)
    kept = []
    for i in range(n):
        rank = sum(1 for j in range(n) if (h[j], j) < (h[i], i))  # 0 = easiest
        if n - n_hard - n_keep <= rank < n - n_hard:
            kept.append(i)
    return np.array(kept, dtype=np.int64)


SWEEP = [
    (n, budget, beta)
    for n in (1, 2, 3, 7, 10, 33)
    for budget in (0.01, 0.1, 0.25, 0.3, 0.5, 0.7, 0.9, 1.0)
    for beta in sorted({0.0, 0.1, 0.3, round(1.0 - budget, 10)})
    if beta + budget <= 1.0 + 1e-9
]


def test_double_end_matches_brute_force() -> None:
    rng = np.random.default_rng(4)
    for n, budget, beta in SWEEP:
        h = rng.integers(0, 4, size=n).astype(float)  # many ties
        np.testing.assert_array_equal(double_end(h, budget, beta), _double_end_brute(h, budget, beta))


def test_exact_sizes_all_methods_sweep() -> None:
    rng = np.random.default_rng(5)
    for n, budget, beta in SWEEP:
        h = rng.normal(size=n)
        n_keep = max(1, int(round(budget * n)))
        for method in SELECTORS:
            b = beta if method in METHODS_USING_BETA else 0.0
            kept = select(method, h, n=n, budget=budget, beta=b, seed=1, strata=5)
            assert_kept(kept, n, n_keep)
            if method in METHODS_USING_BETA:
                # nothing among the n_hard hardest is ever kept
                n_hard = min(int(round(b * n)), n - n_keep)
                hardest_set = set(np.argsort(h, kind="stable")[n - n_hard :].tolist())
                assert not hardest_set & set(kept.tolist()), (method, n, budget, b)


def test_select_dispatch_matches_functions() -> None:
    np.testing.assert_array_equal(select("double_end", H10, n=10, budget=0.3, beta=0.2), double_end(H10, 0.3, 0.2))
    np.testing.assert_array_equal(
        select("ccs", H10, n=10, budget=0.4, beta=0.2, seed=7, strata=2), ccs(H10, 0.4, 0.2, strata=2, seed=7)
    )
    np.testing.assert_array_equal(select("random", None, n=10, budget=0.3, seed=7), random_subset(10, 0.3, seed=7))
    np.testing.assert_array_equal(select("easy", H10, n=10, budget=0.3), easiest(H10, 0.3))
    np.testing.assert_array_equal(select("hard", H10, n=10, budget=0.3), hardest(H10, 0.3))


# ----------------------------------------------------------------------------------------------- bad inputs
def test_select_bad_inputs() -> None:
    with pytest.raises(ValueError, match=r"method='dbl'.*\['ccs', 'double_end', 'easy', 'hard', 'random'\]"):
        select("dbl", H10, n=10, budget=0.3)
    with pytest.raises(ValueError, match=r"method='double_end' needs a hardness score"):
        select("double_end", None, n=10, budget=0.3)
    with pytest.raises(ValueError, match=r"hardness has 10 entries but n=11"):
        select("ccs", H10, n=11, budget=0.3)
    with pytest.raises(ValueError, match=r"beta=0\.1 given for method='random'"):
        select("random", None, n=10, budget=0.3, beta=0.1)
    with pytest.raises(ValueError, match=r"beta=0\.8 \+ budget=0\.3"):
        select("double_end", H10, n=10, budget=0.3, beta=0.8)
    with pytest.raises(ValueError, match=r"seed=-1"):
        select("random", None, n=10, budget=0.3, seed=-1)
    with pytest.raises(ValueError, match=r"strata=0"):
        select("ccs", H10, n=10, budget=0.3, strata=0)
    bad = H10.copy()
    bad[4] = np.nan
    for method in ("double_end", "ccs", "easy", "hard"):
        with pytest.raises(ValueError, match=r"NaN value\(s\) \(first at index 4"):
            select(method, bad, n=10, budget=0.3)
    inf = H10.copy()
    inf[1] = np.inf
    with pytest.raises(ValueError, match=r"non-finite value\(s\) \(first at index 1: inf"):
        ccs(inf, 0.3, 0.0, seed=0)
    with pytest.raises(ValueError, match=r"must be 1-D"):
        double_end(np.zeros((2, 3)), 0.5)
    with pytest.raises(ValueError, match=r"budget=1\.5 is outside"):
        random_subset(10, 1.5, seed=0)
    with pytest.raises(ValueError, match=r"n=-3"):
        random_subset(-3, 0.5, seed=0)
