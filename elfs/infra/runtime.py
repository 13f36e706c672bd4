"""How a training runs, apart from what it learns: the Lightning Trainer settings, data-loader workers, logger and
checkpoints, and the one place the Trainer defaults are merged (:func:`build_trainer`).

Both trainings (TEMI in elfs/cluster, the classifier in elfs/training/classifier.py) build their Trainer here. This
module imports only lightning, torch and elfs.infra.distributed, so experiments/gpu_check.py keeps running on a bare
box;
lightning only when a Trainer is built, so importing it (and a Runtime) is cheap.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from elfs.infra.distributed import on_cuda, planned_processes

if TYPE_CHECKING:
    import lightning as L


@dataclass(frozen=True)
class Runtime:
    """How a training runs, apart from what it learns: Trainer settings, data-loader workers, logger, checkpoints."""

    #: Lightning Trainer keywords (accelerator, devices, strategy, precision, callbacks, ...) over TRAINER_DEFAULTS
    trainer_kwargs: Mapping[str, Any] = field(default_factory=dict)
    #: DataLoader worker processes (the classifier's training and test loaders)
    num_workers: int = 0
    #: a Lightning logger, or None = no logger
    logger: Any = None
    #: epoch checkpoints here, resumed from when present (classifier only)
    checkpoint_dir: str | None = None
    #: torch.set_float32_matmul_precision before the Trainer is built (a worker process starts with "highest")
    matmul_precision: str = "highest"


#: ``Runtime()``: the training functions' default (a module-level instance, as a frozen default argument)
DEFAULT_RUNTIME = Runtime()

#: the one set of Trainer defaults both trainings start from (a caller's trainer_kwargs override any of them).
#: ``deterministic=True`` is the classifier's; TEMI keeps its ``"warn"`` as a per-caller default (build_trainer's
#: ``defaults``), so on both a caller's trainer_kwargs still decide.
TRAINER_DEFAULTS: dict[str, Any] = dict(
    accelerator="auto",
    devices=1,
    enable_checkpointing=False,
    enable_model_summary=False,
    enable_progress_bar=False,
    deterministic=True,
)


def trainer_settings(
    runtime: Runtime,
    *,
    callbacks: Iterable[L.Callback] = (),
    defaults: Mapping[str, Any] | None = None,
    **fixed: Any,
) -> dict[str, Any]:
    """The keywords :func:`build_trainer` gives ``lightning.Trainer`` (see there for the order)."""
    kwargs: dict[str, Any] = dict(TRAINER_DEFAULTS)
    kwargs["logger"] = runtime.logger if runtime.logger is not None else False
    kwargs.update(defaults or {})
    kwargs.update(runtime.trainer_kwargs or {})
    kwargs.update(fixed)
    kwargs["callbacks"] = list(kwargs.get("callbacks") or []) + list(callbacks)
    return kwargs


#: Lightning's warning wherever srun exists but did not start this process (a regular expression)
SRUN_HINT = r".*The `srun` command is available on your system but is not used"


def build_trainer(
    runtime: Runtime,
    *,
    callbacks: Iterable[L.Callback] = (),
    defaults: Mapping[str, Any] | None = None,
    **fixed: Any,
) -> L.Trainer:
    """The one Trainer-defaults merge: TRAINER_DEFAULTS (with ``logger`` = runtime.logger or False), then the
    caller's ``defaults`` (settings a caller's trainer_kwargs may still override: TEMI's deterministic="warn", the
    classifier's log_every_n_steps), then runtime.trainer_kwargs, then the caller's ``fixed`` settings (run length,
    use_distributed_sampler, ...), which nothing overrides; ``callbacks`` are appended to any in trainer_kwargs."""
    import warnings

    import lightning as L
    import torch

    # elfs runs single-process Trainers on purpose (also in spawned workers and started ranks), so Lightning's hint
    # to prepend srun, printed wherever srun exists (every cluster login node), is noise here
    warnings.filterwarnings("ignore", message=SRUN_HINT)
    torch.set_float32_matmul_precision(runtime.matmul_precision)
    kwargs = trainer_settings(runtime, callbacks=callbacks, defaults=defaults, **fixed)
    kwargs["strategy"] = ddp_strategy(kwargs)
    trainer = L.Trainer(**kwargs)
    local_sigterm_check(trainer)
    return trainer


def batchnorm_synced(kwargs: Mapping[str, Any]) -> bool:
    """Whether BatchNorm uses the global batch's statistics under these Trainer settings: Lightning's
    sync_batchnorm (torch's SyncBatchNorm) or elfs's GlobalBatchNormSync plugin."""
    if kwargs.get("sync_batchnorm"):
        return True
    plugins = kwargs.get("plugins") or []
    return any(type(p).__name__ == "GlobalBatchNormSync" for p in (plugins if isinstance(plugins, list) else [plugins]))


def ddp_strategy(kwargs: Mapping[str, Any]) -> Any:
    """``strategy="ddp"`` as a DDPStrategy that does not sync the module buffers before every forward when
    BatchNorm is synced (its running statistics come from the same global batch on every rank, so they agree
    without DDP's per-step all-reduce and broadcast); any other strategy as given."""
    strategy = kwargs.get("strategy", "auto")
    if strategy != "ddp" or not batchnorm_synced(kwargs):
        return strategy
    from lightning.pytorch.strategies import DDPStrategy

    return DDPStrategy(forward_sync_buffers=False)


def local_sigterm_check(trainer: L.Trainer) -> None:
    """Lightning 2.6 broadcasts a SIGTERM flag from rank 0 and reads it back on every training step under DDP (a
    collective and a host sync per step). Here a rank checks its own flag instead: a scheduler's SIGTERM reaches
    every task itself, and elfs's launcher stops the other ranks when one ends (elfs/launch). Left alone in a
    Lightning without that hook."""
    loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
    if loop is None or not hasattr(loop, "_broadcast_sigterm_tensor"):
        return
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    def check() -> None:
        if getattr(trainer, "received_sigterm", False):
            raise SIGTERMException()

    loop._broadcast_sigterm_tensor = check


def native_bf16(accelerator: str) -> bool:
    """Whether the device a training on ``accelerator`` gets computes bf16 natively: a CUDA GPU with bf16 (Ampere
    and later), or a CPU with AMX or AVX512-BF16 (oneDNN's bf16 kernels; elsewhere bf16 is emulated, and slower
    than fp32)."""
    import torch

    if on_cuda(accelerator):
        return bool(torch.cuda.is_bf16_supported())
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # private: absent in some builds
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def resolve_precision(precision: str, accelerator: str) -> str:
    """trainer.precision=auto: "bf16-mixed" where the device computes bf16 natively (:func:`native_bf16`), else
    "32-true"; any other value as given. The resolved value is what the cache keys and the results record."""
    if str(precision) != "auto":
        return str(precision)
    return "bf16-mixed" if native_bf16(accelerator) else "32-true"


def world_size_of(trainer_kwargs: Mapping[str, Any]) -> int:
    """Processes a Trainer with these settings (over TRAINER_DEFAULTS) trains on (distributed.planned_processes)."""
    kw = {**TRAINER_DEFAULTS, **trainer_kwargs}
    return planned_processes(kw.get("devices", 1), kw.get("accelerator", "auto"), kw.get("num_nodes", 1))


__all__ = [
    "DEFAULT_RUNTIME",
    "TRAINER_DEFAULTS",
    "Runtime",
    "batchnorm_synced",
    "build_trainer",
    "ddp_strategy",
    "local_sigterm_check",
    "native_bf16",
    "resolve_precision",
    "trainer_settings",
    "world_size_of",
]
