"""K small models trained in lockstep in one process (torch.func) versus K separate trainings: wall time and accuracy.

    python experiments/lockstep.py [--k 3] [--steps 300] [--n 4000] [--kept 1200] [--device auto]

Each of the K jobs is a coreset training: its own random subset of a synthetic, learnable image set and its own seed.
The separate form trains them one after another with plain torch; the lockstep form stacks the K models
(``torch.func.stack_module_state``) and trains them together, one ``torch.vmap`` of ``functional_call`` per step on
K batches, BatchNorm running statistics included, and one SGD over the stacked tensors (an elementwise update: K
independent SGDs). Both forms see the same batches, crops and learning rates, so their accuracies should have the
same distribution over seeds (not bit-identical: the batched kernels sum in another order). It prints JSON.
Runs from a checkout without elfs installed; needs torch, numpy and Lightning (which elfs.training imports).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # runs from a checkout without the package installed
    sys.path.insert(0, str(ROOT))

from elfs.models import build_model  # noqa: E402
from elfs.training.augment import random_crop_flip  # noqa: E402

T = TypeVar("T")

NUM_CLASSES = 10
CROP_PADDING = 2
EVAL_BATCH = 1000
WARMUP_STEPS = 2  # untimed steps of each form first: CUDA context, cuDNN and allocator set-up are not the forms' cost


@dataclass
class Setup:
    """What every training shares: the data on the device, the model recipe and the optimiser's schedule."""

    x: torch.Tensor  # uint8 [N, C, H, W]
    y: torch.Tensor  # int64 [N]
    model: str
    width: int
    lr: float
    steps: int
    device: torch.device


@dataclass
class Job:
    """One coreset training: its seed (model initialisation and crops) and its batches, [steps, batch] indices."""

    seed: int
    batches: torch.Tensor
    per_epoch: int


def resolve_device(device: str) -> torch.device:
    """The torch device for ``device``: "auto" is CUDA when available, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _sync(device: torch.device) -> None:
    """Wait for the device's queued work, so that the clock measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def class_patterns(image: tuple[int, int, int]) -> torch.Tensor:
    """One fixed smooth random pattern per class in [0, 1], [10, C, H, W]: coarse 7x7 noise upsampled, so a crop
    shifted by a few pixels still looks like its class."""
    h, w, c = image
    g = torch.Generator().manual_seed(1234)
    coarse = torch.rand(NUM_CLASSES, c, 7, 7, generator=g)
    return F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)


def synthetic_images(n: int, image: tuple[int, int, int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` uint8 images [n, C, H, W] and labels: a class pattern at a random contrast plus heavy pixel noise,
    deterministic in ``seed`` (learnable, but not at once: the noise hides much of the pattern)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    contrast = 0.3 + 0.4 * torch.rand(n, 1, 1, 1, generator=g)
    noise = 0.35 * torch.randn(n, image[2], image[0], image[1], generator=g)
    x = 0.5 + contrast * (class_patterns(image)[y] - 0.5) + noise
    return (x.clamp(0, 1) * 255).round().to(torch.uint8), y


def make_job(job: int, n: int, kept: int, steps: int, batch: int, device: torch.device) -> Job:
    """Job ``job``: its coreset (``kept`` of ``n``, drawn from seed ``job``) and a fresh seeded permutation of it
    per epoch, cut into full batches (the last partial one dropped, so all K jobs step on the same batch size)."""
    coreset = np.sort(np.random.default_rng(job).choice(n, kept, replace=False))
    per_epoch = kept // batch
    epochs = math.ceil(steps / per_epoch)
    order = [coreset[np.random.default_rng([job, e]).permutation(kept)[: per_epoch * batch]] for e in range(epochs)]
    batches = np.concatenate(order).reshape(-1, batch)[:steps]
    return Job(seed=job, batches=torch.as_tensor(batches, device=device), per_epoch=per_epoch)


def new_model(setup: Setup, seed: int) -> nn.Module:
    """Job ``seed``'s freshly initialised model on the device (the same weights in both forms)."""
    torch.manual_seed(seed)
    model = build_model(setup.model, num_classes=NUM_CLASSES, in_channels=int(setup.x.shape[1]), width=setup.width)
    return model.to(setup.device)


def normalise(x: torch.Tensor) -> torch.Tensor:
    """uint8 -> float (x / 255 - 0.5) / 0.25."""
    return (x.to(torch.float32) / 255.0 - 0.5) / 0.25


def train_batch(setup: Setup, job: Job, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Job's inputs (normalised, randomly cropped with padding 2, no flip) and labels at ``step``; the crops are a
    function of (job seed, epoch, example index), the same in both forms."""
    index = job.batches[step]
    x = normalise(setup.x[index])
    x = random_crop_flip(x, CROP_PADDING, False, index=index, seed=job.seed, epoch=step // job.per_epoch)
    return x, setup.y[index]


def optimiser(params: list[torch.Tensor], setup: Setup) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.LambdaLR]:
    """SGD (momentum 0.9, Nesterov, weight decay 5e-4) with a cosine learning rate from ``lr`` to 0 over the steps;
    elementwise, so over stacked tensors it is K independent SGDs."""
    opt = torch.optim.SGD(params, lr=setup.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1.0 + math.cos(math.pi * t / setup.steps)))
    return opt, sched


def train_separate(setup: Setup, job: Job, steps: int) -> nn.Module:
    """One job's plain training loop for ``steps`` steps: the reference the lockstep form is compared with."""
    model = new_model(setup, job.seed).train()
    opt, sched = optimiser(list(model.parameters()), setup)
    for step in range(steps):
        x, y = train_batch(setup, job, step)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model


def stacked_forward(base: nn.Module, params: dict, buffers: dict, x: torch.Tensor, in_x: int | None) -> torch.Tensor:
    """The K models' logits, [K, B, classes]: ``base`` (a meta-device skeleton) called with each model's slice of
    the stacked parameters and buffers; x is per model (``in_x`` = 0) or shared (None). In training mode
    BatchNorm updates the stacked running statistics in place (they are batched tensors under vmap)."""

    def one(p: dict, b: dict, xi: torch.Tensor) -> torch.Tensor:
        return functional_call(base, (p, b), (xi,))

    return torch.vmap(one, in_dims=(0, 0, in_x))(params, buffers, x)


def train_lockstep(setup: Setup, jobs: list[Job], steps: int) -> tuple[nn.Module, dict, dict]:
    """All jobs' models trained together for ``steps`` steps, each on its own batch: the sum of the K mean losses
    gives each model exactly its own gradient. Returns the skeleton and the stacked parameters and buffers."""
    params, buffers = stack_module_state([new_model(setup, job.seed).train() for job in jobs])
    base = new_model(setup, jobs[0].seed).to("meta").train()
    opt, sched = optimiser(list(params.values()), setup)
    for step in range(steps):
        xs, ys = zip(*(train_batch(setup, job, step) for job in jobs), strict=True)
        logits = stacked_forward(base, params, buffers, torch.stack(xs), 0)  # [K, B, classes]
        losses = F.cross_entropy(logits.flatten(0, 1), torch.stack(ys).flatten(), reduction="none")
        loss = losses.view(len(jobs), -1).mean(dim=1).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return base, params, buffers


@torch.no_grad()
def accuracy_separate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Test accuracy in percent of one model in eval mode (running BatchNorm statistics)."""
    model.eval()
    right = 0
    for i in range(0, len(y), EVAL_BATCH):
        right += int((model(normalise(x[i : i + EVAL_BATCH])).argmax(1) == y[i : i + EVAL_BATCH]).sum())
    return 100.0 * right / len(y)


@torch.no_grad()
def accuracy_lockstep(base: nn.Module, params: dict, buffers: dict, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Test accuracy in percent of each stacked model, vmapped in eval mode (running BatchNorm statistics)."""
    base.eval()
    right = torch.zeros(next(iter(params.values())).shape[0], dtype=torch.int64, device=y.device)
    for i in range(0, len(y), EVAL_BATCH):
        logits = stacked_forward(base, params, buffers, normalise(x[i : i + EVAL_BATCH]), None)
        right += (logits.argmax(-1) == y[i : i + EVAL_BATCH]).sum(dim=1)
    return [100.0 * int(r) / len(y) for r in right]


def mean_std(values: list[float]) -> list[float]:
    """[mean, sample std] over seeds (std 0 for one), rounded to 2 decimals."""
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return [round(float(np.mean(values)), 2), round(std, 2)]


def timed(fn: Callable[[], T], device: torch.device) -> tuple[T, float]:
    """``fn()``'s result and its wall time in seconds, the device's queued work included."""
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - t0


def bench_lockstep(
    k: int,
    steps: int,
    n: int,
    kept: int,
    model: str = "small_cnn",
    width: int = 32,
    image: tuple = (28, 28, 1),
    batch: int = 64,
    device: str = "auto",
    lr: float = 0.05,
) -> dict:
    """K coreset trainings (``kept`` of ``n`` synthetic (H, W, C) ``image``s, ``steps`` steps of ``batch``) one by
    one vs in lockstep: wall times (model building in, evaluation out), their ratio and each model's test accuracy."""
    if not 0 < kept <= n or k < 1 or steps < 1:
        raise ValueError(f"need 0 < kept <= n, k >= 1 and steps >= 1; got kept={kept}, n={n}, k={k}, steps={steps}")
    dev = resolve_device(device)
    batch = min(batch, kept)
    x, y = synthetic_images(n, tuple(image), seed=0)
    xt, yt = synthetic_images(max(n // 4, 500), tuple(image), seed=1)
    setup = Setup(x.to(dev), y.to(dev), model, width, lr, steps, dev)
    xt, yt = xt.to(dev), yt.to(dev)
    jobs = [make_job(j, n, kept, steps, batch, dev) for j in range(k)]
    warm = min(WARMUP_STEPS, steps)
    train_separate(setup, jobs[0], warm)
    train_lockstep(setup, jobs, warm)
    separate, t_sep = timed(lambda: [train_separate(setup, job, steps) for job in jobs], dev)
    (base, params, buffers), t_lock = timed(lambda: train_lockstep(setup, jobs, steps), dev)
    sep_acc = [round(accuracy_separate(m, xt, yt), 2) for m in separate]
    lock_acc = [round(a, 2) for a in accuracy_lockstep(base, params, buffers, xt, yt)]
    return {
        "device": str(dev),
        "model": model,
        "k": k,
        "steps": steps,
        "batch": batch,
        "separate_s": round(t_sep, 2),
        "lockstep_s": round(t_lock, 2),
        "speedup": round(t_sep / t_lock, 2),
        "separate_acc": sep_acc,
        "lockstep_acc": lock_acc,
        "separate_mean_std": mean_std(sep_acc),
        "lockstep_mean_std": mean_std(lock_acc),
    }


def main() -> None:
    """Command line: one measurement, printed as JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--k", type=int, default=3, help="models (coreset trainings)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--n", type=int, default=4000, help="synthetic training images")
    p.add_argument("--kept", type=int, default=1200, help="coreset size of each job")
    p.add_argument("--model", default="small_cnn")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--image", type=int, nargs=3, default=(28, 28, 1), metavar=("H", "W", "C"))
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--device", default="auto")
    a = p.parse_args()
    res = bench_lockstep(a.k, a.steps, a.n, a.kept, a.model, a.width, tuple(a.image), a.batch, a.device, a.lr)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
