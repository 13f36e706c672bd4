"""TEMI as a Lightning module: H student and H teacher cluster heads over frozen embeddings (method.md §4).

The embeddings [N, D] and the kNN index [N, k] live in the module as plain tensors on the training device (not
buffers: checkpoints stay small and DDP never broadcasts them); the dataloader yields index batches only, and each
step pairs every anchor with one of its first ``knn_k`` neighbours, drawn uniformly from (seed, epoch, anchor).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Iterator

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from elfs.cluster.loss import temi_loss
from elfs.config import ClusterConfig, to_dict
from elfs.infra.names import HEAD_IMPLS
from elfs.infra.sampling import EpochSeededSampler, counter_randint

__all__ = [
    "HEAD_IMPLS",
    "ClusterHead",
    "LoopHeads",
    "BatchedHeads",
    "make_heads",
    "lr_at",
    "momentum_at",
    "check_temi_inputs",
    "TEMIModule",
]

log = logging.getLogger(__name__)
_STACKED_KEYS = ("w1", "b1", "w2", "b2", "g", "v")


def _trunc_normal_(t: Tensor) -> Tensor:
    return nn.init.trunc_normal_(t, std=0.02, a=-2.0, b=2.0)


class ClusterHead(nn.Module):
    """One TEMI head: Linear(D->hidden) -> GELU -> Linear(hidden->bottleneck) -> L2-normalise ->
    weight-normalised Linear(bottleneck->C, no bias) with trainable gain g (init 1), as in method.md §4.2."""

    def __init__(self, in_dim: int, hidden_dim: int, bottleneck_dim: int, num_clusters: int):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, bottleneck_dim)
        # Weight norm along the output dim (like nn.utils.weight_norm(dim=0)): W = g * v / ||v||_row.
        self.weight_g = nn.Parameter(torch.ones(num_clusters, 1))
        self.weight_v = nn.Parameter(torch.empty(num_clusters, bottleneck_dim))
        for lin in (self.fc1, self.fc2):
            _trunc_normal_(lin.weight)
            nn.init.zeros_(lin.bias)
        _trunc_normal_(self.weight_v)  # only its direction matters

    def last_layer_weight(self) -> Tensor:
        """The effective last-layer weight g * v / ||v|| ([C, bottleneck])."""
        return self.weight_g * self.weight_v / self.weight_v.norm(dim=1, keepdim=True)

    def forward(self, x: Tensor) -> Tensor:
        z = self.fc2(F.gelu(self.fc1(x)))
        z = F.normalize(z, dim=-1, p=2)
        return F.linear(z, self.last_layer_weight())


class LoopHeads(nn.Module):
    """H independent heads in an nn.ModuleList, run one after another (fastest on a small CPU)."""

    def __init__(self, num_heads: int, in_dim: int, hidden_dim: int, bottleneck_dim: int, num_clusters: int):
        super().__init__()
        self.heads = nn.ModuleList(
            ClusterHead(in_dim, hidden_dim, bottleneck_dim, num_clusters) for _ in range(num_heads)
        )

    @property
    def num_heads(self) -> int:
        return len(self.heads)

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, D] -> logits [H, B, C]."""
        return torch.stack([h(x) for h in self.heads])

    def last_layer_parameters(self) -> Iterator[nn.Parameter]:
        for h in self.heads:
            yield h.weight_g
            yield h.weight_v

    def no_weight_decay(self, name: str, p: Tensor) -> bool:
        """True for biases and 1-D parameters (AdamW group with weight decay 0)."""
        return name.endswith("bias") or p.ndim <= 1

    def stacked_state(self) -> dict[str, Tensor]:
        """Weights stacked over heads: w1 [H,hid,D], b1 [H,hid], w2 [H,bn,hid], b2 [H,bn], g [H,C,1], v [H,C,bn]."""
        hs = self.heads
        return {
            "w1": torch.stack([h.fc1.weight for h in hs]),
            "b1": torch.stack([h.fc1.bias for h in hs]),
            "w2": torch.stack([h.fc2.weight for h in hs]),
            "b2": torch.stack([h.fc2.bias for h in hs]),
            "g": torch.stack([h.weight_g for h in hs]),
            "v": torch.stack([h.weight_v for h in hs]),
        }

    @torch.no_grad()
    def load_stacked(self, state: dict[str, Tensor]) -> None:
        """Copy weights from a :meth:`stacked_state`-style dict."""
        for i, h in enumerate(self.heads):
            for key, p in (
                ("w1", h.fc1.weight),
                ("b1", h.fc1.bias),
                ("w2", h.fc2.weight),
                ("b2", h.fc2.bias),
                ("g", h.weight_g),
                ("v", h.weight_v),
            ):
                p.copy_(state[key][i])


class BatchedHeads(nn.Module):
    """H heads as stacked parameters, run with one addmm for the shared-input first layer and bmm after
    (one kernel per layer instead of H; the better form on GPUs)."""

    def __init__(self, num_heads: int, in_dim: int, hidden_dim: int, bottleneck_dim: int, num_clusters: int):
        super().__init__()
        h = num_heads
        self.w1 = nn.Parameter(_trunc_normal_(torch.empty(h, hidden_dim, in_dim)))
        self.b1 = nn.Parameter(torch.zeros(h, hidden_dim))
        self.w2 = nn.Parameter(_trunc_normal_(torch.empty(h, bottleneck_dim, hidden_dim)))
        self.b2 = nn.Parameter(torch.zeros(h, bottleneck_dim))
        self.g = nn.Parameter(torch.ones(h, num_clusters, 1))
        self.v = nn.Parameter(_trunc_normal_(torch.empty(h, num_clusters, bottleneck_dim)))

    @property
    def num_heads(self) -> int:
        return self.w1.shape[0]

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, D] -> logits [H, B, C]."""
        h, hid, d = self.w1.shape
        b = x.shape[0]
        # Layer 1 has a shared input: one [B, D] x [D, H*hid] matmul.
        a1 = torch.addmm(self.b1.reshape(1, h * hid), x, self.w1.reshape(h * hid, d).t())
        a1 = F.gelu(a1.view(b, h, hid).transpose(0, 1))  # [H, B, hid]
        z = torch.baddbmm(self.b2.unsqueeze(1), a1, self.w2.transpose(1, 2))  # [H, B, bn]
        z = F.normalize(z, dim=-1, p=2)
        w_last = self.g * self.v / self.v.norm(dim=2, keepdim=True)  # [H, C, bn]
        return torch.bmm(z, w_last.transpose(1, 2))

    def last_layer_parameters(self) -> Iterator[nn.Parameter]:
        yield self.g
        yield self.v

    def no_weight_decay(self, name: str, p: Tensor) -> bool:
        """True for the stacked biases and params that are 1-D per head (same rule as :class:`LoopHeads`)."""
        return name in ("b1", "b2") or p.ndim - 1 <= 1

    def stacked_state(self) -> dict[str, Tensor]:
        """Weights in the same stacked layout as :meth:`LoopHeads.stacked_state`."""
        return {k: getattr(self, k) for k in _STACKED_KEYS}

    @torch.no_grad()
    def load_stacked(self, state: dict[str, Tensor]) -> None:
        """Copy weights from a :meth:`stacked_state`-style dict."""
        for k in _STACKED_KEYS:
            getattr(self, k).copy_(state[k])


def make_heads(
    head_impl: str, num_heads: int, in_dim: int, hidden_dim: int, bottleneck_dim: int, num_clusters: int
) -> LoopHeads | BatchedHeads:
    """Build H cluster heads in the chosen form ("loop" or "batched"); both compute the same function."""
    if head_impl == "loop":
        return LoopHeads(num_heads, in_dim, hidden_dim, bottleneck_dim, num_clusters)
    if head_impl == "batched":
        return BatchedHeads(num_heads, in_dim, hidden_dim, bottleneck_dim, num_clusters)
    raise ValueError(f"head_impl must be one of {HEAD_IMPLS}, got {head_impl!r}")


def lr_at(it: int, *, base: float, final: float, warmup_iters: int, total_iters: int) -> float:
    """Per-iteration lr: linear warm-up 0 -> base over ``warmup_iters``, then cosine base -> final until
    ``total_iters`` (DINO/TEMI ``cosine_scheduler``); with warmup_iters=0 it starts at ``base``."""
    if it < warmup_iters:
        return base * it / warmup_iters
    span = max(1, total_iters - warmup_iters)
    t = min(1.0, (it - warmup_iters) / span)
    return final + 0.5 * (base - final) * (1.0 + math.cos(math.pi * t))


def momentum_at(it: int, *, start: float, end: float, total_iters: int) -> float:
    """Teacher EMA momentum at iteration ``it``: cosine from ``start`` to ``end`` (constant when equal)."""
    if start == end or total_iters <= 1:
        return start
    t = min(1.0, it / (total_iters - 1))
    return end - (end - start) * (math.cos(math.pi * t) + 1.0) / 2.0


def check_temi_inputs(
    embeddings_shape: tuple[int, ...], knn_shape: tuple[int, ...], num_clusters: int, cfg: ClusterConfig
) -> None:
    """Raise ValueError naming the first bad TEMI input (cheap; call before any work). Value ranges are the
    config's own check (:meth:`ClusterConfig.validate`); this adds what depends on the arrays."""
    cfg.validate("cluster")
    if cfg.head_impl not in HEAD_IMPLS:
        raise ValueError(f"cluster.head_impl must be one of {HEAD_IMPLS}, got {cfg.head_impl!r}")
    if len(embeddings_shape) != 2 or embeddings_shape[0] < 2 or embeddings_shape[1] < 1:
        raise ValueError(f"embeddings must be [N, D] with N >= 2, got shape {tuple(embeddings_shape)}")
    n = embeddings_shape[0]
    if len(knn_shape) != 2 or knn_shape[0] != n:
        raise ValueError(f"knn_idx must be [N={n}, k], got shape {tuple(knn_shape)}")
    if not 2 <= num_clusters <= n:
        raise ValueError(f"num_clusters must be in [2, N={n}], got {num_clusters}")
    if cfg.knn_k > knn_shape[1]:
        raise ValueError(f"cluster.knn_k={cfg.knn_k} exceeds the {knn_shape[1]} neighbours in knn_idx")


class _Positions(Dataset):
    """The positions 0..n-1; a batch is one tensor of the sampler's positions (``__getitems__``), not 1,024 scalar
    tensors collated one by one: the TEMI step is a few kernels, and per-item collation made it CPU-bound."""

    def __init__(self, n: int) -> None:
        self.n = int(n)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Tensor:
        return torch.tensor(i, dtype=torch.int64)

    def __getitems__(self, ids: list[int]) -> Tensor:
        return torch.tensor(ids, dtype=torch.int64)


def _as_batch(batch: Tensor) -> Tensor:
    """Collate for `_Positions.__getitems__`: the batch is already one tensor."""
    return batch


def _as_tensor(x, dtype: torch.dtype) -> Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, Tensor):
        raise ValueError(f"expected a numpy array or torch tensor, got {type(x).__name__}")
    return x.detach().to(dtype=dtype).contiguous()


def as_stored_embeddings(x) -> Tensor:
    """The embeddings as a tensor without a float32 copy: float16 and float32 are kept as they are (a memory-mapped
    array stays a view of its map, its pages read on demand), other floats become float32; each batch is converted
    to float32 where it is used (`TEMIModule.embed`), so float16 storage gives exactly the float32 run on the
    float16-rounded values."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, Tensor):
        raise ValueError(f"expected a numpy array or torch tensor, got {type(x).__name__}")
    keep = x.dtype in (torch.float16, torch.float32)
    return x.detach().contiguous() if keep else x.detach().to(dtype=torch.float32).contiguous()


def temi_batch_size(cfg: ClusterConfig, n: int) -> int:
    """The global batch TEMI trains with on ``n`` embeddings: cluster.batch_size, at most n (one full batch), and at
    most n // cluster.min_steps_per_epoch, so that a small set still takes that many steps per epoch."""
    bs = min(cfg.batch_size, n)
    if cfg.min_steps_per_epoch is not None:
        bs = min(bs, max(1, n // cfg.min_steps_per_epoch))
    return bs


class TEMIModule(L.LightningModule):
    """TEMI deep clustering over frozen embeddings: H student heads trained with the TEMI loss, H teacher heads
    as their EMA, a per-head teacher marginal, and the lowest-epoch-loss head recorded as ``best_head``."""

    def __init__(
        self,
        embeddings: Tensor | np.ndarray,
        knn_idx: Tensor | np.ndarray,
        num_clusters: int,
        cfg: ClusterConfig,
        *,
        seed: int = 0,
    ):
        super().__init__()
        emb_shape = tuple(embeddings.shape)
        check_temi_inputs(emb_shape, tuple(knn_idx.shape), num_clusters, cfg)
        self.cfg = cfg
        self.seed = int(seed)
        self.batch_size = temi_batch_size(cfg, emb_shape[0])
        # kept in checkpoints (as plain data) but not sent to the loggers: the run's config is logged once, whole
        self.save_hyperparameters(
            {"cluster": to_dict(cfg), "num_clusters": num_clusters, "seed": self.seed},
            ignore=["embeddings", "knn_idx"],
            logger=False,
        )
        n, d = emb_shape
        knn = _as_tensor(knn_idx, torch.int64)[:, : cfg.knn_k].contiguous()
        if knn.numel() and (int(knn.min()) < 0 or int(knn.max()) >= n):
            raise ValueError(f"knn_idx entries must be in [0, N={n}), got range [{int(knn.min())}, {int(knn.max())}]")
        # the data as plain attributes, moved to the training device in `setup`: as buffers DDP would broadcast them
        # from rank 0 on every step (N x D floats), and checkpoints would store them; float16 (the cache's, memory-
        # mapped) stays float16: batches become float32 in `embed`
        self.embeddings: Tensor = as_stored_embeddings(embeddings)
        self.knn_idx: Tensor = knn

        num_heads = cfg.num_heads
        self.student = make_heads(cfg.head_impl, num_heads, d, cfg.hidden_dim, cfg.bottleneck_dim, num_clusters)
        self.teacher = copy.deepcopy(self.student)
        self.teacher.requires_grad_(False)

        self.register_buffer("marginal", torch.full((num_heads, num_clusters), 1.0 / num_clusters))
        self.register_buffer("best_head", torch.tensor(0, dtype=torch.int64))
        self.register_buffer("head_losses", torch.full((num_heads,), float("nan")))  # last finished epoch
        # this rank's epoch sums: per-head losses, the total loss, the step count. A plain tensor, not a buffer:
        # DDP overwrites buffers with rank 0's before every step, which made them rank 0's sums alone.
        self._epoch_sums = torch.zeros(num_heads + 2, dtype=torch.float64)
        self.loss_curve: list[float] = []
        self._ema_it = 0
        self._total_iters = 1

    # ------------------------------------------------------------------ forward / data
    def embed(self, x: Tensor) -> Tensor:
        """Input transform applied before the heads (L2-normalise when ``embed_norm``, else identity)."""
        x = x.to(dtype=torch.float32)
        return F.normalize(x, dim=-1) if self.cfg.embed_norm else x

    def forward(self, x: Tensor) -> Tensor:
        """Teacher logits of all heads for raw embeddings x [B, D] -> [H, B, C]."""
        return self.teacher(self.embed(x))

    def setup(self, stage: str) -> None:
        if self._trainer is not None:
            device = self.trainer.strategy.root_device
            self.embeddings, self.knn_idx = self.embeddings.to(device), self.knn_idx.to(device)

    def train_dataloader(self) -> DataLoader:
        return self.index_loader(self._world_size())

    def index_loader(self, world: int = 1) -> DataLoader:
        """Index batches over the N stored embeddings in an order set by (seed, epoch), batch_size / ``world`` per
        device (elfs/infra/sampling.py: the same global batches on any number of DDP ranks); drop_last when N >= the
        batch size."""
        n = self.embeddings.shape[0]
        bs = self.device_batch_size(world)
        drop = n >= bs * world  # whole global batches only, on every rank alike
        sampler = EpochSeededSampler(n, self.seed, batch_size=bs * world, drop_last=drop)
        return DataLoader(_Positions(n), batch_size=bs, sampler=sampler, drop_last=drop, collate_fn=_as_batch)

    def sample_neighbours(self, idx: Tensor, epoch: int = 0) -> Tensor:
        """For each anchor index, one neighbour drawn uniformly from its first ``knn_k`` kNN columns, as a function
        of (seed, epoch, anchor index): the same draw on any number of DDP ranks, regardless of global RNG use."""
        idx = idx.to(self.knn_idx.device)
        col = counter_randint(self.seed, epoch, idx, 0, self.knn_idx.shape[1])
        return self.knn_idx[idx, col]

    # ------------------------------------------------------------------ training
    def training_step(self, batch, batch_idx: int) -> Tensor:
        """Views (e_i, e_j) with j a random kNN neighbour of i; TEMI loss; marginal and epoch sums updated."""
        idx = batch[0] if isinstance(batch, (list, tuple)) else batch
        nbr = self.sample_neighbours(idx, self.current_epoch)
        b = idx.shape[0]
        # [2B, D]: view 0 then view 1, gathered in one go (the stored float16 rows become float32 in `embed`: CPU
        # autocast cannot concatenate float16)
        x = self.embed(self.embeddings[torch.cat([idx.to(nbr.device), nbr])])
        s = self.student(x)
        with torch.no_grad():
            t = self.teacher(x)
        c = self.cfg
        out = temi_loss(
            s[:, :b],
            s[:, b:],
            t[:, :b],
            t[:, b:],
            self.marginal,
            beta=c.beta,
            student_temp=c.student_temp,
            teacher_temp=c.teacher_temp,
            probs_momentum=c.probs_momentum,
        )
        self.marginal.copy_(out.marginal)
        sums = self._epoch_sums
        sums[:-2] += out.head_losses.detach().to(sums)
        sums[-2] += out.loss.detach().to(sums)
        sums[-1] += 1
        # no host sync per step: the step value is not in the progress bar (that would turn it into a number every
        # step); the epoch mean is, computed once at the epoch's end
        loss = out.loss.detach()
        self.log("train/loss_step", loss, on_step=True, on_epoch=False, batch_size=b)
        self.log("train/loss_epoch", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=b)
        return out.loss

    def on_train_start(self) -> None:
        self._ema_it = self.global_step  # resumes the momentum schedule when fitting from a checkpoint
        self._total_iters = self._total_steps()
        self._frozen_iters = self.schedule_steps(self.cfg.freeze_last_layer_epochs)
        if self._capped() and self.trainer.is_global_zero:
            c, per_epoch = self.cfg, self._steps_per_epoch()
            log.info("cluster: %d steps (%.2f epochs) instead of %d epochs over %d embeddings (cluster.max_steps)",
                     c.max_steps, c.max_steps / per_epoch, c.epochs, len(self.embeddings))  # fmt: skip

    def on_train_epoch_start(self) -> None:
        self._epoch_sums = torch.zeros_like(self._epoch_sums, device=self.device)

    def on_before_optimizer_step(self, optimizer) -> None:
        # Freeze the last (weight-normalised) layer during the first epochs: no grad -> AdamW skips it entirely.
        if self.global_step < self._frozen_iters:
            for p in self.student.last_layer_parameters():
                p.grad = None

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        """The optimizer step, then the teacher EMA (so callbacks already see the updated teacher)."""
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        end = self.cfg.teacher_momentum_end
        start = self.cfg.teacher_momentum
        m = momentum_at(self._ema_it, start=start, end=start if end is None else end, total_iters=self._total_iters)
        self.update_teacher(m)
        self._ema_it += 1

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """theta_t <- m theta_t + (1 - m) theta_s, parameter by parameter."""
        t_params = list(self.teacher.parameters())
        s_params = [p.detach() for p in self.student.parameters()]
        torch._foreach_mul_(t_params, momentum)
        torch._foreach_add_(t_params, s_params, alpha=1.0 - momentum)

    def on_train_epoch_end(self) -> None:
        sums = self._epoch_sums.clone()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(sums, op=dist.ReduceOp.SUM)
        count = float(sums[-1])
        if count == 0:
            return
        head_mean = (sums[:-2] / count).to(self.head_losses.dtype)
        self.head_losses.copy_(head_mean)
        self.best_head.fill_(int(torch.argmin(head_mean)))
        self.loss_curve.append(float(sums[-2] / count))
        self.log("train/best_head_loss", head_mean[self.best_head], on_step=False, on_epoch=True, sync_dist=False)
        self.log("train/best_head", self.best_head.float(), on_step=False, on_epoch=True, sync_dist=False)

    # ------------------------------------------------------------------ optimisation
    def _world_size(self) -> int:
        return self.trainer.world_size if self._trainer is not None else 1

    def device_batch_size(self, world: int | None = None) -> int:
        """cluster.batch_size is the GLOBAL batch (as in the paper): each of the W devices takes batch_size / W."""
        world = self._world_size() if world is None else int(world)
        if world > 1 and self.cfg.batch_size % world:
            raise ValueError(
                f"cluster.batch_size={self.cfg.batch_size} is the global batch and must divide among {world} devices"
            )
        return max(1, self.batch_size // world)

    def _total_steps(self) -> int:
        if self._trainer is None:
            return 1
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise ValueError("TEMI's lr/momentum schedules need a finite run: set max_epochs or max_steps")
        return max(1, int(total))

    def _steps_per_epoch(self) -> int:
        tr = self.trainer
        nb = tr.num_training_batches
        if not isinstance(nb, int) or nb <= 0:  # inf or unset: fall back to our own loader length
            nb = len(self.train_dataloader())
        return max(1, math.ceil(nb / max(1, tr.accumulate_grad_batches)))

    def _capped(self) -> bool:
        """Whether cluster.max_steps ends the run before its epochs do (a large set)."""
        return self.cfg.max_steps is not None and self.cfg.max_steps < self.cfg.epochs * self._steps_per_epoch()

    def schedule_steps(self, epochs: int) -> int:
        """Optimizer steps that ``epochs`` epochs of the schedule (warm-up, frozen last layer) take: epochs x steps
        per epoch, or the same share of the run when cluster.max_steps cuts it short (a large set)."""
        if self._trainer is None:
            return 0
        if self._capped():
            return round(epochs / self.cfg.epochs * self._total_steps())
        return epochs * self._steps_per_epoch()

    def param_groups(self) -> list[dict]:
        """AdamW groups: biases and (per-head) 1-D params get no weight decay, everything else gets it."""
        decay, no_decay = [], []
        for name, p in self.student.named_parameters():
            if not p.requires_grad:
                continue
            if self.student.no_weight_decay(name, p):
                no_decay.append(p)
            else:
                decay.append(p)
        return [{"params": decay, "weight_decay": self.cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    def configure_optimizers(self):
        """AdamW at lr * global_batch/256, per-iteration linear warm-up from 0, then cosine to min_lr * scale."""
        c = self.cfg
        scale = self.device_batch_size() * self._world_size() / 256.0  # = batch_size / 256 on any number of devices
        base, final = c.lr * scale, c.min_lr * scale
        total = self._total_steps()
        warmup = self.schedule_steps(c.warmup_epochs)
        opt = torch.optim.AdamW(self.param_groups(), lr=base)

        def factor(it: int) -> float:
            return lr_at(it, base=base, final=final, warmup_iters=warmup, total_iters=total) / base

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}
