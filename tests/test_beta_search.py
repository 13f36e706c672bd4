"""Label-free beta search (method.md §6.4): split, grid, a synthetic problem with a known best beta, warnings."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from elfs.select import select
from elfs.select.beta_search import BetaSearchResult, Holdout, beta_grid_for, search_beta, split_train_val

N = 1000
HARDNESS = np.random.default_rng(0).permutation(N).astype(float)  # distinct values 0..999
NOISY = HARDNESS >= 800  # the 20% hardest carry wrong pseudo-labels
GRID = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]


class ProxyTrainer:
    """Deterministic stand-in for 'train on pseudo-labels, report val accuracy' that checks the call contract.

    Accuracy proxy: clean examples help in proportion to their hardness (informativeness), noisy ones hurt.
    """

    def __init__(self, utility: np.ndarray, expected_val: np.ndarray, train: np.ndarray) -> None:
        self.utility, self.expected_val, self.train = utility, expected_val, set(train.tolist())
        self.calls: list[np.ndarray] = []

    def __call__(self, kept: np.ndarray, val: np.ndarray) -> float:
        assert kept.dtype == np.int64 and val.dtype == np.int64
        assert not set(kept.tolist()) & set(val.tolist()), "train and val indices must be disjoint"
        assert set(kept.tolist()) <= self.train, "coreset must come from the train part only"
        np.testing.assert_array_equal(val, self.expected_val)
        self.calls.append(kept.copy())
        return float(self.utility[kept].mean())


def make_trainer(utility: np.ndarray, seed: int = 0, val_fraction: float = 0.1) -> ProxyTrainer:
    train, val = split_train_val(N, val_fraction, seed)
    return ProxyTrainer(utility, val, train)


# -------------------------------------------------------------------------------------------------- split/grid
def test_split_train_val() -> None:
    train, val = split_train_val(100, 0.1, seed=3)
    assert train.dtype == np.int64 and val.dtype == np.int64
    assert len(val) == 10 and len(train) == 90
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(100))
    _, v2 = split_train_val(100, 0.1, seed=3)
    np.testing.assert_array_equal(v2, val)
    assert not np.array_equal(split_train_val(100, 0.1, seed=4)[1], val)
    for bad in (0.0, 1.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match=rf"val_fraction={bad!r}"):
            split_train_val(100, bad, seed=0)
    with pytest.raises(ValueError, match=r"gives 0 validation examples"):
        split_train_val(5, 0.01, seed=0)


def test_beta_grid_for() -> None:
    assert beta_grid_for(0.3, [0.7, 0.0, 0.5, 0.8, 0.1, 0.5]) == [0.0, 0.1, 0.5, 0.7]
    arange_grid = beta_grid_for(0.7, np.arange(0.0, 1.0, 0.1))
    assert len(arange_grid) == 4 and arange_grid[-1] == pytest.approx(0.3)  # 0.30000000000000004 tolerated
    with pytest.raises(ValueError, match=r"grid=\[0\.6, 0\.8\] has no beta.*budget=0\.5.*at most 0\.5"):
        beta_grid_for(0.5, [0.6, 0.8])
    with pytest.raises(ValueError, match=r"invalid beta\(s\) \[-0\.1\]"):
        beta_grid_for(0.5, [0.0, -0.1])
    with pytest.raises(ValueError, match=r"grid is empty"):
        beta_grid_for(0.5, [])
    with pytest.raises(ValueError, match=r"budget=0\.0 is outside"):
        beta_grid_for(0.0, [0.1])


# ------------------------------------------------------------------------------------------------- the search
def test_search_finds_known_best_beta() -> None:
    # budget 0.3 keeps a window of hardness ranks; beta=0.2 puts it at ranks [0.5, 0.8): all clean and as hard
    # as possible. Smaller beta lets noisy examples in, larger beta keeps easier (less useful) examples.
    utility = np.where(NOISY, -1.0, HARDNESS / N)
    trainer = make_trainer(utility)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the best is inside the grid: no edge warning
        res = search_beta(HARDNESS, 0.3, GRID, train_and_validate=trainer)
    assert isinstance(res, BetaSearchResult)
    assert res.best_beta == pytest.approx(0.2) and not res.at_edge
    assert res.betas == GRID and len(res.val_acc) == len(GRID) == len(trainer.calls)
    assert int(np.argmax(res.val_acc)) == 2
    assert res.val_acc[1] < res.val_acc[2] > res.val_acc[3]
    assert res.coreset_sizes == [270] * len(GRID)  # round(0.3 * 900) from the 900-example train part
    # each call used the train-part selection, mapped back to global indices
    for beta, kept in zip(GRID, trainer.calls, strict=True):
        local = select("double_end", HARDNESS[res.train_idx], n=900, budget=0.3, beta=beta)
        np.testing.assert_array_equal(kept, res.train_idx[local])
    # determinism
    res2 = search_beta(HARDNESS, 0.3, GRID, train_and_validate=make_trainer(utility))
    assert res2.val_acc == res.val_acc and res2.best_beta == res.best_beta


def test_all_candidates_at_once_equal_one_by_one() -> None:
    """train_and_validate_many (the concurrent path) gets every candidate's (kept, val) in grid order and yields
    the same search as calling train_and_validate per beta."""
    utility = np.where(NOISY, -1.0, HARDNESS / N)
    one = make_trainer(utility)
    ref = search_beta(HARDNESS, 0.3, GRID, train_and_validate=one)
    batches = []

    def many(jobs):
        batches.append(jobs)
        return [make_trainer(utility)(kept, val) for kept, val in jobs]

    def never(kept, val):
        raise AssertionError("the one-by-one function must not be called when the batch one is given")

    res = search_beta(HARDNESS, 0.3, GRID, train_and_validate=never, train_and_validate_many=many)
    assert len(batches) == 1 and len(batches[0]) == len(GRID)
    for (kept, val), called in zip(batches[0], one.calls, strict=True):
        np.testing.assert_array_equal(kept, called)
        np.testing.assert_array_equal(val, ref.val_idx)
    assert res.val_acc == ref.val_acc and res.best_beta == ref.best_beta
    with pytest.raises(ValueError, match=f"returned 1 accuracies for {len(GRID)} candidates"):
        search_beta(HARDNESS, 0.3, GRID, train_and_validate=never, train_and_validate_many=lambda jobs: [0.5])


def test_search_with_ccs_respects_contract() -> None:
    utility = np.where(NOISY, -1.0, HARDNESS / N)
    trainer = make_trainer(utility, seed=5)
    res = search_beta(HARDNESS, 0.2, [0.0, 0.2, 0.4], train_and_validate=trainer, method="ccs", seed=5, strata=10)
    assert res.coreset_sizes == [180, 180, 180]
    # the hard cut removes the noisy (globally hardest 20%) examples: many kept at beta=0, none at beta=0.4
    noisy_counts = [int(NOISY[k].sum()) for k in trainer.calls]
    assert noisy_counts[0] > 10 and noisy_counts[2] == 0
    assert res.best_beta > 0.0


def test_monotonic_rise_warns() -> None:
    # poor pseudo-labels: the harder an example, the likelier its pseudo-label is wrong, so pruning more
    # "hard" examples always raises pseudo-label validation accuracy
    utility = 1.0 - HARDNESS / N
    trainer = make_trainer(utility)
    with pytest.warns(UserWarning, match=r"largest beta on the grid \(beta=0\.4.*extend the grid towards beta=0\.7"):
        res = search_beta(HARDNESS, 0.3, [0.0, 0.1, 0.2, 0.3, 0.4], train_and_validate=trainer)
    assert res.at_edge and res.best_beta == pytest.approx(0.4)
    assert all(a < b for a, b in zip(res.val_acc, res.val_acc[1:], strict=False))
    # at the hard limit beta = 1 - budget there is no grid to extend: no warning here, the edge is still reported
    # (the run's end lists it among the signs of weak pseudo-labels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = search_beta(HARDNESS, 0.3, GRID, train_and_validate=make_trainer(utility))
    assert res.best_beta == pytest.approx(0.7) and res.at_edge


def test_ties_pick_smaller_beta_and_single_entry_grid_never_warns() -> None:
    train, val = split_train_val(N, 0.1, 0)
    res = search_beta(HARDNESS, 0.3, GRID, train_and_validate=lambda k, v: 0.5)
    assert res.best_beta == 0.0 and not res.at_edge
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = search_beta(HARDNESS, 0.3, [0.3, 0.9], train_and_validate=lambda k, v: 0.5)
    assert res.betas == [0.3] and res.best_beta == 0.3 and not res.at_edge
    np.testing.assert_array_equal(res.val_idx, val)
    np.testing.assert_array_equal(res.train_idx, train)


def test_search_bad_inputs_fail_before_training() -> None:
    calls: list[int] = []

    def trainer(kept: np.ndarray, val: np.ndarray) -> float:
        calls.append(1)
        return 0.0

    bad = HARDNESS.copy()
    bad[7] = np.nan
    with pytest.raises(ValueError, match=r"NaN value\(s\) \(first at index 7"):
        search_beta(bad, 0.3, GRID, train_and_validate=trainer)
    with pytest.raises(ValueError, match=r"method='random' has no beta"):
        search_beta(HARDNESS, 0.3, GRID, train_and_validate=trainer, method="random")
    with pytest.raises(ValueError, match=r"budget=1\.3"):
        search_beta(HARDNESS, 1.3, GRID, train_and_validate=trainer)
    with pytest.raises(ValueError, match=r"grid=\[0\.8\] has no beta"):
        search_beta(HARDNESS, 0.3, [0.8], train_and_validate=trainer)
    with pytest.raises(ValueError, match=r"val_fraction=0\.0"):
        search_beta(HARDNESS, 0.3, GRID, train_and_validate=trainer, holdout=Holdout(fraction=0.0))
    assert calls == []
    with pytest.raises(ValueError, match=r"returned nan for beta=0\.0"):
        search_beta(HARDNESS, 0.3, GRID, train_and_validate=lambda k, v: float("nan"))
