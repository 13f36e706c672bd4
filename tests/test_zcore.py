"""ZCore (elfs/select/zcore.py): hand-computed cases, the batched form against a plain per-sample loop on the same
draws, and against the per-sample port (independent draws) in expectation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from elfs.select.zcore import (
    SortedIndex,
    _candidates,
    _covered,
    _covered_by_row,
    _penalise,
    _penalties_by_row,
    block_scores,
    distinct_dims,
    neighbour_subset,
    triangular,
    zcore_scores,
    zcore_scores_per_sample,
    zcore_select,
)


def test_triangular_hits_its_ends_and_mode_and_matches_the_distribution():
    lo, mode, hi = np.array([0.0]), np.array([1.0]), np.array([4.0])
    assert triangular(np.array([0.0]), lo, mode, hi)[0] == 0.0
    assert triangular(np.array([0.25]), lo, mode, hi)[0] == pytest.approx(1.0)  # F(mode) = (mode-lo)/(hi-lo)
    assert triangular(np.array([1.0]), lo, mode, hi)[0] == pytest.approx(4.0)
    u = np.random.default_rng(0).uniform(size=20000)
    draws = triangular(u, np.zeros_like(u), np.ones_like(u), np.full_like(u, 4.0))
    assert stats.kstest(draws, stats.triang(c=0.25, loc=0.0, scale=4.0).cdf).pvalue > 0.01
    # a dimension whose values are all equal: numpy's sampler refuses it, here it is that value
    assert triangular(np.array([0.3]), np.array([2.0]), np.array([2.0]), np.array([2.0]))[0] == 2.0


def test_distinct_dims_are_distinct_and_uniform():
    d = distinct_dims(np.random.default_rng(1), 30000, 5, 3)
    assert all(len(set(row)) == 3 for row in d[:2000]) and d.min() == 0 and d.max() == 4
    counts = np.bincount(d.ravel(), minlength=5)
    assert stats.chisquare(counts).pvalue > 0.001
    two = np.sort(distinct_dims(np.random.default_rng(2), 30000, 5, 2), axis=1)
    pairs = np.bincount(two @ np.array([5, 1]), minlength=25)
    assert (pairs > 0).sum() == 10 and stats.chisquare(pairs[pairs > 0]).pvalue > 0.001  # every pair alike


def test_one_sample_hand_computed():
    # 1-D points 0, 1, 3, 10; a sample at 0.2 covers point 0 (+1); its 2 neighbours at distances 1 and 3 share the
    # penalty by 1/d: 1 and 1/3, normalised to 0.75 and 0.25
    xt = torch.tensor([[0.0, 1.0, 3.0, 10.0]])
    delta = block_scores(xt, np.array([[0]]), np.array([[0.2]]), neighbours=2, exponent=1.0)
    assert delta.numpy() == pytest.approx([1.0, -0.75, -0.25, 0.0])
    # exponent 2: 1 and 1/9 -> 0.9 and 0.1
    delta = block_scores(xt, np.array([[0]]), np.array([[0.2]]), neighbours=2, exponent=2.0)
    assert delta.numpy() == pytest.approx([1.0, -0.9, -0.1, 0.0])


def test_an_exact_twin_takes_the_whole_penalty():
    xt = torch.tensor([[0.0, 0.0, 5.0, 6.0]])
    delta = block_scores(xt, np.array([[0]]), np.array([[0.1]]), neighbours=3, exponent=4.0)
    assert delta.numpy() == pytest.approx([1.0, -1.0, 0.0, 0.0])


def test_exact_ties_are_broken_at_random_not_by_index():
    """Sparse embeddings (many exact zeros) tie often: the coverage, a twin's whole penalty and the neighbours at the
    last distance each go to a random one of the tied examples (by a salted hash), never to the first index."""
    rng = np.random.default_rng(0)
    b, n = 20000, 20
    salt = torch.as_tensor(rng.integers(0, 1 << 32, size=(b, 2)))
    # coverage: every example at one point
    same, dims, at = torch.zeros((1, n)), torch.zeros((b, 1), dtype=torch.int64), torch.zeros((b, 1))
    for covered in (
        _covered(same, dims, at, salt[:, 0], None, n),
        _covered_by_row(same, dims[:4000], at[:4000], salt[:4000, 0], SortedIndex(same), 8),
    ):
        assert stats.chisquare(np.bincount(covered.numpy(), minlength=n)).pvalue > 0.001
    # a twin's penalty: 20 examples at distance 0 from the covered one (left out: inf), two further away
    dist = torch.tensor([[float("inf")] + [0.0] * n + [1.0, 2.0]]).expand(b, -1).contiguous()
    ids = torch.arange(n + 3).expand(b, -1)
    delta = torch.zeros(n + 3, dtype=torch.float64)
    _penalise(delta, dist, ids, 5, 4.0, salt[:, 1])
    assert delta.sum().item() == pytest.approx(-b) and delta[n + 1 :].abs().sum() == 0
    assert stats.chisquare(-delta[1 : n + 1].numpy()).pvalue > 0.001
    # the last of 5 neighbours: one at distance 1, then 20 tied at 2 for the other 4 places (weights 1 and 1/16)
    dist = torch.tensor([[float("inf"), 1.0] + [2.0] * n + [3.0]]).expand(b, -1).contiguous()
    delta = torch.zeros(n + 3, dtype=torch.float64)
    _penalise(delta, dist, ids, 5, 4.0, salt[:, 1])
    assert delta[1].item() == pytest.approx(-b / 1.25) and delta[n + 2] == 0
    tied = -delta[2 : n + 2].numpy() / (0.0625 / 1.25)  # how often each tied one was among the 5
    assert tied.sum() == pytest.approx(4 * b) and stats.chisquare(tied).pvalue > 0.001


def _loop(x: np.ndarray, dims: np.ndarray, points: np.ndarray, neighbours: int, exponent: float) -> np.ndarray:
    """The reference's per-sample body, written out plainly, on given draws."""
    scores = np.zeros(len(x))
    for d, p in zip(dims, points, strict=True):
        idx = np.argmin(np.abs(x[:, d] - p).sum(axis=1))
        scores[idx] += 1
        nn_dist = np.abs(x[:, d] - x[idx, d]).sum(axis=1)
        nn = np.argsort(nn_dist)[1:]
        if nn_dist[nn[0]] == 0:
            scores[nn[0]] -= 1
        else:
            nn = nn[:neighbours]
            pen = 1 / nn_dist[nn] ** exponent
            scores[nn] -= pen / pen.sum()
    return scores


def test_the_batched_form_equals_the_per_sample_loop_on_the_same_draws():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(150, 12)).astype(np.float32)
    dims = distinct_dims(rng, 500, 12, 2)
    points = rng.normal(size=(500, 2))
    xt = torch.as_tensor(x.T.copy())
    for nn, ex in ((20, 4.0), (149, 1.0)):
        want = _loop(x.astype(np.float64), dims, points.astype(np.float32).astype(np.float64), nn, ex)
        got = sum(block_scores(xt, dims[i : i + 64], points[i : i + 64], nn, ex) for i in range(0, 500, 64))
        np.testing.assert_allclose(got.numpy(), want, atol=1e-6)
    # wide: 10,000 examples
    wide = rng.normal(size=(10000, 6)).astype(np.float32)
    dims, points = distinct_dims(rng, 40, 6, 2), rng.normal(size=(40, 2))
    want = _loop(wide.astype(np.float64), dims, points.astype(np.float32).astype(np.float64), 300, 4.0)
    xt = torch.as_tensor(wide.T.copy())
    np.testing.assert_allclose(block_scores(xt, dims, points, 300, 4.0).numpy(), want, atol=1e-6)
    # the windowed search (ranks around the point in one dimension, checked against the window's edge), and the
    # neighbours among the examples within a bound from a random subset (and rows below the bound: every example)
    index, bound = SortedIndex(xt), neighbour_subset(10000, 300)
    assert bound is not None
    got = block_scores(xt, dims, points, 300, 4.0, index=index, bound=bound)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-6)
    got = block_scores(xt, dims, points, 300, 4.0, index=index, bound=(bound[0], 5))  # few within: all fall back
    np.testing.assert_allclose(got.numpy(), want, atol=1e-6)


def test_the_bound_changes_no_score_even_where_distances_tie():
    """Integers 0..99: L1 distances tie at the last neighbour in most rows (and some examples are twins); with and
    without the bound (and the window), the same scores."""
    rng = np.random.default_rng(7)
    xt = torch.as_tensor(rng.integers(0, 100, size=(4, 6000)).astype(np.float32))
    dims, points = distinct_dims(rng, 120, 4, 2), rng.uniform(0, 99, (120, 2))
    salt = rng.integers(0, 1 << 32, size=(120, 2))
    bound = neighbour_subset(6000, 100)
    assert bound is not None
    plain = block_scores(xt, dims, points, 100, 4.0, salt)
    fast = block_scores(xt, dims, points, 100, 4.0, salt, SortedIndex(xt), bound)
    np.testing.assert_allclose(fast.numpy(), plain.numpy(), atol=1e-9)
    # the covered examples and the penalties as a GPU finds them (matrices) and as a CPU does (one row at a time)
    at, index = torch.as_tensor(points, dtype=torch.float32), SortedIndex(xt)
    for width in (64, 1024):  # windows that settle few samples and most: the rest scan every example
        want = _covered(xt, torch.as_tensor(dims), at, torch.as_tensor(salt[:, 0]), index, width)
        assert torch.equal(
            _covered_by_row(xt, torch.as_tensor(dims), at, torch.as_tensor(salt[:, 0]), index, width), want
        )
    d, covered = torch.as_tensor(dims[:40]), torch.as_tensor(rng.integers(0, 6000, 40))
    centre, row_salt = xt[d, covered[:, None]], torch.as_tensor(salt[:40, 1])
    dist = xt[d[:, 0]].sub(centre[:, :1]).abs() + xt[d[:, 1]].sub(centre[:, 1:]).abs()
    dist[torch.arange(40), covered] = float("inf")
    cand, ids, ok = _candidates(dist, 100, torch.as_tensor(bound[0]), bound[1])
    want = torch.zeros(6000, dtype=torch.float64)
    _penalise(want, cand, ids, 100, 4.0, row_salt[ok])
    got, ok_rows = _penalties_by_row(xt, d, centre, covered, 100, 4.0, row_salt, *bound)
    assert torch.equal(ok_rows, ok) and ok.sum() >= 35  # most rows settled by the bound
    np.testing.assert_allclose(got, want.numpy(), atol=1e-12)


def test_a_window_of_ranks_guards_everything_outside_it():
    x = torch.tensor([[0.0, 1.0, 2.0, 3.0, 10.0, 11.0, 20.0, 30.0]])
    ex, vals, guard = SortedIndex(x).window(torch.tensor([0]), torch.tensor([10.4]), 3)
    assert ex[0].tolist() == [4, 5, 6] and vals[0].tolist() == [10.0, 11.0, 20.0]  # ranks around 10.4's place
    assert guard.item() == pytest.approx(0.4)  # anything left of the window is at least 10.4 - 10 away
    ex, vals, guard = SortedIndex(x).window(torch.tensor([0]), torch.tensor([-5.0]), 3)
    assert ex[0].tolist() == [0, 1, 2] and guard.item() == pytest.approx(7.0)  # nothing to the left: its right edge


def test_the_compute_batch_changes_no_score():
    x = np.random.default_rng(4).normal(size=(80, 6))
    a = zcore_scores(x, samples=5000, dim=2, neighbours=10, exponent=4, seed=1, batch_size=300)
    b = zcore_scores(x, samples=5000, dim=2, neighbours=10, exponent=4, seed=1, batch_size=4096)
    np.testing.assert_allclose(a, b, atol=1e-9)
    c = zcore_scores(x, samples=5000, dim=2, neighbours=10, exponent=4, seed=2)
    assert not np.allclose(a, c)


def test_batched_and_per_sample_ports_agree_in_expectation():
    """Independent draws: with many samples the two rank the examples alike (Spearman > 0.99)."""
    x = np.random.default_rng(5).lognormal(0.0, 1.2, (30, 3))  # uneven density: expected scores spread widely
    kw = {"samples": 50000, "dim": 2, "neighbours": 5, "exponent": 4, "rand_init": False}
    fast = zcore_scores(x, seed=0, **kw)
    slow = zcore_scores_per_sample(x, seed=1, **kw)
    assert fast.min() == 0.0 and fast.max() == 1.0 and slow.min() == 0.0 and slow.max() == 1.0
    rho = stats.spearmanr(fast, slow).statistic
    assert rho > 0.99, rho


def test_a_dense_cluster_is_redundant():
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(0, 1, (50, 4)), rng.normal(4, 0.3, (30, 4))])  # a wide and a dense cluster
    s = zcore_scores(x, samples=20000, dim=2, neighbours=10, exponent=4, rand_init=False, seed=0)
    assert s[50:].mean() < s[:50].mean()


def test_random_init_only_breaks_ties_and_selection_keeps_the_highest():
    x = np.random.default_rng(6).normal(size=(50, 4))
    s = zcore_scores(x, samples=2000, dim=2, neighbours=5, exponent=4, rand_init=True, seed=0)
    kept = zcore_select(s, 0.2)
    assert len(kept) == 10 and kept.dtype == np.int64
    assert set(kept) == set(np.argsort(s)[-10:])


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"samples": 0}, "samples=0"),
        ({"dim": 9}, "dim=9 exceeds"),
        ({"neighbours": True}, "neighbours=True"),
        ({"exponent": float("nan")}, "exponent=nan"),
    ],
)
def test_bad_arguments_are_refused(kw, match):
    x = np.ones((5, 4))
    args = {"samples": 10, "dim": 2, "neighbours": 3, "exponent": 4.0, **kw}
    with pytest.raises(ValueError, match=match):
        zcore_scores(x, **args)


@pytest.mark.slow
def test_elfs_select_method_zcore_as_typed(tmp_path):
    """`elfs-select photos --method zcore`: ZCore's scores in selection.csv, no clustering and no proxy trained."""
    import csv
    import os
    import subprocess
    import sys
    from pathlib import Path

    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("ELFS_")}
    env.update(WANDB_MODE="disabled", OMP_NUM_THREADS="1")

    def run(*cmd: str) -> subprocess.CompletedProcess:
        p = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert p.returncode == 0, (p.stdout[-2000:], p.stderr[-3000:])
        return p

    run(sys.executable, "-m", "elfs.data.demo", "photos")
    p = run(str(bin_dir / "elfs-select"), "photos", "--budget", "0.2", "--method", "zcore", "--out", "picks",
            "selection.zcore_samples=20000")  # fmt: skip
    log = p.stdout + p.stderr
    assert "ZCore's coverage and redundancy scores" in log, log[-3000:]
    timing = next(line for line in log.splitlines() if line.startswith("wall time per stage"))
    assert " zcore " in timing and "cluster" not in timing and "dynamics" not in timing, timing
    with open(tmp_path / "picks" / "selection.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 300 and {r["score_name"] for r in rows} == {"zcore"}
    kept = [r for r in rows if r["kept_0.2"] == "1"]
    assert len(kept) == 60
    # near-copies left out of the pool (duplicates.csv) are never kept; each group is represented by its member of
    # highest score, and among the pool the highest scores are kept
    score = {r["filepath"]: float(r["score"]) for r in rows}
    dup_csv = tmp_path / "picks" / "duplicates.csv"
    with open(dup_csv, newline="") as f:
        dups = list(csv.DictReader(f))
    assert all(score[d["path"]] <= score[d["representative"]] for d in dups), dups
    left_out = {d["path"] for d in dups}
    pool = [r for r in rows if r["filepath"] not in left_out]
    assert not left_out & {r["filepath"] for r in kept}
    assert min(float(r["score"]) for r in kept) >= max(float(r["score"]) for r in pool if r["kept_0.2"] == "0")
    listed = (tmp_path / "picks" / "annotate_0.2.txt").read_text().split()
    assert len(listed) == 60
