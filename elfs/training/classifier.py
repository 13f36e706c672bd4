"""The classifier LightningModule shared by the proxy-dynamics stage and the coreset-evaluation stage.

Recipe of method.md §5/§7: SGD (momentum, optional Nesterov, weight decay) with a per-iteration cosine schedule
from `lr` to `min_lr`, reflect-padded random crop + horizontal flip, cross-entropy. Batches are
(inputs, targets, dataset indices) so an optional `TrainingDynamicsRecorder` can file each example's
train-mode logits under its dataset index.

Inputs are in-memory arrays (uint8 images or float embeddings) or a *streamed* image source: any object with
``__len__`` and ``load_rgb(i, size) -> size x size x 3 uint8`` (e.g. :class:`elfs.data.folder.FolderImages`).
A streamed source is decoded at ``cfg.image_size`` one image per item in the DataLoader workers, so memory holds
O(batch) pixels; the batches it yields are the same uint8 tensors the in-memory path yields. With
``cfg.crop="random_resized"`` (the ImageNet recipe) a training item is instead the whole picture decoded at its own
size, RandomResizedCrop'ed to ``image_size`` and flipped in the worker (drawn from (seed, epoch, index): the
sampler tags each position with its epoch), and a test item is Resize(round(image_size / 0.875)) +
CenterCrop(image_size).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from elfs.config import ClassifierTrainingConfig, DynamicsConfig, from_dict, to_dict
from elfs.data.types import is_streamed
from elfs.infra.distributed import on_cuda
from elfs.infra.runtime import DEFAULT_RUNTIME, TRAINER_DEFAULTS, Runtime, build_trainer, world_size_of
from elfs.infra.sampling import EpochSeededSampler
from elfs.models import MODEL_INPUTS, build_model
from elfs.training.augment import BatchImageTransform, center_crop, eval_resize_size, random_resized_crop_flip
from elfs.training.recorder import TrainingDynamicsRecorder


def cosine_lr(step: int, *, total_steps: int, lr: float, min_lr: float) -> float:
    """Cosine-annealed learning rate at optimizer step `step`; constant `min_lr` from `total_steps` on (no rise)."""
    t = min(max(int(step), 0), int(total_steps))
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * t / total_steps))


class _CosineFactor:
    """LambdaLR multiplier lr(step) / lr for `cosine_lr` (a callable object, so LambdaLR can checkpoint it)."""

    def __init__(self, total_steps: int, lr: float, min_lr: float) -> None:
        self.total_steps, self.lr, self.min_lr = int(total_steps), float(lr), float(min_lr)

    def __call__(self, step: int) -> float:
        return cosine_lr(step, total_steps=self.total_steps, lr=self.lr, min_lr=self.min_lr) / self.lr


class ClassifierModule(L.LightningModule):
    """Classifier over uint8 images (normalised and, in training, augmented on the device) or float embeddings.

    With `record_num_examples` set, a `TrainingDynamicsRecorder` (attribute `recorder`, saved in checkpoints)
    records every training step's logits by dataset index; under DDP the batch is all-gathered first so that
    every rank's recorder sees every example. `total_steps=None` takes the trainer's estimated stepping batches.
    """

    def __init__(
        self,
        cfg: ClassifierTrainingConfig | Mapping[str, Any],
        *,
        num_classes: int,
        in_channels: int = 3,
        in_dim: int | None = None,
        total_steps: int | None = None,
        images: ImageFacts | Mapping[str, Any] | None = None,
        seed: int = 0,
        record_num_examples: int | None = None,
    ) -> None:
        super().__init__()
        cfg = from_dict(cfg)  # a checkpoint stores it as plain data (validated by its schema before it was stored)
        facts = images if isinstance(images, ImageFacts) else ImageFacts(**(images or {}))
        crop_padding, hflip, mean, std = facts.crop_padding, facts.hflip, facts.mean, facts.std
        if record_num_examples is not None and not isinstance(cfg, DynamicsConfig):
            raise ValueError(f"recording training dynamics needs a DynamicsConfig, got {type(cfg).__name__}")
        if total_steps is not None and int(total_steps) < 1:
            raise ValueError(f"total_steps must be >= 1 (or None), got {total_steps}")
        if mean is not None:
            mean = [float(v) for v in mean]
        if std is not None:
            std = [float(v) for v in std]
        self.cfg = cfg
        self.seed = int(seed)
        self.total_steps = total_steps
        # kept in checkpoints as plain data, not sent to the loggers (the run's config is logged once, whole)
        self.save_hyperparameters(
            {
                "cfg": to_dict(cfg),
                "num_classes": num_classes,
                "in_channels": in_channels,
                "in_dim": in_dim,
                "total_steps": total_steps,
                "images": {"crop_padding": crop_padding, "hflip": hflip, "mean": mean, "std": std},
                "seed": self.seed,
                "record_num_examples": record_num_examples,
            },
            logger=False,
        )
        model = cfg.model
        self.model = build_model(
            model, num_classes=num_classes, in_channels=in_channels, in_dim=in_dim, width=cfg.width
        )
        self.input_kind = MODEL_INPUTS[model]
        self.transform: BatchImageTransform | None = None
        if self.input_kind == "images":
            self.transform = BatchImageTransform(
                mean if mean is not None else [0.0] * in_channels,
                std if std is not None else [1.0] * in_channels,
                padding=crop_padding,
                hflip=hflip,
            )
            if len(self.transform.mean) != in_channels:
                raise ValueError(f"mean/std have {len(self.transform.mean)} values but in_channels={in_channels}")
        self.recorder: TrainingDynamicsRecorder | None = None
        if record_num_examples is not None:
            self.recorder = TrainingDynamicsRecorder(record_num_examples, num_classes, el2n_epochs=cfg.el2n_epochs)
            # DDP syncs a module's buffers from rank 0 (at the start, and before every forward unless BatchNorm is
            # synced): the recorder's per-example state (N x 10 slots, 3 MB on CIFAR) stays out. Every rank's
            # recorder sees every example (the gather in `_record`), so the ranks agree without it.
            self._ddp_params_and_buffers_to_ignore = [f"recorder.{name}" for name, _ in self.recorder.named_buffers()]
        # device_data: the uint8 training images, moved to the training device in `setup`. A plain attribute, not a
        # buffer: DDP would broadcast a buffer from rank 0 on every step, and a checkpoint would store it.
        self.resident: torch.Tensor | None = None
        # under DDP: (positions dealt this epoch, global batch), from the sampler at each epoch's start
        self._batch_plan: tuple[int, int] | None = None

    def keep_on_device(self, images: torch.Tensor) -> None:
        """The fast data path: hold the uint8 training images [n, C, H, W] on the training device (from `setup`);
        batches then carry positions into them instead of pixels."""
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"device_data keeps uint8 [N, C, H, W] images, got {images.dtype} {tuple(images.shape)}")
        self.resident = images

    # ---------------------------------------------------------------- data path
    def prepare(self, x: torch.Tensor, train: bool, index: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 images -> normalised float (+ crop/flip when `train`, drawn from (seed, epoch, dataset ``index``):
        the same on any number of DDP ranks); float inputs pass through unchanged."""
        if x.dtype == torch.uint8:
            if self.transform is None:
                raise ValueError(f"model {self.cfg.model!r} takes float embeddings, got a uint8 batch")
            epoch = self.current_epoch if self._trainer is not None else 0
            x = self.transform(x, train=train, index=index, seed=self.seed, epoch=epoch)
            return x.contiguous(memory_format=torch.channels_last) if self.cfg.channels_last else x
        return x if x.dtype == torch.float32 else x.float()  # float16 (the cache's embeddings) / float64 batches

    def configure_model(self) -> None:
        """channels-last weights and torch.compile, when asked for (idempotent: Lightning may call it twice).

        Only the training steps run compiled, with the batch dimension dynamic from the first step: one graph per
        architecture and image shape serves the full batches and an epoch's smaller last one, and evaluation runs
        eagerly instead of compiling the eval-mode graph. A later training of the same architecture in the same
        process (a long-lived worker) finds that graph in dynamo's cache: the parameters are its inputs."""
        if self.cfg.channels_last and self.input_kind == "images":
            self.model.to(memory_format=torch.channels_last)
        if self.cfg.compile and self.__dict__.get("_train_net") is None:
            # not a submodule: the state dict and the optimiser see self.model's parameters once
            self.__dict__["_train_net"] = torch.compile(self.model)

    def _training_net(self, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """The network the training step calls: the compiled one (batch dimension marked dynamic), or the model."""
        net = self.__dict__.get("_train_net")
        if net is None:
            return self.model
        torch._dynamo.maybe_mark_dynamic(x, 0)
        return net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch, without augmentation."""
        return self.model(self.prepare(x, train=False))

    def setup(self, stage: str) -> None:
        if self.resident is not None and self._trainer is not None:
            self.resident = self.resident.to(self.trainer.strategy.root_device)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """One SGD step. No host sync and no collective beyond DDP's own (and the recorder's gather): the ranks'
        batch sizes come from the sampler's plan, the logged values stay tensors (converted to numbers by
        Lightning only when it writes the logs), the epoch means are reduced across ranks once, at the epoch's end,
        and the learning rate (a host-side float) goes straight to the loggers every ``log_every_n_steps``."""
        x, y, idx = batch
        if self.resident is not None and x.dtype == torch.int64:  # positions into the images kept on the device
            x = self.resident[x]
        x = self.prepare(x, train=True, index=idx)
        logits = self._training_net(x)(x)
        loss = F.cross_entropy(logits, y)
        bs = int(y.shape[0])  # a shape: known on the host
        sizes = self._rank_batch_sizes(bs, batch_idx)
        # DDP averages the ranks' gradients; a rank's share of the GLOBAL batch mean is its sum x W / global size
        # (the same as its own mean when the ranks hold equal parts, not in an epoch's smaller last batch)
        objective = loss if sizes is None else loss * (bs * len(sizes) / sum(sizes))
        if self.recorder is not None:
            self._record(idx, logits.detach(), y, sizes)
        acc = (logits.detach().argmax(dim=1) == y).float().mean()
        ddp = sizes is not None  # epoch means over all ranks, reduced once when the epoch ends
        # step values (this rank's) and epoch means as separate keys: a value logged on_step with sync_dist would
        # all-reduce every step, and one shown in the progress bar would be turned into a number every step
        for name, value in (("loss", loss.detach()), ("acc", acc)):
            self.log(f"train/{name}_step", value, on_step=True, on_epoch=False, batch_size=bs)
            self.log(
                f"train/{name}_epoch", value, on_step=False, on_epoch=True, prog_bar=True, batch_size=bs, sync_dist=ddp
            )
        self._log_lr()
        return objective

    def _log_lr(self) -> None:
        """The learning rate of this step (a Python float on the host: the scheduler's), sent to the loggers
        directly every ``log_every_n_steps`` by rank 0: `self.log` would copy it to the device every step."""
        trainer = self._trainer
        if trainer is None or not self.loggers or trainer.global_rank != 0:
            return
        every = max(1, int(getattr(trainer, "log_every_n_steps", 50) or 50))
        step = int(self.global_step)
        if (step + 1) % every == 0:
            lr = float(self.optimizers().param_groups[0]["lr"])  # a Python float, not a tensor: no sync
            for logger in self.loggers:
                logger.log_metrics({"train/lr": lr}, step=step)

    def on_train_epoch_start(self) -> None:
        self._batch_plan = self._epoch_batch_plan()

    def _epoch_batch_plan(self) -> tuple[int, int] | None:
        """(positions the ranks deal out this epoch, global batch) from the training loader's EpochSeededSampler,
        under DDP; None on one process or for a loader without one."""
        trainer = self._trainer
        if trainer is None or trainer.world_size == 1:
            return None
        loader = getattr(trainer, "train_dataloader", None)
        sampler = getattr(loader, "sampler", None)
        if isinstance(sampler, _EpochTaggedSampler):
            sampler = sampler.sampler
        if not isinstance(sampler, EpochSeededSampler):
            return None
        world = int(trainer.world_size)
        gbatch = int(sampler.batch_size or sampler.n)
        if getattr(loader, "batch_size", None) is None or int(loader.batch_size) * world != gbatch:
            return None
        return len(sampler._positions(world)), gbatch

    def _rank_batch_sizes(self, bs: int, batch_idx: int = 0) -> list[int] | None:
        """Every rank's batch size this step under DDP (they differ in an epoch's last batch), else None.

        Computed on the host from the sampler's plan: rank r takes positions r, r+W, ... of the epoch's order in
        batches of B/W, so global batch i is positions [i B, (i+1) B) and rank r holds ceil((rest - r) / W) of its
        ``rest`` positions. No collective and no sync per step; only a loader without an EpochSeededSampler falls
        back to gathering the sizes (one all_gather and a host sync per step)."""
        if self._trainer is None or self.trainer.world_size == 1:
            return None
        world = int(self.trainer.world_size)
        plan = getattr(self, "_batch_plan", None)
        if plan is None:
            plan = self._batch_plan = self._epoch_batch_plan()
        if plan is None:  # not our sampler: ask the ranks
            return [int(v) for v in self.all_gather(torch.tensor(bs, device=self.device)).flatten().tolist()]
        total, gbatch = plan
        rest = min(gbatch, total - int(batch_idx) * gbatch)
        sizes = [max(0, -(-(rest - r) // world)) for r in range(world)]
        if sizes[self.trainer.global_rank] != bs:
            raise RuntimeError(
                f"rank {self.trainer.global_rank} holds {bs} examples in batch {batch_idx}, but the sampler's plan "
                f"({total} positions, global batch {gbatch}, {world} ranks) says {sizes}"
            )
        return sizes

    def _record(self, idx: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, sizes: list[int] | None) -> None:
        if sizes is not None:
            # all_gather needs equal shapes: a smaller part is padded with repeats of its first row, which the
            # recorder ignores (an example counts once per epoch); no host sync, no data-dependent shapes
            pad = max(sizes) - idx.shape[0]
            if pad:
                idx, logits, y = (torch.cat([t, t[:1].expand(pad, *t.shape[1:])]) for t in (idx, logits, y))
            idx, logits, y = (t.flatten(0, 1) for t in self.all_gather((idx, logits, y)))
        self.recorder.update(idx, logits, y, epoch=self.current_epoch)

    # ---------------------------------------------------------------- optimisation
    def configure_optimizers(self) -> dict[str, Any]:
        c = self.cfg
        total = self.total_steps
        if total is None:
            total = self.trainer.estimated_stepping_batches
            if not math.isfinite(total) or total < 1:
                raise ValueError(f"cannot derive total_steps for the cosine schedule from the trainer ({total})")
        opt = torch.optim.SGD(
            self.model.parameters(), lr=c.lr, momentum=c.momentum, nesterov=c.nesterov, weight_decay=c.weight_decay
        )
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _CosineFactor(int(total), c.lr, c.min_lr))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}


# -------------------------------------------------------------------- data helpers
def decode_chw(source: Any, i: int, size: int) -> torch.Tensor:
    """Image ``i`` of a streamed source decoded at ``size`` as a C x size x size uint8 tensor (C = 3, or 1 for a
    source that returns H x W)."""
    img = np.asarray(source.load_rgb(int(i), int(size)))
    if img.ndim == 2:
        img = img[..., None]
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[:2] != (size, size):
        raise ValueError(
            f"load_rgb({i}, {size}) must return a {size} x {size} x C uint8 array, got {img.dtype} {img.shape}"
        )
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).contiguous()


def decode_full_chw(source: Any, i: int) -> torch.Tensor:
    """Image ``i`` of a streamed source decoded whole, at its own size, as a C x H x W uint8 tensor."""
    img = np.asarray(source.load_rgb(int(i), None))
    if img.ndim == 2:
        img = img[..., None]
    if img.dtype != np.uint8 or img.ndim != 3:
        raise ValueError(f"load_rgb({i}, None) must return an H x W x C uint8 array, got {img.dtype} {img.shape}")
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).contiguous()


def streamed_image_size(cfg: ClassifierTrainingConfig, source: Any) -> int:
    """The size a streamed source is decoded at: ``cfg.image_size``, required (there is no natural size)."""
    size = getattr(cfg, "image_size", None)
    if size is None:
        raise ValueError(
            f"a streamed image source ({type(source).__name__}) needs the decode size: set image_size in the "
            f"training config (e.g. 224 for {cfg.model!r} on ImageNet)"
        )
    return int(size)


class _StreamedImageDataset(Dataset):
    """(uint8 C x H x W image, target, dataset index) decoded on access from a streamed source: it holds the
    source (a list of files), the targets and the indices, never pixels of the whole set.

    crop="pad": decoded at ``size`` (shorter side resized, centre crop), train and test alike (the padded crop and
    flip run on the device). crop="random_resized": with ``train``, the key is (position, epoch) (see
    `_EpochTaggedSampler`) and the whole picture gets RandomResizedCrop(size) + flip (``hflip``) drawn from (seed,
    epoch, dataset index); without, Resize(round(size / 0.875)) + CenterCrop(size)."""

    def __init__(
        self,
        source: Any,
        size: int,
        y: torch.Tensor,
        idx: torch.Tensor,
        *,
        crop: str = "pad",
        train: bool = False,
        seed: int = 0,
        hflip: bool = False,
    ) -> None:
        if crop not in ("pad", "random_resized"):
            raise ValueError(f"crop must be 'pad' or 'random_resized', got {crop!r}")
        self.source, self.size, self.y, self.idx = source, int(size), y, idx
        self.crop, self.train, self.seed, self.hflip = crop, bool(train), int(seed), bool(hflip)

    def __len__(self) -> int:
        return int(self.idx.shape[0])

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        i, epoch = key if isinstance(key, tuple) else (key, 0)
        i = int(i)
        j = int(self.idx[i])
        if self.crop == "pad":
            img = decode_chw(self.source, j, self.size)
        elif self.train:
            img = random_resized_crop_flip(
                decode_full_chw(self.source, j), self.size, self.hflip, index=j, seed=self.seed, epoch=int(epoch)
            )
        else:
            img = center_crop(decode_chw(self.source, j, eval_resize_size(self.size)), self.size)
        return img, self.y[i], self.idx[i]


class _EpochTaggedSampler(torch.utils.data.Sampler):
    """Yields (position, epoch) for each position of the wrapped `EpochSeededSampler`: the worker that decodes an
    item learns the epoch its random crop is drawn for (persistent workers hold their own copy of the dataset,
    which an attribute set in the main process would not reach). ``set_epoch`` and ``len`` pass through."""

    def __init__(self, sampler: EpochSeededSampler) -> None:
        self.sampler = sampler

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        epoch = int(self.sampler.epoch)
        return ((int(i), epoch) for i in self.sampler)


class _IndexedTensorDataset(Dataset):
    """(input, target, dataset index) triples; `__getitems__` gathers a whole batch with one indexing op. With
    ``rows`` item i is row ``rows[i]`` of ``x`` (the whole set, e.g. memory-mapped embeddings, is then read per
    batch instead of gathered into a copy); without, row i."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, rows: torch.Tensor | None = None) -> None:
        self.x, self.y, self.idx, self.rows = x, y, idx, rows

    def __len__(self) -> int:
        return int(self.idx.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.x[i if self.rows is None else self.rows[i]], self.y[i], self.idx[i]

    def __getitems__(self, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        t = torch.as_tensor(ids, dtype=torch.int64)
        return self.x[t if self.rows is None else self.rows[t]], self.y[t], self.idx[t]


def _resume_checkpoint(checkpoint_dir: str | None) -> str | None:
    """The last epoch checkpoint in `checkpoint_dir` if it loads; a damaged one is deleted (training restarts)."""
    import logging
    from pathlib import Path

    if not checkpoint_dir:
        return None
    last = Path(checkpoint_dir) / "last.ckpt"
    if not last.is_file():
        return None
    try:
        torch.load(last, map_location="cpu", weights_only=False)
    except Exception as e:  # a kill during the write leaves a truncated file
        logging.getLogger(__name__).warning("ignoring damaged checkpoint %s (%s); training from scratch", last, e)
        last.unlink()
        return None
    return str(last)


def _batched_collate(batch: Any) -> Any:
    """Collate for `_IndexedTensorDataset.__getitems__`, which already returns a stacked batch."""
    if isinstance(batch, tuple):
        return batch
    return torch.utils.data.default_collate(batch)


def to_model_inputs(inputs: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, str]:
    """N x H x W x C (or N x H x W) uint8 images -> N x C x H x W uint8 tensor; N x D floats -> a float16 or float32
    tensor without a copy (a memory-mapped array stays a view of its map; batches become float32 in
    `ClassifierModule.prepare`), other floats -> float32."""
    x = inputs if isinstance(inputs, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(inputs))
    if x.dtype == torch.uint8 and x.ndim in (3, 4):
        x = x.unsqueeze(-1) if x.ndim == 3 else x
        return x.permute(0, 3, 1, 2).contiguous(), "images"
    if x.is_floating_point() and x.ndim == 2:
        keep = x.dtype in (torch.float16, torch.float32)
        return (x if keep else x.to(torch.float32)).contiguous(), "embeddings"
    raise ValueError(
        f"inputs must be uint8 images N x H x W x C (or N x H x W) or float embeddings N x D; "
        f"got dtype {x.dtype}, shape {tuple(x.shape)}"
    )


@torch.no_grad()
def evaluate_accuracy(
    module: ClassifierModule,
    inputs: np.ndarray | torch.Tensor | Any,
    labels: np.ndarray | torch.Tensor,
    batch_size: int = 512,
    device: torch.device | str | None = None,
    *,
    indices: np.ndarray | None = None,
    num_workers: int = 0,
) -> float:
    """Top-1 accuracy of `module` in eval mode (no augmentation) on `inputs` (same layout as for training, or a
    streamed source, decoded at ``module.cfg.image_size`` in `num_workers` DataLoader workers).

    With `indices`, only ``inputs[indices]`` against ``labels[indices]`` (labels then cover all of `inputs`)."""
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if int(num_workers) < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    streamed = is_streamed(inputs)
    n_all = len(inputs) if streamed else int(inputs.shape[0])
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    if y.ndim != 1 or y.shape[0] != n_all:
        raise ValueError(f"labels must have shape ({n_all},), got {tuple(y.shape)}")
    idx = None if indices is None else torch.as_tensor(np.asarray(indices), dtype=torch.int64)
    if idx is not None:
        if idx.ndim != 1 or (idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n_all)):
            raise ValueError(f"indices must be a 1-D array of positions in [0, {n_all})")
        y = y[idx]
    if y.numel() == 0:
        raise ValueError("cannot evaluate on an empty set")
    if streamed:
        idx = torch.arange(n_all) if idx is None else idx
        size = streamed_image_size(module.cfg, inputs)
        dataset = _StreamedImageDataset(inputs, size, y, idx, crop=getattr(module.cfg, "crop", "pad"))
        cuda = (torch.device(device) if device is not None else next(module.parameters()).device).type == "cuda"
        loader: Any = DataLoader(
            dataset, batch_size=int(batch_size), shuffle=False, num_workers=int(num_workers), pin_memory=cuda
        )
    else:  # index first: only the evaluated rows are converted
        x, _ = to_model_inputs(inputs if idx is None else inputs[idx.numpy()])
        bs = int(batch_size)
        loader = ((x[s : s + bs], y[s : s + bs]) for s in range(0, x.shape[0], bs))
    orig_device = next(module.parameters()).device
    dev = torch.device(device) if device is not None else orig_device
    was_training = module.training
    module.to(dev).eval()
    correct = 0
    try:
        for batch in loader:
            xb, yb = batch[0], batch[1]
            pred = module(xb.to(dev, non_blocking=True)).argmax(dim=1).cpu()
            correct += int((pred == yb).sum())
    finally:
        module.train(was_training)
        module.to(orig_device)
    return correct / int(y.numel())


class _PeriodicEval(L.Callback):
    """Evaluates test accuracy every `every` optimizer steps during training (a secondary, best-of-run number)."""

    def __init__(
        self, inputs: Any, labels: np.ndarray, every: int, batch_size: int = 512, num_workers: int = 0
    ) -> None:
        self.inputs, self.labels, self.every, self.batch_size = inputs, labels, int(every), batch_size
        self.num_workers = int(num_workers)
        self.history: list[tuple[int, float]] = []

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step > 0 and step % self.every == 0 and (not self.history or self.history[-1][0] != step):
            acc = evaluate_accuracy(pl_module, self.inputs, self.labels, self.batch_size, num_workers=self.num_workers)
            self.history.append((step, acc))
            if trainer.logger is not None:
                trainer.logger.log_metrics({"test/acc": acc}, step=step)


class _LossCurve(L.Callback):
    """The training loss every ``every`` optimizer steps and at the last, kept as device tensors during training
    (no host sync in the step) and read once after it: the curve a logger shows, stored with the training's result."""

    def __init__(self, every: int) -> None:
        self.every = max(1, int(every))
        self.points: list[tuple[int, Any]] = []

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        step = int(trainer.global_step)  # counted on the host
        if loss is not None and (step % self.every == 0 or step == trainer.max_steps):
            self.points.append((step, loss.detach()))

    def history(self) -> list[tuple[int, float]]:
        return [(s, float(v)) for s, v in self.points]


@dataclass(frozen=True)
class ImageFacts:
    """What the augmentation and normalisation need to know about the images (label-free): the reflect-padding of
    the random crop (0 = no crop), horizontal flips, and the channel mean / std (None = 0 / 1)."""

    crop_padding: int = 0
    hflip: bool = False
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None


@dataclass(frozen=True)
class TestSet:
    """The held-out images and labels a training is tested on: every `every` optimizer steps (0 = never) and at
    the end. `inputs` have the training inputs' layout (or are a streamed source)."""

    __test__ = False  # not a pytest test class

    inputs: np.ndarray | Any
    labels: np.ndarray
    every: int = 0


@dataclass
class TrainResult:
    """Outcome of `train_classifier`: the trained module, optional per-example scores and test accuracies."""

    module: ClassifierModule
    scores: dict[str, np.ndarray] | None
    final_test_acc: float | None
    best_test_acc: float | None
    steps: int
    test_history: list[tuple[int, float]] = field(default_factory=list)
    loss_history: list[tuple[int, float]] = field(default_factory=list)  # (optimizer step, training loss)


def _check_positive_int(name: str, value: Any) -> int:
    if value is None or int(value) != value or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class _Inputs:
    """The training inputs as checked: the in-memory tensor (None for a streamed source), their kind ('images' or
    'embeddings'), their count, the side a streamed source is decoded to, and the checked indices and labels."""

    x: torch.Tensor | None
    kind: str
    n: int
    size: int | None
    indices: np.ndarray
    labels: np.ndarray  # of the training indices

    @property
    def streamed(self) -> bool:
        return self.x is None


def _checked_inputs(
    inputs: Any, labels: np.ndarray, indices: np.ndarray, cfg: ClassifierTrainingConfig, num_classes: int
) -> _Inputs:
    """The call's data checked against ``cfg`` (already validated by its schema): the inputs fit the model, the
    labels and indices fit the inputs. A mistake raises ValueError naming it, before any work."""
    model = cfg.model
    if is_streamed(inputs):
        x_all, kind, n, size = None, "images", len(inputs), streamed_image_size(cfg, inputs)
    else:
        (x_all, kind), size = to_model_inputs(inputs), None
        n = x_all.shape[0]
    if MODEL_INPUTS[model] != kind:
        shape = "streamed" if x_all is None else f"shape {tuple(inputs.shape)}"
        raise ValueError(f"model {model!r} takes {MODEL_INPUTS[model]}, but inputs are {kind} ({shape})")
    if x_all is not None and kind == "images" and cfg.crop == "random_resized":
        raise ValueError(
            "crop='random_resized' (RandomResizedCrop of the whole decoded picture) needs a streamed image source "
            "(dataset=folder / imagefolder); in-memory image arrays train with crop='pad' (the padded crop on the "
            "device)"
        )
    if x_all is not None and kind == "images" and cfg.image_size is not None:
        if tuple(x_all.shape[2:]) != (cfg.image_size, cfg.image_size):
            raise ValueError(
                f"image_size={cfg.image_size}, but the in-memory images are {x_all.shape[2]}x{x_all.shape[3]}; "
                f"arrays train at their own size (image_size=None), only streamed sources are decoded to a size"
            )
    labels = np.asarray(labels)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be an integer array of shape ({n},), got {labels.dtype} {labels.shape}")
    indices = np.asarray(indices)
    if indices.ndim != 1 or indices.size == 0 or not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"indices must be a non-empty 1-D integer array, got {indices.dtype} {indices.shape}")
    if indices.min() < 0 or indices.max() >= n:
        raise ValueError(f"indices must lie in [0, {n}), got range [{indices.min()}, {indices.max()}]")
    if np.unique(indices).size != indices.size:
        raise ValueError("indices contain duplicates; pass each dataset index once")
    sub_labels = labels[indices]
    if sub_labels.min() < 0 or sub_labels.max() >= num_classes:
        raise ValueError(
            f"labels of the training indices must lie in [0, {num_classes}), "
            f"got [{sub_labels.min()}, {sub_labels.max()}]"
        )
    return _Inputs(x_all, kind, n, size, indices, sub_labels)


def _checked_length(steps: int | None, epochs: int | None, num_classes: int) -> tuple[int | None, int | None, int]:
    """Exactly one of steps / epochs, each a positive integer, and a positive class count."""
    if (steps is None) == (epochs is None):
        raise ValueError(f"give exactly one of steps / epochs, got steps={steps}, epochs={epochs}")
    steps = None if steps is None else _check_positive_int("steps", steps)
    epochs = None if epochs is None else _check_positive_int("epochs", epochs)
    return steps, epochs, _check_positive_int("num_classes", num_classes)


def _check_test(test: TestSet | None, kind: str, runtime: Runtime) -> None:
    """The test set is whole and of the training inputs' kind; worker and test counts are not negative."""
    test_every = test.every if test is not None else 0
    if int(runtime.num_workers) < 0 or int(test_every) < 0:
        raise ValueError(f"runtime.num_workers and test.every must be >= 0, got {runtime.num_workers} and {test_every}")
    if test is not None and (test.inputs is None or test.labels is None):
        raise ValueError("a TestSet needs both inputs and labels")
    if test is not None:
        test_kind = "images" if is_streamed(test.inputs) else to_model_inputs(test.inputs[:1])[1]
        if test_kind != kind:
            raise ValueError(f"test inputs are {test_kind} but training inputs are {kind}")


def _train_set(inputs: Any, data: _Inputs, cfg: ClassifierTrainingConfig, images: ImageFacts, seed: int, module):
    """The training items (image or embedding, label, original index) as the loader reads them."""
    idx_t = torch.from_numpy(data.indices.astype(np.int64))
    y_t = torch.from_numpy(data.labels.astype(np.int64))
    if data.streamed:  # decoded per item in the workers; default_collate stacks the batch
        return _StreamedImageDataset(
            inputs, data.size, y_t, idx_t, crop=cfg.crop, train=True, seed=int(seed), hflip=images.hflip
        )
    if cfg.device_data and data.kind == "images":  # the images go to the device once; batches carry positions
        module.keep_on_device(data.x[idx_t])
        return _IndexedTensorDataset(torch.arange(len(idx_t)), y_t, idx_t)
    if data.kind == "embeddings":  # rows read per batch from the (memory-mapped) embeddings: no gathered copy
        return _IndexedTensorDataset(data.x, y_t, idx_t, rows=idx_t)
    return _IndexedTensorDataset(data.x[idx_t], y_t, idx_t)  # gathered per batch by `__getitems__`


def _train_loader(dataset: Dataset, data: _Inputs, cfg: ClassifierTrainingConfig, runtime: Runtime, seed: int):
    """The training DataLoader: the (seed, epoch) order of EpochSeededSampler, the global batch split per device."""
    world = world_size_of(runtime.trainer_kwargs)
    if cfg.batch_size % world:
        raise ValueError(f"batch_size={cfg.batch_size} is the global batch and must divide among {world} devices")
    sampler: torch.utils.data.Sampler = EpochSeededSampler(len(dataset), int(seed), batch_size=cfg.batch_size)
    if data.streamed and cfg.crop == "random_resized":
        sampler = _EpochTaggedSampler(sampler)
    # with the images on the device a batch is a slice of positions: worker processes would only pass indices
    workers = 0 if cfg.device_data and data.kind == "images" and not data.streamed else int(runtime.num_workers)
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size // world,  # per device: the global batch (and so the lr) means the same on any W
        sampler=sampler,
        drop_last=False,
        num_workers=workers,
        collate_fn=_batched_collate,
        persistent_workers=workers > 0,
        # page-locked batches when they feed a GPU: the copy to the device runs beside the step
        pin_memory=on_cuda({**TRAINER_DEFAULTS, **runtime.trainer_kwargs}["accelerator"]),
    )


def _build_module(
    inputs: Any, data: _Inputs, cfg: ClassifierTrainingConfig, images: ImageFacts, *, num_classes: int, **kw: Any
) -> ClassifierModule:
    """The LightningModule for these inputs (their channels or width); augmentation on the device unless the
    loader's workers do RandomResizedCrop + flip (then the device only normalises)."""
    if data.streamed:  # one image decoded here: the channel count, and a clear error before any worker starts
        in_channels = int(decode_chw(inputs, int(data.indices[0]), data.size).shape[0])
    else:
        in_channels = int(data.x.shape[1]) if data.kind == "images" else 3
    if data.streamed and cfg.crop == "random_resized":  # crop and flip in the workers: the device only normalises
        images = dataclasses.replace(images, crop_padding=0, hflip=False)
    return ClassifierModule(
        cfg,
        num_classes=num_classes,
        in_channels=in_channels,
        in_dim=int(data.x.shape[1]) if data.kind == "embeddings" else None,
        images=images,
        **kw,
    )


def _callbacks(
    test: TestSet | None, checkpoint_dir: str | None, steps: int | None, epochs: int | None, num_workers: int
) -> tuple[list[L.Callback], _PeriodicEval | None, dict[str, Any]]:
    """The periodic test, the epoch checkpoints, and the Trainer settings fixed by the length of the training."""
    callbacks: list[L.Callback] = []
    periodic = None
    if test is not None and test.every > 0:
        periodic = _PeriodicEval(test.inputs, test.labels, test.every, num_workers=num_workers)
        callbacks.append(periodic)
    fixed: dict[str, Any] = dict(
        max_steps=steps if steps is not None else -1,
        max_epochs=epochs if epochs is not None else -1,
        use_distributed_sampler=False,  # EpochSeededSampler deals its (seed, epoch) order to the ranks itself
    )
    if checkpoint_dir:
        from lightning.pytorch.callbacks import ModelCheckpoint

        callbacks.append(ModelCheckpoint(dirpath=checkpoint_dir, save_last=True, save_top_k=1, every_n_epochs=1))
        fixed["enable_checkpointing"] = True
    return callbacks, periodic, fixed


def train_classifier(
    inputs: np.ndarray | Any,
    labels: np.ndarray,
    indices: np.ndarray,
    cfg: ClassifierTrainingConfig,
    *,
    num_classes: int,
    seed: int,
    steps: int | None = None,
    epochs: int | None = None,
    images: ImageFacts = ImageFacts(),
    runtime: Runtime = DEFAULT_RUNTIME,
    test: TestSet | None = None,
    record: bool = False,
) -> TrainResult:
    """Train ``cfg.model`` (network and SGD settings: ``cfg``, read whole) on `inputs[indices]` with
    `labels[indices]` for exactly `steps` iterations or `epochs`.

    `inputs` (and ``test.inputs``) are uint8 images N x H x W x C, float embeddings N x D, or a streamed image
    source (``__len__`` + ``load_rgb(i, size)``), decoded at ``cfg.image_size`` in ``runtime.num_workers``
    DataLoader workers, one image per item, in the same order and to the same batches as the in-memory path would
    give. For arrays, ``cfg.image_size`` must be None or their own size (they are not resized).

    `images` describes the images (the dataset's augmentation and channel statistics). `runtime` says how the
    training runs: its trainer_kwargs go over elfs.infra.runtime.TRAINER_DEFAULTS (deterministic=True here), its logger
    gets the metrics. With `record=True` (``cfg`` is then a DynamicsConfig) the returned scores are the
    recorder's, arrays of length len(inputs) by ORIGINAL dataset index (examples outside `indices` hold NaN / -1).
    With `test`, `final_test_acc` is the final model's accuracy on the test set; `best_test_acc` is the maximum
    over the evaluations every ``test.every`` steps and the final one (None when ``test.every`` is 0) - a
    secondary, test-selected number. With the fork/spawn DDP strategies the trained weights and recorder come back
    from rank 0, but `steps` and `test_history` stay in the workers (0 / []). The returned module sits on the
    training device, so `evaluate_accuracy(result.module, ...)` runs there. With ``runtime.checkpoint_dir``, a
    checkpoint is written there after every epoch and a later call with the same arguments resumes from it; the
    data order depends only on (seed, epoch) and the augmentation and recorder state are in the checkpoint, so a
    resumed run gives the same result as an uninterrupted one. ``cfg`` is trusted as its schema validated it
    (:meth:`ClassifierTrainingConfig.validate`, once, before any work); the call's data is checked here.
    """
    steps, epochs, num_classes = _checked_length(steps, epochs, num_classes)
    data = _checked_inputs(inputs, labels, indices, cfg, num_classes)
    _check_test(test, data.kind, runtime)
    num_workers, checkpoint_dir = int(runtime.num_workers), runtime.checkpoint_dir

    L.seed_everything(int(seed), workers=True, verbose=False)
    module = _build_module(
        inputs, data, cfg, images, num_classes=num_classes, total_steps=steps, seed=seed,
        record_num_examples=data.n if record else None,
    )  # fmt: skip
    loader = _train_loader(_train_set(inputs, data, cfg, images, seed, module), data, cfg, runtime, seed)
    callbacks, periodic, fixed = _callbacks(test, checkpoint_dir, steps, epochs, num_workers)
    # deterministic=True comes from TRAINER_DEFAULTS; log_every_n_steps is a default runtime.trainer_kwargs may change
    defaults = {"log_every_n_steps": max(1, min(50, len(loader)))}
    curve = _LossCurve(runtime.trainer_kwargs.get("log_every_n_steps", defaults["log_every_n_steps"]))
    callbacks.append(curve)
    trainer = build_trainer(runtime, callbacks=callbacks, defaults=defaults, **fixed)
    trainer.fit(module, train_dataloaders=loader, ckpt_path=_resume_checkpoint(checkpoint_dir))

    scores = module.recorder.scores() if module.recorder is not None else None
    module.resident = None  # the fast path's copy of the training images is not needed after training
    module.to(trainer.strategy.root_device)  # Lightning's teardown moved it to the CPU; later evaluations run here
    final_acc = best_acc = None
    if test is not None:
        final_acc = evaluate_accuracy(module, test.inputs, test.labels, num_workers=num_workers)
        if periodic is not None:
            best_acc = max([a for _, a in periodic.history] + [final_acc])
    return TrainResult(
        module=module,
        scores=scores,
        final_test_acc=final_acc,
        best_test_acc=best_acc,
        steps=int(trainer.global_step),
        test_history=list(periodic.history) if periodic is not None else [],
        loss_history=curve.history(),
    )
