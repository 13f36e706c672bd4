"""The process-count-independent randomness (elfs/infra/sampling.py): the tensor hash equals its exact Python-int
reference, is uniform enough to draw crops and neighbours from, and the epoch order deals out to DDP ranks into
the same global batches."""

import numpy as np
import torch

from elfs.infra.sampling import _M32, EpochSeededSampler, _mix32_int, counter_hash, counter_randint


def _reference(seed: int, epoch: int, index: int, stream: int) -> int:
    key = _mix32_int(_mix32_int(_mix32_int(seed) ^ stream) ^ epoch)
    return _mix32_int(_mix32_int((index & _M32) ^ key))


def test_tensor_hash_equals_exact_integer_reference():
    """16-bit-halved products on int64 tensors give the exact mod-2**32 arithmetic (no int64 overflow anywhere)."""
    rng = np.random.default_rng(0)
    idx = np.concatenate([np.arange(50), rng.integers(0, 2**32, 200), [2**32 - 1, 2**31, 2**31 - 1]])
    for seed, epoch, stream in [(0, 0, 0), (7, 3, 2), (2**31 + 5, 10**6, 1)]:
        got = counter_hash(seed, epoch, torch.from_numpy(idx.astype(np.int64)), stream).tolist()
        assert got == [_reference(seed, epoch, int(i), stream) for i in idx]


def test_draws_are_uniform_and_streams_independent():
    idx = torch.arange(90_000)
    a = counter_randint(1, 0, idx, 0, 9)
    b = counter_randint(1, 0, idx, 1, 9)
    counts = torch.bincount(a, minlength=9).numpy()
    assert np.all(np.abs(counts / 10_000 - 1) < 0.05), counts
    joint = torch.bincount(a * 9 + b, minlength=81).numpy()  # independent streams: every pair about 1/81
    assert np.all(np.abs(joint / (90_000 / 81) - 1) < 0.2), joint
    assert (counter_randint(1, 1, idx, 0, 9) == a).float().mean() < 0.15  # a new epoch redraws (1/9 by chance)


def test_epoch_order_deals_the_same_global_batches_to_any_number_of_ranks():
    """Rank r takes positions r, r+W, ... of the one (seed, epoch) order: with per-rank batch B/W, global batch i
    is the same set of examples for W = 1, 2, 4; a size that W does not divide is padded by wrapping around."""
    n, batch = 96, 16
    s = EpochSeededSampler(n, seed=3)
    s.set_epoch(2)
    order = list(s)
    assert sorted(order) == list(range(n)) and order != list(range(n)) and len(s) == n
    one = [set(order[i : i + batch]) for i in range(0, n, batch)]
    for world in (2, 4):
        per_rank = []
        for r in range(world):
            w = EpochSeededSampler(n, seed=3, rank=r, world=world)
            w.set_epoch(2)
            got = list(w)
            assert len(got) == len(w) == n // world
            per_rank.append([got[i : i + batch // world] for i in range(0, len(got), batch // world)])
        assert [set().union(*(rank[i] for rank in per_rank)) for i in range(len(one))] == one
    # an uneven last batch is dealt unevenly, without repeats: global batches still equal one process's
    first = list(EpochSeededSampler(7, seed=0, batch_size=4))
    parts = [list(EpochSeededSampler(7, seed=0, batch_size=4, rank=r, world=2)) for r in (0, 1)]
    assert [len(x) for x in parts] == [4, 3]
    assert [set(parts[0][i : i + 2] + parts[1][i : i + 2]) for i in (0, 2)] == [set(first[:4]), set(first[4:])]
    # a last batch smaller than the world is topped up with the epoch's first examples, so every rank steps
    first = list(EpochSeededSampler(9, seed=0, batch_size=4))
    parts = [list(EpochSeededSampler(9, seed=0, batch_size=4, rank=r, world=4)) for r in range(4)]
    assert [len(x) for x in parts] == [3, 3, 3, 3]
    assert sorted(x[2] for x in parts) == sorted(first[8:] + first[:3])
    # drop_last: whole global batches only
    parts = [list(EpochSeededSampler(9, seed=0, batch_size=4, drop_last=True, rank=r, world=2)) for r in (0, 1)]
    assert sorted(parts[0] + parts[1]) == sorted(first[:8])
