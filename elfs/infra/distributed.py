"""Rank primitives for multi-process runs (``trainer=ddp``): rank, world size, barrier, broadcast, gather.

The lowest layer: it imports no other elfs module, so the cache, the trainings and preflight can use it without
reaching the program above them. The session that opens the process group and starts the ranks is elfs/launch/.
Outside a session every helper here is a no-op.
"""

from __future__ import annotations

import os
from typing import Any

#: strategies that start a process per fit(); the pipeline's ranks live for the whole run instead
SPAWNING_STRATEGIES = ("ddp_spawn", "ddp_fork", "ddp_notebook")

_fabric: Any = None  # the open session's lightning.Fabric (barrier / broadcast on the right device), else None


def use_fabric(fabric: Any) -> None:
    """Route the collectives through the open session's ``fabric`` (None when the session closes): elfs/launch."""
    global _fabric
    _fabric = fabric


def on_cuda(accelerator: str) -> bool:
    """Whether a Trainer with this accelerator ("auto", "gpu", "cuda", "cpu") trains on CUDA devices here."""
    import torch

    return str(accelerator) in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def planned_processes(devices: Any, accelerator: str = "auto", num_nodes: int = 1) -> int:
    """Processes a Trainer with these settings trains on (devices x nodes), known before it starts: an int or a
    list of devices; "auto" / -1 count the visible accelerators (CUDA devices, else 1 CPU process)."""
    import torch

    if isinstance(devices, (list, tuple)):
        n = len(devices)
    elif isinstance(devices, str) and devices.isdigit():
        n = int(devices)
    elif isinstance(devices, int) and not isinstance(devices, bool) and devices > 0:
        n = devices
    else:  # "auto" / -1
        n = torch.cuda.device_count() if on_cuda(accelerator) else 1
    return max(1, n) * int(num_nodes or 1)


def is_active() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if is_active() else 0


def world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if is_active() else 1


def is_zero() -> bool:
    """Whether this process writes outputs (rank 0, or the only process)."""
    return rank() == 0


def device_type() -> str:
    """The device type of the open session's ranks ("cuda", "cpu"), "cpu" outside a session."""
    return _fabric.device.type if _fabric is not None else "cpu"


def barrier() -> None:
    if not is_active():
        return
    if _fabric is not None:
        _fabric.barrier()
    else:
        import torch.distributed as dist

        dist.barrier()


def from_zero(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (a small picklable value: a decision, a hash)."""
    if not is_active():
        return obj
    if _fabric is not None:
        return _fabric.broadcast(obj, src=0)
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_to_zero(obj: Any) -> list[Any]:
    """Every rank's ``obj`` on rank 0, in rank order (a picklable value); the other ranks get ``[obj]``."""
    if not is_active():
        return [obj]
    import torch.distributed as dist

    out: list[Any] | None = [None] * world_size() if is_zero() else None
    dist.gather_object(obj, out, dst=0)
    return out if out is not None else [obj]


def check_same(value: str, what: str) -> None:
    """Raise on every rank when the ranks hold different ``value`` s (e.g. the hash of a coreset): training two
    ranks on two different subsets would silently average unrelated gradients."""
    if not is_active():
        return
    import torch.distributed as dist

    values: list[Any] = [None] * world_size()
    dist.all_gather_object(values, value)
    if len(set(values)) > 1:
        raise RuntimeError(f"DDP ranks disagree on {what}: {values} (rank order); stopping before training on them")


def launched_externally() -> bool:
    """Whether a cluster launcher (srun / submitit, torchrun, or our own session) started this process as a rank."""
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    return "LOCAL_RANK" in os.environ or SLURMEnvironment.detect() or TorchElasticEnvironment.detect()
