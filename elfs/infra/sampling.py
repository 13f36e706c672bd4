"""Randomness that does not depend on how many processes train: the data order is a function of (seed, epoch), and
each example's random draws (crop offsets, flips, a TEMI neighbour) a function of (seed, epoch, example index).

With DDP, Lightning hands rank r the positions r, r+W, r+2W, ... of the sampler's order, so each global batch holds
the same examples on any number of devices W, and a counter-based hash gives each of them the same draw wherever it
lands. A 2-process run then differs from a 1-process run only in the order of float reductions. The draws are also
stateless, so a run resumed from an epoch checkpoint draws what an uninterrupted run would.
"""

from __future__ import annotations

import torch

_M32 = 0xFFFFFFFF


def _mix32_int(x: int) -> int:
    """The 32-bit integer hash below ("lowbias32", C. Wellons) on a Python int: the reference for the tensor one."""
    x &= _M32
    x ^= x >> 16
    x = (x * 0x7FEB352D) & _M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & _M32
    return x ^ (x >> 16)


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2**32 for int64 x in [0, 2**32), in 16-bit halves so no int64 product overflows."""
    lo, hi = x & 0xFFFF, x >> 16
    return (lo * c + (((hi * c) & 0xFFFF) << 16)) & _M32


def _mix32(x: torch.Tensor) -> torch.Tensor:
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def counter_hash(seed: int, epoch: int, index: torch.Tensor, stream: int) -> torch.Tensor:
    """Uniform 32-bit integers (int64 tensor, on ``index``'s device) for each example ``index`` in ``epoch``;
    ``stream`` tells apart the independent draws of one example (e.g. 0 = crop top, 1 = crop left, 2 = flip)."""
    key = _mix32_int(_mix32_int(_mix32_int(int(seed)) ^ int(stream)) ^ int(epoch))
    return _mix32(_mix32((index.to(torch.int64) & _M32) ^ key))


def counter_randint(seed: int, epoch: int, index: torch.Tensor, stream: int, high: int) -> torch.Tensor:
    """Integers in [0, high) from :func:`counter_hash` (modulo bias below high / 2**32)."""
    return counter_hash(seed, epoch, index, stream) % int(high)


class EpochSeededSampler(torch.utils.data.Sampler):
    """Shuffles with an order that depends only on (seed, epoch): a resumed run sees exactly the batches an
    uninterrupted one would (Lightning calls `set_epoch` before every epoch).

    Under DDP (a process group is open when the loader is iterated) rank r takes positions r, r+W, r+2W, ... of
    that one order, so with a per-device batch of ``batch_size``/W (``batch_size`` is the global batch) global
    batch i holds exactly one process's batch i, the last, smaller one included: ranks then hold different
    numbers of examples in it, which the classifier's loss weighting and global batch norm account for. Nothing is
    padded, except when that last batch has fewer examples than there are ranks (n mod batch_size < W): it is
    topped up with repeats of the epoch's first examples so that every rank takes a step. With ``drop_last`` the
    order is cut to whole global batches first. The Trainers that use it set ``use_distributed_sampler=False``:
    Lightning's own wrapper would shuffle the positions again."""

    def __init__(
        self,
        n: int,
        seed: int,
        *,
        batch_size: int | None = None,
        drop_last: bool = False,
        rank: int | None = None,
        world: int | None = None,
    ) -> None:
        """``rank`` / ``world`` default to the process group's, read when the loader is iterated."""
        self.n, self.seed, self.epoch = int(n), int(seed), 0
        self.batch_size, self.drop_last = batch_size, bool(drop_last)
        self.rank, self.world = rank, world

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _rank_world(self) -> tuple[int, int]:
        import torch.distributed as dist

        if self.world is not None:
            return int(self.rank or 0), int(self.world)
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def _positions(self, world: int) -> list[int]:
        """Positions into the epoch's order that the ranks deal out: cut to whole batches, or topped up."""
        n, b = self.n, int(self.batch_size or self.n)
        if world > 1 and self.drop_last:
            return list(range(n - n % b))
        rest = n % b
        top_up = world - rest if world > 1 and 0 < rest < world else 0
        return list(range(n)) + list(range(top_up))

    def __len__(self) -> int:
        rank, world = self._rank_world()
        return len(self._positions(world)[rank::world])

    def __iter__(self):
        rank, world = self._rank_world()
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        return iter([order[p] for p in self._positions(world)[rank::world]])
