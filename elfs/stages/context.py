"""What every stage is handed besides its own config and inputs: the cache, the run folder, the loggers, the seed,
the Trainer settings and the progress settings. Stages read these fields, never the root config, so a stage's
inputs are its signature plus this small record."""

from __future__ import annotations

import dataclasses
import gc
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from elfs.cache import Artifact, ArtifactCache
from elfs.config import ElfsConfig, TrainerConfig
from elfs.infra import distributed
from elfs.infra.runtime import Runtime, resolve_precision


@dataclass
class Context:
    """One run's shared state. ``cfg`` is the graph's (elfs/pipeline.py); the stages use the fields below it."""

    cfg: ElfsConfig
    cache: ArtifactCache
    run_dir: Path
    loggers: Any  # elfs.tracking.RunLoggers
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        import torch

        # this process's fp32 products (embedding, kNN, TEMI, trainings here); workers set it from their Runtime
        torch.set_float32_matmul_precision(self.trainer.matmul_precision)

    @property
    def seed(self) -> int:
        return int(self.cfg.seed)

    @cached_property
    def trainer(self) -> TrainerConfig:
        """The run's trainer settings with precision=auto resolved for this machine (what the stages key)."""
        t = self.cfg.trainer
        return dataclasses.replace(t, precision=resolve_precision(t.precision, t.accelerator))

    @property
    def progress(self) -> bool:
        return bool(self.cfg.progress)

    @property
    def progress_every_s(self) -> float:
        return float(self.cfg.progress_every_s)

    def runtime(self, *, progress: bool, stage: str | None = None, **extra: Any) -> Runtime:
        """How a training of ``stage`` runs (elfs/infra/runtime.py); ``extra`` sets the logger or checkpoint folder."""
        t = self.trainer
        kwargs = self.trainer_kwargs(progress=progress, stage=stage)
        return Runtime(kwargs, int(t.num_workers), matmul_precision=t.matmul_precision, **extra)

    def trainer_kwargs(self, *, progress: bool, stage: str | None = None) -> dict[str, Any]:
        """Trainer settings; a long stage (``progress``) shows Lightning's bar on a terminal and, writing to a log
        file, one plain line per epoch at most every ``progress_every_s`` seconds (elfs/infra/progress.py)."""
        from elfs.infra.progress import EpochProgress, is_terminal

        t = self.trainer
        show = bool(progress and self.progress)
        callbacks = [EpochProgress(stage, self.progress_every_s)] if show and stage and not is_terminal() else []
        return {
            "callbacks": callbacks,
            "accelerator": t.accelerator,
            "devices": t.devices,
            "strategy": self._strategy(),
            "num_nodes": t.num_nodes,
            "precision": t.precision,
            "deterministic": t.deterministic,
            "benchmark": t.benchmark,
            "log_every_n_steps": 10,
            # Lightning's bar redraws per step: only on a terminal, never into a log file
            "enable_progress_bar": bool(show and t.enable_progress_bar and is_terminal()),
            **self._batchnorm_sync(),
        }

    def kmeans_backend(self) -> str:
        """Where k-means runs (method/kmeans.py): torch on the GPU when the trainer may use one, else scikit-learn."""
        from elfs.method.kmeans import kmeans_backend

        return kmeans_backend(self.trainer.accelerator)

    def _strategy(self) -> str:
        """Lightning's "ddp" joins the ranks of an open session (elfs/launch); on one process, no DDP at all
        (Lightning's would open a 1-process group and set launch variables that outlive the run)."""
        t = self.trainer.strategy
        if distributed.world_size() > 1:
            return "ddp" if t == "auto" else t
        return "auto" if t.startswith("ddp") else t

    def _batchnorm_sync(self) -> dict[str, Any]:
        """Under DDP with trainer.sync_batchnorm: torch's SyncBatchNorm on GPUs, GlobalBatchNorm elsewhere (torch's
        refuses CPU tensors); either way the batch statistics are the global batch's."""
        if distributed.world_size() == 1 or not self.trainer.sync_batchnorm:
            return {}
        if distributed.device_type() == "cuda":
            return {"sync_batchnorm": True}
        from elfs.models.global_batchnorm import GlobalBatchNormSync

        return {"plugins": [GlobalBatchNormSync()]}

    def timed(self, stage: str, art: Artifact) -> Artifact:
        """Add a computed artifact's seconds to the run's per-stage timings (a cache hit adds nothing); after a
        computed stage, what it took is freed before the next starts (:func:`release_memory`)."""
        self.timings[stage] = self.timings.get(stage, 0.0) + (0.0 if art.cached else art.seconds)
        if not art.cached:
            release_memory()
        return art


def release_memory() -> None:
    """Free what a finished stage left behind: its cyclic garbage (a Trainer and its LightningModule hold each
    other, and the module the stage's data), then glibc's free heap back to the system (malloc_trim), so the next
    stage's peak is not stacked on memory the allocator kept."""
    from elfs.infra.heap import trim_heap

    gc.collect()
    trim_heap()
